"""Reference point: the bare pass-through of bare_proxy.py plus the least capture that still
logs each call — request and response headers (as pairs, repeats kept), the response body
as JSON, status and timing — queued and written by batched binary COPY, as DESIGN.md's
"the same with queued COPY logging" measurement. No redaction, no request body, no auth,
no metrics, no journal, no ids: what any logging proxy pays at least, on this machine.

    python bench/bare_logging_proxy.py PORT UPSTREAM_URL DSN

Writes to its own table, bench_bare_log (created here, dropped at exit).
"""

import asyncio
import gc
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
import orjson
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bare_proxy import build_app, serve

TABLE = "bench_bare_log"


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


def main() -> None:
    listen, upstream, dsn = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    rows: list[tuple[object, ...]] = []

    def record(
        request: web.Request, r: aiohttp.ClientResponse, data: bytes, started: float
    ) -> None:
        rows.append(
            (
                datetime.now(UTC),
                request.method,
                request.path,
                r.status,
                (time.perf_counter() - started) * 1000.0,
                list(request.headers.items()),
                list(r.headers.items()),
                as_json(data),
            )
        )

    async def writer(pool: asyncpg.Pool) -> None:
        nonlocal rows
        while True:
            await asyncio.sleep(0.05)
            if rows:
                batch, rows = rows, []
                await pool.copy_records_to_table(TABLE, records=batch)

    async def logging_ctx(app: web.Application) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2, init=init)
        await pool.execute(
            f"DROP TABLE IF EXISTS {TABLE}; CREATE UNLOGGED TABLE {TABLE} ("
            "created_at timestamptz, method text, path text, status int, duration_ms float8,"
            " request_headers jsonb, response_headers jsonb, response_body jsonb)"
        )
        task = asyncio.create_task(writer(pool))
        gc.collect()  # as the gateway does: freeze start-up objects, collect less often
        gc.freeze()
        gc.set_threshold(20_000, *gc.get_threshold()[1:])
        yield
        task.cancel()
        if rows:
            await pool.copy_records_to_table(TABLE, records=rows)
        await pool.execute(f"DROP TABLE IF EXISTS {TABLE}")
        await pool.close()

    app = build_app(upstream, record)
    app.cleanup_ctx.append(logging_ctx)
    serve(app, listen)


if __name__ == "__main__":
    main()
