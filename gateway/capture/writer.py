"""The batching COPY writer for api_logs, with its on-disk fallback.

The request path calls :meth:`LogWriter.submit`, which only appends to a bounded in-memory
queue (or, when that is full, to the journal). A background task flushes when
``batch_size`` rows are waiting or ``flush_interval`` has passed, one COPY per batch, in a
transaction that also records the batch id (see journal.py for why).

When PostgreSQL cannot be reached, batches go to the journal and a probe retries every
``retry_interval``; once it answers, the journal is replayed before new batches resume.
A batch PostgreSQL refuses for its data (which record.py should make impossible) is
written row by row, a refused row with its bodies and headers replaced by a note, so one
bad row never costs the others. ``close`` drains the queue (to the database or journal).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, date
from pathlib import Path
from typing import Any

import asyncpg

from gateway import metrics
from gateway.capture import partitions
from gateway.capture.journal import Journal
from gateway.capture.record import COLUMNS, CREATED_AT_INDEX
from gateway.tasks import finish_within

log = logging.getLogger(__name__)

Row = tuple[Any, ...]

# Failures that mean "the database is not reachable right now": journal and retry later.
UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.TooManyConnectionsError,
)
# Failures caused by a row's content.
DATA_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
SALVAGE_COLUMNS = {
    COLUMNS.index(c): None for c in ("request_body", "response_body", "response_headers")
}
REQUEST_HEADERS_INDEX = COLUMNS.index("request_headers")
REQ_FORMAT_INDEX = COLUMNS.index("request_body_format")
RESP_FORMAT_INDEX = COLUMNS.index("response_body_format")
ERROR_MESSAGE_INDEX = COLUMNS.index("error_message")


class LogWriter:
    def __init__(
        self,
        pool: asyncpg.Pool,
        journal_dir: Path,
        *,
        batch_size: int = 1000,
        flush_interval: float = 0.5,
        queue_max: int = 100_000,
        retry_interval: float = 2.0,
    ) -> None:
        self._pool = pool
        self.journal = Journal(journal_dir)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.queue_max = queue_max
        self.retry_interval = retry_interval
        self._queue: collections.deque[Row] = collections.deque()
        self._wake = asyncio.Event()
        self._stopping = False
        self._db_up = True
        self._known_days: set[date] = set()
        self._next_probe = 0.0
        self._task: asyncio.Task[None] | None = None
        self.rows_written = 0
        self.rows_journaled = 0
        self.rows_dropped = 0

    # -- request path ---------------------------------------------------------------------

    def submit(self, row: Row) -> None:
        """Queue one row; never blocks on the database, never raises."""
        if len(self._queue) < self.queue_max and not self._stopping:
            self._queue.append(row)
            if len(self._queue) >= self.batch_size:
                self._wake.set()
            return
        # Memory is full (database slow or down): write straight to disk.
        try:
            self.journal.write(uuid.uuid4(), [row])
            self._count_journaled(1)
        except OSError as exc:
            self.rows_dropped += 1
            metrics.LOG_ROWS_DROPPED.inc()
            log.error("api_logs row dropped: queue full and journal unusable: %s", exc)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def database_up(self) -> bool:
        return self._db_up

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self.journal.ensure()
        metrics.LOG_JOURNAL_BYTES.set(self.journal.size_bytes())
        metrics.LOG_DB_UP.set(1)
        metrics.LOG_QUEUE_DEPTH.set_function(lambda: len(self._queue))
        self._task = asyncio.create_task(self._run(), name="api-logs-writer")

    async def close(self, timeout: float) -> None:
        """Stop accepting rows into memory, drain the queue, replay what is journaled."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await finish_within(self._task, timeout)
        # Whatever is still in memory (deadline hit) goes to disk, not to /dev/null.
        while self._queue:
            rows = self._take()
            await self._to_journal(uuid.uuid4(), rows)

    async def _run(self) -> None:
        if self.journal.pending():
            await self._replay_journal()
        loop = asyncio.get_running_loop()
        while True:
            if not self._db_up and not self._stopping and loop.time() >= self._next_probe:
                await self._probe()
            if not self._queue and self._stopping:
                return
            if len(self._queue) < self.batch_size and not self._stopping:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            if not self._queue:
                continue
            rows = self._take()
            if self._db_up:
                await self._write(uuid.uuid4(), rows)
            else:
                await self._to_journal(uuid.uuid4(), rows)

    def _take(self) -> list[Row]:
        n = min(self.batch_size, len(self._queue))
        rows = [self._queue.popleft() for _ in range(n)]
        return rows

    # -- writing -----------------------------------------------------------------------

    async def _write(self, batch_id: uuid.UUID, rows: Sequence[Row]) -> bool:
        """COPY one batch; on an unreachable database journal it. True if committed."""
        try:
            with metrics.LOG_FLUSH_DURATION.time():
                await self._copy(batch_id, rows)
        except UNAVAILABLE as exc:
            self._mark_down(exc)
            await self._to_journal(batch_id, rows)
            return False
        except DATA_ERRORS as exc:
            log.warning(
                "api_logs batch refused (%s); writing its rows one by one", type(exc).__name__
            )
            await self._salvage(batch_id, rows)
            return True
        except Exception as exc:  # a bug must not cost rows: keep them on disk for a replay
            log.exception("api_logs: unexpected error writing a batch; journaling it")
            self._mark_down(exc)
            await self._to_journal(batch_id, rows)
            return False
        return True

    async def _copy(self, batch_id: uuid.UUID, rows: Sequence[Row]) -> None:
        days = {r[CREATED_AT_INDEX].astimezone(UTC).date() for r in rows}
        async with self._pool.acquire() as conn:
            missing = days - self._known_days
            if missing:
                await partitions.ensure_partitions(conn, missing)
                self._known_days |= missing
            async with conn.transaction():
                fresh = await conn.fetchval(
                    "INSERT INTO api_log_batches (batch_id, row_count) VALUES ($1, $2) "
                    "ON CONFLICT DO NOTHING RETURNING true",
                    batch_id,
                    len(rows),
                )
                if fresh:
                    await conn.copy_records_to_table("api_logs", records=rows, columns=COLUMNS)
        if fresh:
            self.rows_written += len(rows)
            metrics.LOG_ROWS_WRITTEN.inc(len(rows))

    async def _salvage(self, batch_id: uuid.UUID, rows: Sequence[Row]) -> None:
        for i, row in enumerate(rows):
            sub_id = uuid.uuid5(batch_id, str(i))  # stable: a replay finds the same ids
            for candidate in (row, _stripped(row)):
                try:
                    await self._copy(sub_id, [candidate])
                except DATA_ERRORS as exc:
                    log.warning("api_logs row refused: %s", type(exc).__name__)
                    continue
                except UNAVAILABLE as exc:
                    self._mark_down(exc)
                    await self._to_journal(sub_id, [candidate])
                if candidate is not row:
                    metrics.LOG_ROWS_SALVAGED.inc()
                break
            else:
                self.rows_dropped += 1
                metrics.LOG_ROWS_DROPPED.inc()
                log.error("api_logs row dropped: refused by PostgreSQL even without bodies")

    async def _to_journal(self, batch_id: uuid.UUID, rows: Sequence[Row]) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.journal.write, batch_id, rows)
        except OSError as exc:
            self.rows_dropped += len(rows)
            metrics.LOG_ROWS_DROPPED.inc(len(rows))
            log.error("%d api_logs rows dropped: journal write failed: %s", len(rows), exc)
            return
        self._count_journaled(len(rows))

    def _count_journaled(self, n: int) -> None:
        self.rows_journaled += n
        metrics.LOG_ROWS_JOURNALED.inc(n)
        metrics.LOG_JOURNAL_BYTES.set(self.journal.size_bytes())

    def _mark_down(self, exc: BaseException) -> None:
        if self._db_up:
            log.error(
                "api_logs: database unreachable (%s: %s); journaling to %s",
                type(exc).__name__,
                exc,
                self.journal.directory,
            )
        self._db_up = False
        self._next_probe = asyncio.get_running_loop().time() + self.retry_interval
        metrics.LOG_DB_UP.set(0)

    async def _probe(self) -> None:
        """While down: try the database; on success replay the journal and resume COPY."""
        self._next_probe = asyncio.get_running_loop().time() + self.retry_interval
        try:
            async with self._pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
        except UNAVAILABLE:
            return
        log.info("api_logs: database reachable again; replaying the journal")
        self._db_up = True
        metrics.LOG_DB_UP.set(1)
        await self._replay_journal()

    async def _replay_journal(self) -> None:
        for path in self.journal.pending():
            try:
                with self.journal.claim(path) as batch:
                    if batch is None:
                        continue
                    batch_id, rows = batch
                    try:
                        await self._copy(batch_id, rows)
                    except UNAVAILABLE as exc:
                        self._mark_down(exc)
                        return
                    except DATA_ERRORS:
                        await self._salvage(batch_id, rows)
                    self.journal.remove(path)
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                target = self.journal.quarantine(path)
                log.error("api_logs journal file unreadable (%s); moved to %s", exc, target)
        metrics.LOG_JOURNAL_BYTES.set(self.journal.size_bytes())


def _stripped(row: Row) -> Row:
    """The row without bodies and headers, with a note saying why."""
    values = list(row)
    for idx in SALVAGE_COLUMNS:
        values[idx] = None
    values[REQUEST_HEADERS_INDEX] = []
    values[REQ_FORMAT_INDEX] = "omitted"
    values[RESP_FORMAT_INDEX] = "omitted"
    note = "capture: bodies and headers dropped because PostgreSQL refused them"
    values[ERROR_MESSAGE_INDEX] = (
        f"{values[ERROR_MESSAGE_INDEX]}; {note}" if values[ERROR_MESSAGE_INDEX] else note
    )
    return tuple(values)
