"""Baseline: a bare aiohttp + uvloop pass-through (one ClientSession, no capture, no logging).

bench/bare_logging_proxy.py builds on ``build_app`` with a ``record`` hook, so the two
differ only in what that hook does."""

import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import uvloop
from aiohttp import web

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"}

# Called after each answer is read: (request, upstream response, its body, perf_counter at start)
Record = Callable[[web.Request, aiohttp.ClientResponse, bytes, float], None]


def build_app(upstream: str, record: Record | None = None) -> web.Application:
    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        app["s"] = aiohttp.ClientSession(auto_decompress=False)
        yield
        await app["s"].close()

    async def handle(request: web.Request) -> web.Response:
        started = time.perf_counter() if record is not None else 0.0
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        body = await request.read() if request.body_exists else None
        async with app["s"].request(
            request.method, upstream + request.path_qs, headers=headers, data=body
        ) as r:
            data = await r.read()
            out = {k: v for k, v in r.headers.items() if k.lower() not in HOP}
            if record is not None:
                record(request, r, data, started)
            return web.Response(status=r.status, headers=out, body=data)

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def serve(app: web.Application, port: int) -> Any:
    web.run_app(
        app, host="127.0.0.1", port=port, access_log=None, print=None, loop=uvloop.new_event_loop()
    )


def main() -> None:
    serve(build_app(sys.argv[2]), int(sys.argv[1]))


if __name__ == "__main__":
    main()
