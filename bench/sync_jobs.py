"""Sync job benchmark: one outbound job exporting N entities in batches, in one process.

    python bench/sync_jobs.py [--entities 100000] [--batch 1000]

An embedded PostgreSQL of its own (temporary directory), N rate mappings (plus one room
type) for the job's translation, and one aiohttp server on 127.0.0.1 that is both the PMS
(a change feed paged by cursor) and the partner (accepts every batch). One JobRunner runs
the job to the end. Reported: items/s end to end, and the database cost per item:
transactions, rows written, WAL bytes and PostgreSQL CPU time (all its processes), plus the
gateway process's own CPU per item. Results: bench/RESULTS-sync-jobs.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web
from cryptography.fernet import Fernet
from yarl import URL

from gateway.crypto import SecretBox
from gateway.db import migrations
from gateway.db.embedded import start_embedded
from gateway.db.pool import create_pool
from gateway.mapping.batch import batch_translator
from gateway.mapping.cache import MappingCache
from gateway.mapping.flow import Mappings
from gateway.proxy.client import upstream_session
from gateway.routes import Upstream
from gateway.sync.jobs.config import parse_syncs
from gateway.sync.jobs.runner import Hands, JobRunner
from gateway.webhooks.delivery import webhook_session
from gateway.webhooks.ssrf import AddressPolicy, literal_refusal

TICKS = os.sysconf("SC_CLK_TCK")


def server_cpu(postmaster: int) -> float:
    """CPU seconds of the postmaster and its children (this server's processes only)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == postmaster or int(fields[1]) == postmaster:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


async def db_counters(conn: asyncpg.Connection) -> dict[str, float]:
    row = await conn.fetchrow(
        """SELECT xact_commit, tup_inserted + tup_updated + tup_deleted AS rows,
                  pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') AS wal
           FROM pg_stat_database WHERE datname = current_database()"""
    )
    return {k: float(row[k]) for k in ("xact_commit", "rows", "wal")}


def make_app(changes: list[dict[str, Any]], received: list[int]) -> web.Application:
    async def feed(request: web.Request) -> web.Response:
        start, limit = int(request.query.get("cursor", "0")), int(request.query["limit"])
        page = changes[start : start + limit]
        return web.json_response({"items": page, "next_cursor": str(start + len(page))})

    async def take(request: web.Request) -> web.Response:
        received[0] += len((await request.json())["items"])
        return web.json_response({})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/changes", feed)
    app.router.add_post("/partner", take)
    return app


async def seed(conn: asyncpg.Connection, tenant: uuid.UUID, n: int) -> list[dict[str, Any]]:
    room = uuid.uuid4()
    rates = [uuid.uuid4() for _ in range(n)]
    await conn.execute(
        """INSERT INTO integration_mappings (tenant_id, entity_type, internal_id,
                                             external_system, external_id, origin)
           SELECT $1, t, i, 'revenue_mgmt', e, 'sql'
           FROM unnest($2::text[], $3::uuid[], $4::text[]) AS u(t, i, e)""",
        tenant,
        ["room_type"] + ["rate"] * n,
        [room, *rates],
        ["DBL"] + [f"R{k}" for k in range(n)],
    )
    return [
        {"id": str(r), "room_type_id": str(room), "price": 100 + k % 50, "version": 1}
        for k, r in enumerate(rates)
    ]


async def run(args: argparse.Namespace) -> None:
    dsn = start_embedded(
        Path(tempfile.mkdtemp(prefix="gateway-syncjobs-bench-")), delete_on_exit=True
    )
    pool = await create_pool(dsn, 2, 10)
    async with pool.acquire() as conn:
        await migrations.migrate(conn)
        tenant = await conn.fetchval("INSERT INTO tenants (name) VALUES ('bench') RETURNING id")
        changes = await seed(conn, tenant, args.entities)
        await conn.execute("ANALYZE")  # as autovacuum would have by the time a job runs
        backend = await conn.fetchval("SELECT pg_backend_pid()")
    postmaster = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
    received = [0]
    runner_app = web.AppRunner(make_app(changes, received))
    await runner_app.setup()
    site = web.TCPSite(runner_app, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    spec = {
        "name": "bench-rates",
        "tenant": str(tenant),
        "external_system": "revenue_mgmt",
        "entity_type": "rate",
        "direction": "outbound",
        "interval": "1h",
        "batch_size": args.batch,
        "source": {"upstream": "pms", "path": "/changes", "version": "/version"},
        "target": {"url": f"{base}/partner", "timeout": 120},
        "translate": {"/room_type_id": "room_type"},
    }
    (job,) = parse_syncs([spec], "bench", {"pms": Upstream("pms", URL(base))}, {})
    policy = AddressPolicy(allow_private=True)
    sessions = (upstream_session(), webhook_session(policy))
    hands = Hands(
        *sessions,
        lambda url: literal_refusal(url, policy),
        batch_translator(Mappings(pool, MappingCache(), 30.0)),
    )
    runner = JobRunner(pool, [job], SecretBox([Fernet.generate_key()]), hands)
    await runner.register({})
    async with pool.acquire() as conn:
        before = await db_counters(conn)
    cpu0, pg0, t0 = time.process_time(), server_cpu(postmaster), time.perf_counter()
    await runner.run_due()
    elapsed = time.perf_counter() - t0
    cpu, pg = time.process_time() - cpu0, server_cpu(postmaster) - pg0
    async with pool.acquire() as conn:
        after = await db_counters(conn)
        synced = await conn.fetchval(
            "SELECT count(*) FROM data_sync_status WHERE status = 'succeeded'"
        )
        run_row = await conn.fetchrow("SELECT * FROM sync_job_runs")
    n = args.entities
    print(
        f"entities {n}, batch {args.batch}: {run_row['batches']} batches, "
        f"{synced} succeeded, {received[0]} received by the partner; "
        f"run {run_row['status']} {run_row['error'] or ''}"
    )
    print(f"end to end: {elapsed:.2f} s, {n / elapsed:,.0f} items/s")
    print(
        f"per item: {(after['xact_commit'] - before['xact_commit']) / n:.4f} transactions, "
        f"{(after['rows'] - before['rows']) / n:.2f} rows written, "
        f"{(after['wal'] - before['wal']) / n:.0f} WAL bytes, "
        f"PostgreSQL CPU {pg / n * 1e6:.0f} us, this process (runner + both test servers) "
        f"CPU {cpu / n * 1e6:.0f} us"
    )
    for s in sessions:
        await s.close()
    await runner_app.cleanup()
    await pool.close()


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--entities", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=1000)
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
