"""Group commit: many small writes from concurrent requests share one transaction and one durable commit.

An acknowledged erasure must be committed (fsync'd) before the answer goes out, and one fsync per request
caps a ledger at the disk's sync rate, whatever the number of clients. Here request threads hand their write
to one committer thread, which runs every write waiting at that moment in one `Ledger.writing()` transaction,
each inside its own savepoint (a failing write is rolled back alone and raises in its own caller), commits
once, and only then answers each caller. Nobody waits for a batch to fill: a write that arrives while a commit
is running simply goes into the next one."""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Callable, Optional, TypeVar

from sqlalchemy.orm import Session

T = TypeVar("T")
_STOP = object()


class GroupCommit:
    def __init__(self, writing: Callable, max_batch: int = 256):
        """`writing` is the ledger's write-transaction context manager (`Ledger.writing`)."""
        self._writing, self.max_batch = writing, max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._start_lock = threading.Lock()
        self.commits = 0          # how many transactions were committed (a batch each)

    def run(self, write: Callable[[Session], T]) -> T:
        """Run `write(session)` in a shared transaction and return its result once that transaction is
        committed; an exception raised by `write`, or by the commit, is raised here."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("a group-committed write may not start another one (it would wait for itself)")
        future: Future = Future()
        self._ensure_started()
        self._queue.put((write, future))
        return future.result()

    def close(self) -> None:
        with self._start_lock:
            if self._thread is not None:
                self._queue.put(_STOP)
                self._thread.join()
                self._thread = None

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="ledger-group-commit", daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = [first], False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list) -> None:
        outcomes: list = []
        try:
            with self._writing() as session:
                for write, _ in batch:
                    try:
                        with session.begin_nested():
                            outcomes.append((True, write(session)))
                    except Exception as err:   # this write alone is rolled back (to its savepoint)
                        outcomes.append((False, err))
            self.commits += 1
        except BaseException as err:   # the commit failed: nothing of the batch is durable
            for _, future in batch:
                future.set_exception(err)
            if not isinstance(err, Exception):
                raise
            return
        for (ok, value), (_, future) in zip(outcomes, batch):
            future.set_result(value) if ok else future.set_exception(value)
