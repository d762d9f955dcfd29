"""The write-ahead log: every answered call's api_logs row on disk before it waits in memory.

The log writer keeps rows in memory for up to a flush interval before COPY; a process that
dies without its shutdown (SIGKILL, OOM kill) would lose them. So the rows submitted during
one event-loop turn are appended to a segment file as one JSON line at the end of that turn
(one ``write`` system call per turn, no ``fsync``: the OS page cache survives the process,
not the machine) and only then handed to the writer's queue.

A segment is ``<time_ns>-<pid>.wal``; the process that writes it holds an exclusive
``flock`` on it until every row in it is *settled* (committed by COPY, or written to the
fsynced batch journal), then deletes it. A new segment is started every
``ROTATE_SECONDS`` or ``ROTATE_BYTES``. A segment nobody holds a lock on belongs to a
process that died: the next process to start replays it (rows are inserted with
``ON CONFLICT DO NOTHING`` on api_logs' primary key, so rows already committed are not
doubled) and deletes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.capture.record import row_from_json

log = logging.getLogger(__name__)

SUFFIX = ".wal"
ROTATE_SECONDS = 2.0  # a segment older than this is closed at the next write
ROTATE_BYTES = 32 * 1024 * 1024  # ... or one larger than this

Row = tuple[Any, ...]


@dataclass(eq=False, slots=True)
class Segment:
    """One open segment: its file, its lock, and how many of its rows are not settled."""

    path: Path
    fd: int
    opened: float
    size: int = 0
    outstanding: int = 0
    closed: bool = False  # no more rows will be appended


class Wal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._current: Segment | None = None
        self._live: list[Segment] = []  # segments with rows not yet settled (or current)
        self.failed = False  # the last append failed (disk full?); logged once

    # -- writing (the request path's end of turn) -----------------------------------------

    def append(self, rows: Sequence[Row]) -> Segment | None:
        """Write one line holding ``rows``; the segment they are in, or None when the write
        failed (the rows then live in memory only)."""
        try:
            seg = self._segment()
            data = orjson.dumps(rows) + b"\n"
            _write_all(seg.fd, data)
        except (OSError, TypeError, orjson.JSONEncodeError) as exc:
            if not self.failed:
                log.error("api_logs write-ahead log unusable (%s): rows wait in memory only", exc)
            self.failed = True
            return None
        self.failed = False
        seg.size += len(data)
        seg.outstanding += len(rows)
        return seg

    def settle(self, seg: Segment, n: int) -> None:
        """``n`` rows of ``seg`` are committed or journaled: delete it once none is left."""
        seg.outstanding -= n
        if seg.outstanding <= 0 and seg.closed:
            self._drop(seg)

    def sync(self) -> None:
        """fsync every segment still holding rows (at shutdown: survive a power cut too)."""
        for seg in self._live:
            with contextlib.suppress(OSError):
                os.fsync(seg.fd)

    def close(self) -> None:
        """Stop writing; segments with unsettled rows stay on disk for the next start."""
        for seg in list(self._live):
            seg.closed = True
            if seg.outstanding <= 0:
                self._drop(seg)
            else:
                with contextlib.suppress(OSError):
                    os.close(seg.fd)  # releases the lock: the next start replays it
        self._live.clear()
        self._current = None

    @property
    def unsettled(self) -> int:
        return sum(s.outstanding for s in self._live)

    def _segment(self) -> Segment:
        seg = self._current
        now = time.monotonic()
        if seg is not None and (now - seg.opened < ROTATE_SECONDS and seg.size < ROTATE_BYTES):
            return seg
        if seg is not None:
            seg.closed = True
            if seg.outstanding <= 0:
                self._drop(seg)
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}{SUFFIX}"
        # Locked under a name no replayer lists, then renamed: a process starting at this
        # moment never takes a live segment for a dead one.
        tmp = self.directory / f".{name}.new"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path = self.directory / name
        os.rename(tmp, path)
        seg = self._current = Segment(path, fd, now)
        self._live.append(seg)
        return seg

    def _drop(self, seg: Segment) -> None:
        with contextlib.suppress(FileNotFoundError):
            seg.path.unlink()
        with contextlib.suppress(OSError):
            os.close(seg.fd)
        with contextlib.suppress(ValueError):
            self._live.remove(seg)
        if self._current is seg:
            self._current = None

    # -- recovery (at start) ---------------------------------------------------------------

    def orphans(self) -> list[Path]:
        """Segments left by processes that are gone, oldest first."""
        if not self.directory.exists():
            return []
        own = {s.path for s in self._live}
        return sorted(
            p for p in self.directory.iterdir() if p.name.endswith(SUFFIX) and p not in own
        )

    @contextlib.contextmanager
    def claim(self, path: Path) -> Iterator[list[Row] | None]:
        """Lock and read an orphaned segment; None when its owner still runs (or it is
        gone). A torn last line (the process died inside a write) is skipped. The caller
        deletes it with ``remove`` inside the block once its rows are in the database."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            yield None
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            if os.fstat(fd).st_nlink == 0:  # replayed and deleted while we waited
                yield None
                return
            with os.fdopen(os.dup(fd), "rb") as fh:
                yield list(_read_rows(fh.read(), path))
        finally:
            os.close(fd)

    def remove(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _read_rows(data: bytes, path: Path) -> Iterator[Row]:
    for i, line in enumerate(data.split(b"\n")):
        if not line:
            continue
        try:
            batch = orjson.loads(line)
        except orjson.JSONDecodeError:  # a line cut by a crash (or a full disk) mid-write
            log.warning("api_logs write-ahead log %s: torn line %d skipped", path.name, i + 1)
            continue
        for values in batch:
            yield row_from_json(values)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
