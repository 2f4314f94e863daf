"""Language-model answers cached on disk by a hash of (model, prompt, mode, settings), so that evaluating
the same requests again costs no model call. One small JSON file per answer, written atomically."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

SCHEMA = 1   # bump when what is stored for a key changes


def answer_key(model_id: str, mode: str, payload) -> str:
    text = json.dumps({"schema": SCHEMA, "model": model_id, "mode": mode, "payload": payload}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class AnswerCache:
    """A folder of answers; `folder=None` caches nothing."""

    def __init__(self, folder: str | Path | None):
        self.folder = None if folder is None else Path(folder)
        self.hits = self.misses = 0

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str):
        if self.folder is not None and self._path(key).is_file():
            try:
                value = json.loads(self._path(key).read_text())
            except (OSError, ValueError):   # a torn file from a killed writer: ask the model again
                value = None
            if value is not None:
                self.hits += 1
                return value
        self.misses += 1
        return None

    def put(self, key: str, value) -> None:
        if self.folder is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump(value, f)
        os.replace(tmp, path)
