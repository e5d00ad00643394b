"""Writing files so that a reader never sees half of one: write a temporary file beside the
target, then rename it over the target (atomic on POSIX)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(descriptor)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def jsonl_line(record: dict[str, Any]) -> str:
    """One record as a JSON line, as every JSONL file here writes it (sorted keys, ``str()`` for
    what JSON lacks)."""
    return json.dumps(record, default=str, sort_keys=True) + "\n"


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line (audit logs); a single write of a short line is atomic enough."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(jsonl_line(record))


class AppendLog:
    """A JSONL file kept open in append mode: one ``write()`` per line (``O_APPEND``, so lines of
    several processes do not interleave), instead of mkdir + open + close per line. Reopened when
    the path no longer names the open file (rotated or removed). Thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        data = jsonl_line(record).encode("utf-8")
        with self._lock:
            fd = self._open()
            while data:
                data = data[os.write(fd, data):]

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _open(self) -> int:
        try:
            status = os.stat(self.path)
            identity: tuple[int, int] | None = (status.st_dev, status.st_ino)
        except FileNotFoundError:
            identity = None
        if self._fd is not None and identity == self._identity:
            return self._fd
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        status = os.fstat(self._fd)
        self._identity = (status.st_dev, status.st_ino)
        return self._fd


def unreadable(path: Path, error: Exception) -> str:
    """Why a file that should be a checkpoint could not be loaded, in one line for a CLI error:
    torch's message for a foreign file runs to six lines of advice about ``weights_only`` that
    does not apply (loading it unsafely is never the fix here), pickle's for an empty file is
    ``EOFError('Ran out of input')`` or nothing at all."""
    if path.is_file() and path.stat().st_size == 0:
        return "the file is empty"
    text = str(error).strip()
    if "weights_only" in text or "Unpickler" in text:
        return "not a file torch.save wrote with tensors and plain values"
    return text.splitlines()[0][:200] if text else type(error).__name__
