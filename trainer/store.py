"""Append-only JSON Lines stores (resumable: a torn last line is cut on open) and atomic file writes."""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

logger = logging.getLogger(__name__)


T = TypeVar("T", bound=BaseModel)


StrPath = str | os.PathLike[str]


class JsonlStore(Generic[T]):
    """Records of one pydantic type in a JSON Lines file, one per line, unique by ``key``.

    Each ``append`` writes whole lines under an exclusive ``flock``, then flushes and fsyncs, so a kill -9
    loses at most the call in flight. A torn last line (a write cut short) is truncated away on open and
    before each append. Keys already in the file, from any process, are skipped: rerunning a stage resumes it.

    Example: ``JsonlStore(path, StepLabel, key=lambda r: (r.problem_id, r.candidate_id, r.step_index))``.
    """

    def __init__(self, path: StrPath, model: type[T], key: Callable[[T], Hashable]) -> None:
        self.path = Path(path)
        self.model = model
        self.key = key
        self._keys: set[Hashable] = set()
        self._scanned = 0  # bytes of the file whose keys are in _keys; always just after a newline
        self._mutex = threading.Lock()
        if self.path.exists() and os.access(self.path, os.W_OK):
            with self._locked(fcntl.LOCK_EX) as fd:
                self._repair(fd)

    def keys(self) -> set[Hashable]:
        """The keys of every complete record in the file (cached; only new bytes are read)."""
        with self._mutex:
            if self.path.exists():
                with self._locked(fcntl.LOCK_SH) as fd:
                    self._refresh(fd)
            return set(self._keys)

    def read(self) -> Iterator[T]:
        """The complete records in file order, as of the call (a torn last line is not a record)."""
        if self.path.exists():
            for _, record in self._records(0, self.path.stat().st_size):
                yield record

    def append(self, records: Iterable[T]) -> int:
        """Append the records whose keys are not in the file yet (first one wins); return how many were written."""
        batch = list(records)  # produce them before taking the lock: producing may be slow
        for record in batch:
            if not isinstance(record, self.model):
                raise TypeError(f"{self.path}: expected {self.model.__name__}, got {type(record).__name__}")
        if not batch:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._mutex, self._locked(fcntl.LOCK_EX) as fd:
            self._repair(fd)
            self._refresh(fd)
            new: dict[Hashable, bytes] = {}
            for record in batch:
                key = self.key(record)
                if key not in self._keys and key not in new:
                    new[key] = record.model_dump_json().encode() + b"\n"
            if not new:
                return 0
            data = b"".join(new.values())
            start = os.fstat(fd).st_size
            try:
                _write_all(fd, data)
                os.fsync(fd)
            except BaseException:
                os.ftruncate(fd, start)  # never leave part of this call behind
                raise
            if start == 0:
                _fsync_dir(self.path.parent)
            self._keys.update(new)
            self._scanned = start + len(data)
        if len(new) < len(batch):
            logger.debug("%s: skipped %d record(s) whose keys were present", self.path, len(batch) - len(new))
        return len(new)

    @contextmanager
    def _locked(self, operation: int) -> Iterator[int]:
        write = operation == fcntl.LOCK_EX
        fd = os.open(self.path, (os.O_RDWR | os.O_CREAT | os.O_APPEND) if write else os.O_RDONLY, 0o644)
        try:
            fcntl.flock(fd, operation)
            yield fd
        finally:
            os.close(fd)  # releases the lock

    def _repair(self, fd: int) -> None:
        """Truncate a torn last line (no trailing newline), left by a writer killed mid-write."""
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        end = _after_last_newline(fd, size)
        os.ftruncate(fd, end)
        os.fsync(fd)
        logger.warning("%s: removed a torn last line (%d bytes at byte %d) left by an interrupted write",
                       self.path, size - end, end)

    def _refresh(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        if size < self._scanned:
            logger.warning("%s shrank behind this store's back; rereading its keys", self.path)
            self._keys.clear()
            self._scanned = 0
        for end, record in self._records(self._scanned, size):
            self._keys.add(self.key(record))
            self._scanned = end

    def _records(self, start: int, stop: int) -> Iterator[tuple[int, T]]:
        """(end offset, record) for each complete line in bytes [start, stop) of the file."""
        with self.path.open("rb") as fh:
            fh.seek(start)
            pos = start
            for line in fh:
                if not line.endswith(b"\n") or pos + len(line) > stop:
                    return
                pos += len(line)
                if line.strip():
                    yield pos, self._parse(line, pos - len(line))

    def _parse(self, line: bytes, offset: int) -> T:
        try:
            return self.model.model_validate_json(line)
        except ValidationError as exc:
            raise ValueError(f"{self.path}: invalid {self.model.__name__} record at byte {offset}: {exc}") from exc


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _after_last_newline(fd: int, size: int) -> int:
    pos = size
    while pos > 0:
        start = max(0, pos - (1 << 16))
        i = os.pread(fd, pos - start, start).rfind(b"\n")
        if i >= 0:
            return start + i + 1
        pos = start
    return 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: StrPath, text: str) -> None:
    """Replace ``path`` with ``text`` atomically: a reader sees the old file or the new one, never a mix."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
