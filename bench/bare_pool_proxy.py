"""bench/bare_proxy.py with the upstream side swapped: the same aiohttp + uvloop server in
front, gateway.proxy.upstream.UpstreamPool instead of aiohttp's ClientSession behind.
Everything else is kept alike (hop-by-hop headers dropped both ways, the whole body read,
one web.Response built), so the two differ only in the upstream client.

    python bench/bare_pool_proxy.py PORT UPSTREAM_URL
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import uvloop
from aiohttp import web

from gateway.proxy.upstream import UpstreamPool

HOP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"host", b"upgrade"}
)
POOL = web.AppKey("pool", UpstreamPool)


def build_app(upstream: str) -> web.Application:
    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        app[POOL] = UpstreamPool(upstream)
        yield
        await app[POOL].close()

    async def handle(request: web.Request) -> web.Response:
        headers = [(k, v) for k, v in request.raw_headers if k.lower() not in HOP]
        body = await request.read() if request.body_exists else None
        r = await app[POOL].request(request.method, request.raw_path, headers, body)
        data = await r.read()
        out = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in r.headers if k.lower() not in HOP
        ]
        return web.Response(status=r.status, headers=out, body=data)

    app = web.Application()
    app.cleanup_ctx.append(pool_ctx)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main() -> None:
    web.run_app(
        build_app(sys.argv[2]),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
