"""Safe writes of folders and files: what the CLI (and later the service) writes is complete or absent.

- `atomic_folder(path)`: the contents are written into one temporary sibling folder, marked complete, and
  renamed into place once. Replacing an existing folder takes two renames (old aside, new in); a process
  killed between them leaves a complete new folder that `recover` moves into place at the next start.
- `atomic_file(path)`: the same for one file (a single rename, atomic on POSIX).
- `exclusive(path)`: a non-blocking exclusive lock on a folder (held on a file in one lock folder of this
  machine, named by a hash of the path, so the folder itself can be replaced while it is locked and nothing
  is created beside it); a second writer fails at once and is told who holds it.
- `fault_point(name)`: kills the process with SIGKILL when RECUNLEARN_FAULT names this point, so that tests
  interrupt a real process exactly there; `pause_point(name)` holds it there until a file appears
  (RECUNLEARN_PAUSE=name=FILE), so that tests start a second process while the first holds a lock.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

FAULT_VARIABLE = "RECUNLEARN_FAULT"
PAUSE_VARIABLE = "RECUNLEARN_PAUSE"
PAUSE_LIMIT_SECONDS = 600.0
LOCKS_VARIABLE = "RECUNLEARN_LOCKS"     # the lock folder (default: recunlearn-locks in the temporary folder)
COMPLETE_MARK = ".complete"


class StorageError(OSError):
    """A path cannot be written safely: it is locked, exists, or is not ours to replace."""


def fault_point(name: str) -> None:
    """Die here, like `kill -9`, when RECUNLEARN_FAULT=name (fault injection for the crash tests)."""
    if os.environ.get(FAULT_VARIABLE) == name:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def pause_point(name: str) -> None:
    """Wait here until FILE exists (at most PAUSE_LIMIT_SECONDS) when RECUNLEARN_PAUSE=name=FILE."""
    point, _, file = os.environ.get(PAUSE_VARIABLE, "").partition("=")
    if point != name or not file:
        return
    deadline = time.monotonic() + PAUSE_LIMIT_SECONDS
    while not os.path.exists(file) and time.monotonic() < deadline:
        time.sleep(0.05)


def _sibling(path: Path, tag: str) -> Path:
    return path.parent / f".{path.name}.{tag}"


def _leftovers(path: Path) -> list[Path]:
    """Temporary and set-aside copies of `path` whose writer is dead (its pid is part of the name)."""
    found = sorted(path.parent.glob(f".{path.name}.tmp-*")) + sorted(path.parent.glob(f".{path.name}.old-*"))
    return [p for p in found if not _alive(p.name.removeprefix(f".{path.name}.").split("-")[1])]


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


# --- locks -------------------------------------------------------------------------------------------

def lock_file(path: str | Path) -> Path:
    """The file whose lock stands for `path`'s; it names the last holder ("pid N (action)")."""
    folder = Path(os.environ.get(LOCKS_VARIABLE) or Path(tempfile.gettempdir()) / "recunlearn-locks")
    return folder / f"{hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:32]}.lock"


@contextlib.contextmanager
def exclusive(path: str | Path, action: str = "writing") -> Iterator[None]:
    """Hold an exclusive lock on `path` (file or folder, existing or not) for the duration; fail at once if
    another process holds it. The kernel releases the lock when the holder dies, so no lock goes stale."""
    path = Path(path).resolve()
    lock = lock_file(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise StorageError(f"{path} is in use by {holder}; wait for it to finish (or stop it) and run "
                               "this command again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({action})".encode(), 0)
        pause_point(f"locked:{action}")
        yield
    finally:
        os.close(fd)   # closing releases the lock; the lock file stays, harmless and reused


# --- recovery ----------------------------------------------------------------------------------------

def recover(path: str | Path) -> list[str]:
    """Finish or clean up an interrupted write of `path`; returns what was done, one message each.

    A write commits at its rename. When a replacement died between its two renames (`path` missing, the old
    copy set aside), its complete new folder is moved into place, or else the old copy is restored; every
    other leftover (a write that died before its rename) is removed. Leftovers of a live process (a writer at
    work) are never touched."""
    path = Path(path)
    messages = []
    leftovers = _leftovers(path)
    old = [p for p in leftovers if p.name.startswith(f".{path.name}.old-")]
    if not path.exists() and old:
        complete = [p for p in leftovers if p.name.startswith(f".{path.name}.tmp-") and (p / COMPLETE_MARK).exists()]
        if complete:
            complete[-1].rename(path)
            (path / COMPLETE_MARK).unlink(missing_ok=True)
            messages.append(f"recovered {path}: completed an interrupted replacement")
        else:
            old[-1].rename(path)
            messages.append(f"recovered {path}: restored the previous version after an interrupted write")
    for p in _leftovers(path):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        messages.append(f"removed {p.name}, left by an interrupted write of {path}")
    return messages


def recover_unlocked(path: str | Path) -> list[str]:
    """`recover` if no other process holds the lock on `path` (a reader's best effort); else nothing."""
    path = Path(path)
    if not path.parent.is_dir() or not _leftovers(path):
        return []
    try:
        with exclusive(path, "recovering"):
            return recover(path)
    except StorageError:
        return []


# --- writes ------------------------------------------------------------------------------------------

def _fsync_tree(root: Path) -> None:
    for item in [*root.rglob("*"), root]:
        if item.is_file():
            with open(item, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_folder(path: str | Path, *, fault_prefix: str = "write") -> Iterator[Path]:
    """Yield an empty temporary folder; on normal exit it replaces `path` as a whole (on error it is removed
    and `path` is untouched). Callers decide beforehand whether replacing an existing `path` is allowed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, f"tmp-{os.getpid()}-{secrets.token_hex(4)}")
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        (tmp / COMPLETE_MARK).touch()
        fault_point(f"{fault_prefix}:before-rename")
        if path.exists():
            old = _sibling(path, f"old-{os.getpid()}-{secrets.token_hex(4)}")
            path.rename(old)
            fault_point(f"{fault_prefix}:between-renames")
            tmp.rename(path)
            fault_point(f"{fault_prefix}:before-cleanup")
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (path / COMPLETE_MARK).unlink(missing_ok=True)   # only leftovers need the mark


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling file path; on normal exit it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the suffix stays last: writers such as numpy's savez append their own when it is missing
    tmp = _sibling(path, f"tmp-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
