"""Baseline: a bare aiohttp + uvloop pass-through (one ClientSession, no capture, no logging)."""

import sys

import aiohttp
import uvloop
from aiohttp import web

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"}


def main() -> None:
    listen, upstream = int(sys.argv[1]), sys.argv[2]

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app["s"] = aiohttp.ClientSession(auto_decompress=False)
        yield
        await app["s"].close()

    async def handle(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        body = await request.read() if request.body_exists else None
        async with app["s"].request(request.method, upstream + request.path_qs,
                                    headers=headers, data=body) as r:
            data = await r.read()
            out = {k: v for k, v in r.headers.items() if k.lower() not in HOP}
            return web.Response(status=r.status, headers=out, body=data)

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=listen, access_log=None, print=None,
                loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
