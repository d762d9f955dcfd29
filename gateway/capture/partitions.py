"""Daily partitions of api_logs: create ahead, drop after retention (archived first, if
configured).

Several gateway processes share one database; the maintenance run takes a transaction
advisory lock so only one of them works at a time, the others skip.

Archive (GATEWAY_ARCHIVE_DIR): before a partition is dropped its rows are exported with
COPY to ``<dir>/api_logs_pYYYYMMDD.csv.gz`` (CSV with a header line, gzip), written under
a temporary name, fsynced and renamed, inside the maintenance transaction: if the export
fails (disk full, unwritable folder) the transaction rolls back and the partition stays.
Compression runs in a worker thread so the process keeps serving. Restore with
``gunzip -c FILE | psql -c "\\copy api_logs FROM pstdin WITH (FORMAT csv, HEADER)"``
once the day's partition exists again.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import asyncpg

from gateway import metrics

log = logging.getLogger(__name__)

MAINTENANCE_LOCK_KEY = 0x6761_7465_0002  # "gate" + 2: advisory lock id for partition upkeep
PARTITION_RE = re.compile(r"^api_logs_p(\d{8})$")
LOCK_TIMEOUT = "5s"  # never queue behind a long lock for longer than this
ARCHIVE_SUFFIX = ".csv.gz"
# gzip's usual size/CPU balance; the compression runs in a thread, off the event loop.
ARCHIVE_COMPRESSLEVEL = 6


def partition_name(day: date) -> str:
    return f"api_logs_p{day:%Y%m%d}"


async def create_partition(conn: asyncpg.Connection, day: date) -> None:
    """Create the partition for ``day`` (UTC) if it does not exist; safe under concurrency."""
    name = partition_name(day)
    start = datetime(day.year, day.month, day.day).strftime("%Y-%m-%d 00:00:00+00")
    end = (day + timedelta(days=1)).strftime("%Y-%m-%d 00:00:00+00")
    async with conn.transaction():
        # Serialise creators: two concurrent CREATE IF NOT EXISTS can still collide.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MAINTENANCE_LOCK_KEY + 1)
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF api_logs "
            f"FOR VALUES FROM ('{start}') TO ('{end}')"
        )


async def ensure_partitions(conn: asyncpg.Connection, days: Iterable[date]) -> None:
    for day in sorted(set(days)):
        await create_partition(conn, day)


async def existing_partitions(conn: asyncpg.Connection) -> dict[date, str]:
    rows = await conn.fetch(
        """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = 'api_logs'::regclass"""
    )
    out = {}
    for r in rows:
        m = PARTITION_RE.match(r["relname"])
        if m:
            out[datetime.strptime(m.group(1), "%Y%m%d").date()] = r["relname"]
    return out


@dataclass(frozen=True, slots=True)
class MaintenanceResult:
    ran: bool
    created: tuple[date, ...] = ()
    dropped: tuple[str, ...] = ()


async def archive_partition(conn: asyncpg.Connection, name: str, directory: Path) -> Path:
    """Export one partition to ``directory/<name>.csv.gz``; the file is complete or absent."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{name}{ARCHIVE_SUFFIX}"
    tmp = directory / f".{name}{ARCHIVE_SUFFIX}.tmp"
    try:
        with tmp.open("wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=ARCHIVE_COMPRESSLEVEL) as gz:

                async def sink(chunk: bytes) -> None:
                    await asyncio.to_thread(gz.write, chunk)

                await conn.copy_from_table(name, output=sink, format="csv", header=True)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


async def run_maintenance(
    conn: asyncpg.Connection,
    today: date,
    ahead: int,
    retention_days: int,
    archive_dir: Path | None = None,
) -> MaintenanceResult:
    """Create partitions for yesterday..today+ahead; drop those older than the retention,
    each exported to ``archive_dir`` first when one is given."""
    async with conn.transaction():
        got = await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", MAINTENANCE_LOCK_KEY)
        if not got:
            metrics.PARTITION_RUNS.labels("skipped").inc()
            return MaintenanceResult(ran=False)
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        have = await existing_partitions(conn)
        wanted = [today + timedelta(days=d) for d in range(-1, ahead + 1)]
        created = tuple(d for d in wanted if d not in have)
        cutoff = today - timedelta(days=retention_days)
        dropped = tuple(name for d, name in sorted(have.items()) if d < cutoff)
        for name in dropped:
            if archive_dir is not None:
                path = await archive_partition(conn, name, archive_dir)
                log.info("api_logs partition %s archived to %s", name, path)
            await conn.execute(f"DROP TABLE IF EXISTS {name}")
        await conn.execute(
            "DELETE FROM api_log_batches WHERE written_at < now() - make_interval(days => $1)",
            retention_days,
        )
    await ensure_partitions(conn, created)
    metrics.PARTITION_RUNS.labels("ok").inc()
    metrics.PARTITIONS_DROPPED.inc(len(dropped))
    if created or dropped:
        log.info(
            "api_logs partitions: created %s, dropped %s", [str(d) for d in created], list(dropped)
        )
    return MaintenanceResult(ran=True, created=created, dropped=dropped)
