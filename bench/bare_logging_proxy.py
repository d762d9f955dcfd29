"""Reference point: the bare pass-through of bare_proxy.py plus the least capture that still
logs each call — request and response headers (as pairs, repeats kept), the response body
as JSON, status and timing — queued and written by batched binary COPY, as DESIGN.md's
"the same with queued COPY logging" measurement. No redaction, no request body, no auth,
no metrics, no journal, no write-ahead log: what any logging proxy pays at least, here.

    python bench/bare_logging_proxy.py PORT UPSTREAM_URL DSN

Writes to the gateway's own ``api_logs`` (partitioned by day, with its indexes): the
database at DSN must be migrated by the gateway (`gateway migrate`; the benchmarks do it,
see harness.prepare_database), so PostgreSQL's side of a row costs what the gateway's
does. The day partitions of today and tomorrow are created here if missing (the gateway's
maintenance does it for the gateway). Rows are left in place at exit.
"""

import asyncio
import gc
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import orjson
from aiohttp import web
from bare_proxy import build_app, serve

COLUMNS = (
    "id",
    "created_at",
    "request_id",
    "method",
    "path",
    "query",
    "request_headers",
    "request_body_format",
    "request_body_size",
    "response_headers",
    "response_body",
    "response_body_format",
    "response_body_size",
    "status",
    "duration_ms",
)
# A COPY when BATCH rows are queued, or FLUSH_INTERVAL seconds after the first queued row
# (BARE_LOG_FLUSH_INTERVAL overrides it: bench/instructions.py makes it long, so batches
# are full under valgrind as they are at load natively). Idle, the writer sleeps.
BATCH = 1000  # the gateway's GATEWAY_LOG_BATCH_SIZE
FLUSH_INTERVAL = float(os.environ.get("BARE_LOG_FLUSH_INTERVAL", "0.05"))


async def init(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        format="binary",
        encoder=lambda v: b"\x01" + orjson.dumps(v),
        decoder=lambda b: orjson.loads(b[1:]),
    )


def as_json(body: bytes) -> object:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return {"bytes": len(body)}


def uuid7() -> uuid.UUID:
    """A time-ordered id, as the gateway's rows have (RFC 9562 v7)."""
    ms = int(time.time() * 1000) & 0xFFFF_FFFF_FFFF
    rand = int.from_bytes(os.urandom(10), "big") & ((1 << 80) - 1)
    value = (ms << 80) | rand
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return uuid.UUID(int=value)


async def create_partitions(pool: asyncpg.Pool) -> None:
    today = datetime.now(UTC).date()
    for day in (today, today + timedelta(days=1)):
        nxt = day + timedelta(days=1)
        await pool.execute(
            f"CREATE TABLE IF NOT EXISTS api_logs_p{day:%Y%m%d} PARTITION OF api_logs "
            f"FOR VALUES FROM ('{day} 00:00:00+00') TO ('{nxt} 00:00:00+00')"
        )


def main() -> None:
    listen, upstream, dsn = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    rows: list[tuple[object, ...]] = []
    queued, full = asyncio.Event(), asyncio.Event()

    def record(
        request: web.Request, r: aiohttp.ClientResponse, data: bytes, started: float
    ) -> None:
        rows.append(
            (
                uuid7(),
                datetime.now(UTC),
                os.urandom(16).hex(),
                request.method,
                request.path,
                request.query_string,
                list(request.headers.items()),
                "empty",
                0,
                list(r.headers.items()),
                as_json(data),
                "json",
                len(data),
                r.status,
                (time.perf_counter() - started) * 1000.0,
            )
        )
        if len(rows) == 1:
            queued.set()
        elif len(rows) >= BATCH:
            full.set()

    async def writer(pool: asyncpg.Pool) -> None:
        nonlocal rows
        while True:
            await queued.wait()
            try:
                await asyncio.wait_for(full.wait(), FLUSH_INTERVAL)
            except TimeoutError:
                pass
            batch, rows = rows, []
            queued.clear()
            full.clear()
            await pool.copy_records_to_table("api_logs", records=batch, columns=COLUMNS)

    async def logging_ctx(app: web.Application) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2, init=init)
        await create_partitions(pool)
        task = asyncio.create_task(writer(pool))
        gc.collect()  # as the gateway does: freeze start-up objects, collect less often
        gc.freeze()
        gc.set_threshold(20_000, *gc.get_threshold()[1:])
        yield
        task.cancel()
        if rows:
            await pool.copy_records_to_table("api_logs", records=rows, columns=COLUMNS)
        await pool.close()

    app = build_app(upstream, record)
    app.cleanup_ctx.append(logging_ctx)
    serve(app, listen)


if __name__ == "__main__":
    main()
