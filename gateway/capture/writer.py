"""The batching COPY writer for api_logs, with its on-disk fallback.

The request path calls :meth:`LogWriter.submit`, which only appends to a bounded in-memory
queue (or, when that is full, to the journal). A background task flushes when
``batch_size`` rows are waiting or ``flush_interval`` has passed, one COPY per batch, in a
transaction that also records the batch id (see journal.py for why).

Before a row reaches the queue it is in the write-ahead log (wal.py): the rows of one
event-loop turn are appended to a segment file at the end of that turn, so a process killed
without its shutdown loses no answered call's row; a segment is deleted once its rows are
committed or journaled, and the segments of a dead process are replayed at the next start.

When PostgreSQL cannot be reached, batches go to the journal and a probe retries every
``retry_interval``; once it answers, the journal is replayed before new batches resume.
Replays (journal and write-ahead log) insert with ``ON CONFLICT DO NOTHING`` on the
primary key, so a row that reached the database by another way is never doubled.
A batch PostgreSQL refuses for its data (which record.py should make impossible) is
written row by row, a refused row with its bodies and headers replaced by a note, so one
bad row never costs the others. ``close`` drains the queue (to the database or journal)
within its deadline, whatever the database does (a hung server included).
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
from gateway.capture.wal import Segment, Wal
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
_COLUMN_LIST = ", ".join(COLUMNS)
# Replays go through a per-connection staging table so that rows already in api_logs (the
# batch committed before the crash, or replayed by another process) are skipped.
_REPLAY_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS api_logs_replay (LIKE api_logs) ON COMMIT DELETE ROWS"
)
_REPLAY_INSERT = (
    f"INSERT INTO api_logs ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM api_logs_replay "
    "ON CONFLICT DO NOTHING"
)
Runs = list[tuple[Segment | None, int]]  # rows of a batch per write-ahead log segment


class LogWriter:
    def __init__(
        self,
        pool: asyncpg.Pool,
        journal_dir: Path,
        *,
        wal_dir: Path | None = None,
        wal: bool = True,
        batch_size: int = 1000,
        flush_interval: float = 0.5,
        queue_max: int = 100_000,
        retry_interval: float = 2.0,
    ) -> None:
        self._pool = pool
        self.journal = Journal(journal_dir)
        self.wal = Wal(wal_dir if wal_dir is not None else journal_dir / "wal")
        self.wal_enabled = wal  # GATEWAY_LOG_WAL (orphaned segments are replayed either way)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.queue_max = queue_max
        self.retry_interval = retry_interval
        self._queue: collections.deque[Row] = collections.deque()
        # Rows submitted during the current event-loop turn (written to the WAL at its end),
        # and the queue's rows per WAL segment in queue order ([segment, count] runs).
        self._turn: list[Row] = []
        # Answers held until the rows submitted before them are in the WAL (send_after_rows).
        self._held: list[tuple[asyncio.WriteTransport, bytes]] = []
        self._runs: collections.deque[list[Any]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None  # set while rows go to the WAL
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
        """Queue one row; never blocks on the database, never raises. The row is written
        to the write-ahead log at the end of this event-loop turn, then queued."""
        if not self._turn:
            loop = self._loop
            if loop is None:  # no write-ahead log (not started, disabled): to the queue
                self._admit([row])
                return
            loop.call_soon(self._end_turn)
        self._turn.append(row)

    def send_after_rows(self, transport: asyncio.WriteTransport, data: bytes) -> None:
        """Write ``data`` (an answer) once the rows submitted so far are in the write-ahead
        log: right after the turn's WAL line, or at once when no row waits. An answer never
        leaves before its row is on disk (page cache), so a SIGKILL cannot lose the row of a
        call its caller saw answered, however long a busy turn runs."""
        if self._turn:
            self._held.append((transport, data))
        else:
            transport.write(data)

    def flush_turn(self) -> None:
        """The rows submitted so far to the write-ahead log now: before an answer that
        cannot wait for the end of the turn is written (refusals, streamed answers, an
        answer after which the connection closes)."""
        if self._turn:
            self._end_turn()

    def _end_turn(self) -> None:
        """The turn's rows: one write-ahead log line, then the queue; then the answers
        that waited for them."""
        rows, self._turn = self._turn, []
        if rows:
            self._admit(rows)
        held = self._held
        if held:
            self._held = []
            for transport, data in held:
                if not transport.is_closing():
                    transport.write(data)

    def _admit(self, rows: list[Row]) -> None:
        seg = self.wal.append(rows) if self._loop is not None else None
        room = self.queue_max - len(self._queue) if not self._stopping else 0
        queued = rows if room >= len(rows) else rows[: max(room, 0)]
        if queued:
            self._queue.extend(queued)
            last = self._runs[-1] if self._runs else None
            if last is not None and last[0] is seg:
                last[1] += len(queued)
            else:
                self._runs.append([seg, len(queued)])
            if len(self._queue) >= self.batch_size:
                self._wake.set()
        if len(queued) < len(rows):
            self._overflow(rows[len(queued) :], seg)

    def _overflow(self, rows: list[Row], seg: Segment | None) -> None:
        """Memory is full (database slow or down) or the writer is stopping: to disk."""
        try:
            self.journal.write(uuid.uuid4(), rows)
            self._count_journaled(len(rows))
        except OSError as exc:
            if seg is None:  # not in the write-ahead log either
                self.rows_dropped += len(rows)
                metrics.LOG_ROWS_DROPPED.inc(len(rows))
            log.error("api_logs journal unusable with the queue full: %s", exc)
            return
        if seg is not None:
            self.wal.settle(seg, len(rows))

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
        if self.wal_enabled:
            self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="api-logs-writer")

    async def close(self, timeout: float) -> None:
        """Stop accepting rows into memory and drain the queue to the database within
        ``timeout`` seconds; what is left then (a hung or unreachable database) goes to the
        journal. Rows of a batch cut off mid-COPY stay in the write-ahead log, replayed
        (without doubles) at the next start."""
        self._end_turn()
        self.wal.sync()  # from here on the rows survive a power cut too
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await finish_within(self._task, timeout)
        while self._queue:  # deadline hit: to disk, not to /dev/null
            rows, runs = self._take()
            if await self._to_journal(uuid.uuid4(), rows):
                self._settle(runs)
        self.wal.close()
        self._loop = None  # rows still arriving go straight to the journal

    async def _run(self) -> None:
        await self._replay_all()
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
            rows, runs = self._take()
            if self._db_up:
                safe = await self._write(uuid.uuid4(), rows)
            else:
                safe = await self._to_journal(uuid.uuid4(), rows)
            if safe:
                self._settle(runs)

    def _take(self) -> tuple[list[Row], Runs]:
        """The next batch, and how many of its rows each WAL segment holds."""
        n = min(self.batch_size, len(self._queue))
        rows = [self._queue.popleft() for _ in range(n)]
        runs: Runs = []
        while n:
            run = self._runs[0]
            k = min(n, run[1])
            runs.append((run[0], k))
            run[1] -= k
            n -= k
            if not run[1]:
                self._runs.popleft()
        return rows, runs

    def _settle(self, runs: Runs) -> None:
        for seg, n in runs:
            if seg is not None:
                self.wal.settle(seg, n)

    # -- writing -----------------------------------------------------------------------

    async def _write(self, batch_id: uuid.UUID, rows: Sequence[Row]) -> bool:
        """COPY one batch; on an unreachable database journal it. True when its rows are
        safe: committed, salvaged or journaled."""
        try:
            with metrics.LOG_FLUSH_DURATION.time():
                await self._copy(batch_id, rows)
        except UNAVAILABLE as exc:
            self._mark_down(exc)
            return await self._to_journal(batch_id, rows)
        except DATA_ERRORS as exc:
            log.warning(
                "api_logs batch refused (%s); writing its rows one by one", type(exc).__name__
            )
            await self._salvage(batch_id, rows)
            return True
        except Exception as exc:  # a bug must not cost rows: keep them on disk for a replay
            log.exception("api_logs: unexpected error writing a batch; journaling it")
            self._mark_down(exc)
            return await self._to_journal(batch_id, rows)
        return True

    async def _copy(self, batch_id: uuid.UUID, rows: Sequence[Row], replay: bool = False) -> None:
        """One transaction: the batch id, then the rows by COPY. A ``replay`` skips rows
        already in api_logs (by primary key) instead of relying on the batch id alone."""
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
                if fresh and replay:
                    await conn.execute(_REPLAY_TABLE)
                    await conn.copy_records_to_table(
                        "api_logs_replay", records=rows, columns=COLUMNS
                    )
                    status = await conn.execute(_REPLAY_INSERT)
                    written = int(status.rsplit(" ", 1)[-1])
                elif fresh:
                    await conn.copy_records_to_table("api_logs", records=rows, columns=COLUMNS)
                    written = len(rows)
        if fresh:
            self.rows_written += written
            metrics.LOG_ROWS_WRITTEN.inc(written)

    async def _salvage(
        self, batch_id: uuid.UUID, rows: Sequence[Row], replay: bool = False
    ) -> None:
        for i, row in enumerate(rows):
            sub_id = uuid.uuid5(batch_id, str(i))  # stable: a replay finds the same ids
            for candidate in (row, _stripped(row)):
                try:
                    await self._copy(sub_id, [candidate], replay)
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

    async def _to_journal(self, batch_id: uuid.UUID, rows: Sequence[Row]) -> bool:
        """Write a batch to the journal (fsynced); True when it is there."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.journal.write, batch_id, rows)
        except OSError as exc:
            self.rows_dropped += len(rows)
            metrics.LOG_ROWS_DROPPED.inc(len(rows))
            log.error("%d api_logs rows dropped: journal write failed: %s", len(rows), exc)
            return False
        self._count_journaled(len(rows))
        return True

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
        await self._replay_all()

    async def _replay_all(self) -> None:
        """Journaled batches, then the write-ahead logs of processes that died."""
        if self.journal.pending():
            await self._replay_journal()
        if self._db_up:
            await self._replay_wal()

    async def _replay_journal(self) -> None:
        for path in self.journal.pending():
            try:
                with self.journal.claim(path) as batch:
                    if batch is None:
                        continue
                    batch_id, rows = batch
                    if not await self._replay(batch_id, rows):
                        return
                    self.journal.remove(path)
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                target = self.journal.quarantine(path)
                log.error("api_logs journal file unreadable (%s); moved to %s", exc, target)
        metrics.LOG_JOURNAL_BYTES.set(self.journal.size_bytes())

    async def _replay_wal(self) -> None:
        """Rows of write-ahead log segments left by a process that died (SIGKILL, OOM):
        those not in api_logs yet are inserted, then the segment is deleted."""
        for path in self.wal.orphans():
            try:
                with self.wal.claim(path) as rows:
                    if rows is None:
                        continue
                    # Stable per file: a second replay of a half-done one is not skipped
                    # by its batch id (the batch id row commits with the rows).
                    batch_id = uuid.uuid5(uuid.NAMESPACE_URL, f"wal:{path.name}")
                    if rows and not await self._replay(batch_id, rows):
                        return
                    self.wal.remove(path)
                    log.info("api_logs: replayed write-ahead log %s: %d rows", path.name, len(rows))
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                log.error("api_logs write-ahead log %s unreadable (%s); left in place", path, exc)

    async def _replay(self, batch_id: uuid.UUID, rows: list[Row]) -> bool:
        """Insert rows that are not in api_logs yet; False when the database is down."""
        try:
            await self._copy(batch_id, rows, replay=True)
        except UNAVAILABLE as exc:
            self._mark_down(exc)
            return False
        except DATA_ERRORS:
            await self._salvage(batch_id, rows, replay=True)
        return True


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
