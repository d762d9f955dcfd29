"""The on-disk journal: log batches that could not reach PostgreSQL yet.

One file per batch, ``<time_ns>-<batch_id>.journal``, holding the batch id and its rows as
JSON. Files are written to a temporary name, fsynced, then renamed, so a reader never sees
half a batch. A replayer holds an exclusive ``flock`` on the file while it writes the batch
and deletes it after the commit; the batch id written in the same transaction
(``api_log_batches``) makes a replay of an already-committed batch a no-op, so several
processes sharing a data directory, or a crash between commit and delete, never double a row.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from gateway.capture.record import row_from_json, row_to_json

SUFFIX = ".journal"


class Journal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def ensure(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def write(self, batch_id: uuid.UUID, rows: Sequence[tuple[Any, ...]]) -> Path:
        """Durably store one batch (blocking I/O: call from an executor on the hot path)."""
        self.ensure()
        name = f"{os.getpid()}-{batch_id}"
        final = self.directory / f"{_now_ns():020d}-{batch_id}{SUFFIX}"
        tmp = self.directory / f".{name}.tmp"
        payload = orjson.dumps({"batch_id": str(batch_id), "rows": [row_to_json(r) for r in rows]})
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
        _fsync_dir(self.directory)
        return final

    def pending(self) -> list[Path]:
        if not self.directory.exists():
            return []
        return sorted(p for p in self.directory.iterdir() if p.name.endswith(SUFFIX))

    def size_bytes(self) -> int:
        total = 0
        for p in self.pending():
            with contextlib.suppress(FileNotFoundError):
                total += p.stat().st_size
        return total

    @contextlib.contextmanager
    def claim(self, path: Path) -> Iterator[tuple[uuid.UUID, list[tuple[Any, ...]]] | None]:
        """Lock and read one batch file; yields None if another process holds it or it is gone.

        The caller deletes the file (``remove``) after a successful write, inside the block.
        """
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
                doc = orjson.loads(fh.read())
            rows = [row_from_json(r) for r in doc["rows"]]
            yield uuid.UUID(doc["batch_id"]), rows
        finally:
            os.close(fd)

    def remove(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def quarantine(self, path: Path) -> Path:
        """Move an unreadable file aside so it stops blocking replay (kept for a human)."""
        bad = self.directory / "rejected"
        bad.mkdir(exist_ok=True)
        target = bad / path.name
        path.rename(target)
        return target


def _now_ns() -> int:
    import time

    return time.time_ns()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
