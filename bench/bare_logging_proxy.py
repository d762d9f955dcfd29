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
from datetime import UTC, datetime

import aiohttp
import asyncpg
import orjson
import uvloop
from aiohttp import web

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"}
TABLE = "bench_bare_log"


async def init(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", schema="pg_catalog", format="binary",
                              encoder=lambda v: b"\x01" + orjson.dumps(v),
                              decoder=lambda b: orjson.loads(b[1:]))


def as_json(body: bytes) -> object:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return {"bytes": len(body)}


def main() -> None:
    listen, upstream, dsn = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    rows: list[tuple[object, ...]] = []

    async def writer() -> None:
        nonlocal rows
        while True:
            await asyncio.sleep(0.05)
            if rows:
                batch, rows = rows, []
                await app["pool"].copy_records_to_table(TABLE, records=batch)

    async def ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app["s"] = aiohttp.ClientSession(auto_decompress=False)
        app["pool"] = await asyncpg.create_pool(dsn, min_size=1, max_size=2, init=init)
        await app["pool"].execute(
            f"DROP TABLE IF EXISTS {TABLE}; CREATE UNLOGGED TABLE {TABLE} ("
            "created_at timestamptz, method text, path text, status int, duration_ms float8,"
            " request_headers jsonb, response_headers jsonb, response_body jsonb)")
        task = asyncio.create_task(writer())
        gc.collect()  # as the gateway does: freeze start-up objects, collect less often
        gc.freeze()
        gc.set_threshold(20_000, *gc.get_threshold()[1:])
        yield
        task.cancel()
        if rows:
            await app["pool"].copy_records_to_table(TABLE, records=rows)
        await app["pool"].execute(f"DROP TABLE IF EXISTS {TABLE}")
        await app["pool"].close()
        await app["s"].close()

    async def handle(request: web.Request) -> web.Response:
        started = time.perf_counter()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        body = await request.read() if request.body_exists else None
        async with app["s"].request(request.method, upstream + request.path_qs,
                                    headers=headers, data=body) as r:
            data = await r.read()
            out = {k: v for k, v in r.headers.items() if k.lower() not in HOP}
            rows.append((datetime.now(UTC), request.method, request.path, r.status,
                         (time.perf_counter() - started) * 1000.0,
                         list(request.headers.items()), list(r.headers.items()), as_json(data)))
            return web.Response(status=r.status, headers=out, body=data)

    app = web.Application()
    app.cleanup_ctx.append(ctx)
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=listen, access_log=None, print=None,
                loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
