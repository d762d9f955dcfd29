"""Background work of the sync package: outcomes of proxied calls written in batches (never
on the request path), and the periodic statistics query behind the sync metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from datetime import UTC, datetime

import asyncpg

from gateway import metrics
from gateway.sync import store
from gateway.sync.model import Outcome, Report, Status
from gateway.tasks import finish_within

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.5  # seconds a traffic report may wait before its batch is written
BATCH_SIZE = 2000  # reports per batch (one transaction per tenant in it)
QUEUE_MAX = 100_000  # reports held in memory while PostgreSQL is away; beyond: dropped
RETRY_INTERVAL = 2.0  # seconds between attempts while PostgreSQL is unreachable
UNAVAILABLE = (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError)
NOT_IN_SYNC = frozenset(s.value for s in Status if s is not Status.SUCCEEDED)


class SyncRecorder:
    """Queues sync reports made by the proxy and writes them in batches."""

    def __init__(self, pool: asyncpg.Pool, flush_interval: float = FLUSH_INTERVAL) -> None:
        self._pool = pool
        self._flush_interval = flush_interval
        self._queue: deque[tuple[uuid.UUID, Report]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def submit(self, tenant_id: uuid.UUID, report: Report) -> None:
        """Called on the request path: O(1), never waits, never raises."""
        if len(self._queue) >= QUEUE_MAX:
            metrics.SYNC_REPORTS_DROPPED.inc()
            return
        self._queue.append((tenant_id, report))
        if len(self._queue) >= BATCH_SIZE:
            self._wake.set()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sync-recorder")

    async def close(self, timeout: float) -> None:
        """Write what is queued (within ``timeout``), then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is None:
            return
        if not await finish_within(self._task, timeout) and self._queue:
            log.error("sync recorder: %d reports not written at shutdown", len(self._queue))

    async def _run(self) -> None:
        while True:
            if not self._queue and self._stopping:
                return
            if len(self._queue) < BATCH_SIZE and not self._stopping:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._flush_interval)
            if self._queue and not await self.flush_once():
                await asyncio.sleep(RETRY_INTERVAL)

    async def flush_once(self) -> bool:
        """Write one batch; False (batch kept for later) when PostgreSQL is unreachable."""
        batch = [self._queue.popleft() for _ in range(min(BATCH_SIZE, len(self._queue)))]
        by_tenant: dict[uuid.UUID, list[Report]] = {}
        for tenant_id, report in batch:
            by_tenant.setdefault(tenant_id, []).append(report)
        done: set[uuid.UUID] = set()
        try:
            async with self._pool.acquire() as conn:
                for tenant_id, reports in by_tenant.items():
                    await self._write(conn, tenant_id, reports)
                    done.add(tenant_id)
        except UNAVAILABLE as exc:
            log.warning("sync recorder: database unreachable (%s); will retry", type(exc).__name__)
            self._queue.extendleft(reversed([(t, r) for t, r in batch if t not in done]))
            return False
        return True

    async def _write(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID, reports: list[Report]
    ) -> None:
        try:
            applied = await store.apply_reports(conn, tenant_id, reports, datetime.now(UTC))
        except asyncpg.PostgresError as exc:  # e.g. the tenant was deleted meanwhile
            metrics.SYNC_REPORTS_DROPPED.inc(len(reports))
            log.error("sync recorder: %d reports refused: %s", len(reports), type(exc).__name__)
            return
        count_outcomes("traffic", reports, applied)


def count_outcomes(source: str, reports: list[Report], applied: list[store.Applied]) -> None:
    """Metrics for applied reports: outcomes, failures and new conflicts per system."""
    for report, result in zip(reports, applied, strict=True):
        metrics.SYNC_REPORTS.labels(source, result.outcome.value).inc()
        system = report.key.external_system
        if report.status is Status.FAILED and result.outcome in (
            Outcome.CREATED,
            Outcome.UPDATED,
        ):
            metrics.SYNC_FAILURES.labels(system).inc()
        if result.new_conflict:
            metrics.SYNC_CONFLICTS.labels(system).inc()


async def stats_loop(pool: asyncpg.Pool, interval: float) -> None:
    """Refresh the sync gauges every ``interval`` seconds until cancelled."""
    while True:
        await refresh_stats(pool)
        await asyncio.sleep(interval)


async def refresh_stats(pool: asyncpg.Pool) -> bool:
    """One statistics query under an advisory lock; True when this process computed them."""
    try:
        async with pool.acquire() as conn:
            rows = await store.compute_stats(conn)
    except (*UNAVAILABLE, asyncpg.PostgresError) as exc:
        metrics.SYNC_STATS_RUNS.labels("error").inc()
        log.warning("sync statistics query failed: %s", type(exc).__name__)
        return False
    if rows is None:
        # Another process publishes them now: stale values here would mislead max().
        for gauge in (metrics.SYNC_ENTITIES, metrics.SYNC_LAG, metrics.SYNC_SINCE_SUCCESS):
            metrics.clear_gauge(gauge, computing=False)
        metrics.SYNC_STATS_RUNS.labels("skipped").inc()
        return False
    publish_stats(rows)
    metrics.SYNC_STATS_RUNS.labels("computed").inc()
    return True


def publish_stats(rows: list[asyncpg.Record]) -> None:
    lag: dict[str, float] = {}
    since: dict[str, float] = {}
    metrics.clear_gauge(metrics.SYNC_ENTITIES, computing=True)
    for r in rows:
        system = r["external_system"]
        metrics.SYNC_ENTITIES.labels(system, r["status"]).set(r["n"])
        lag.setdefault(system, 0.0)
        if r["status"] in NOT_IN_SYNC and r["oldest_unsynced"] is not None:
            lag[system] = max(lag[system], float(r["oldest_unsynced"]))
        if r["since_success"] is not None:
            since[system] = min(since.get(system, float("inf")), float(r["since_success"]))
    metrics.clear_gauge(metrics.SYNC_LAG, computing=True)
    metrics.clear_gauge(metrics.SYNC_SINCE_SUCCESS, computing=True)
    for system, value in lag.items():
        metrics.SYNC_LAG.labels(system).set(value)
    for system, value in since.items():
        metrics.SYNC_SINCE_SUCCESS.labels(system).set(value)
