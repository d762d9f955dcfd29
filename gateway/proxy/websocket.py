"""WebSocket pass-through: connect upstream first, then accept the caller and pump frames.

Connecting upstream before accepting means a refused upstream is a plain 502 JSON answer,
not an accepted socket that closes at once. The api_logs row (status 101) records frame
and byte counts per direction and the close code, not the frames themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import WSMsgType, web

from gateway.capture.record import Body
from gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.proxy.headers import upstream_request_headers

if TYPE_CHECKING:
    from gateway.capture.exchange import Exchange
    from gateway.proxy.pipeline import Proxy
    from gateway.routes import Route

CLOSE_TIMEOUT = 5.0  # seconds to wait for the other side's close frame


def is_upgrade(request: web.BaseRequest) -> bool:
    return request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket"


async def relay(
    proxy: Proxy,
    request: web.Request,
    route: Route,
    ex: Exchange,
    identity: dict[str, str] | None = None,
) -> web.StreamResponse:
    url = route.upstream_url(request.rel_url.raw_path, request.rel_url.raw_query_string)
    headers = upstream_request_headers(
        request, ex.request_id, proxy.settings.trusted_proxies, websocket=True, identity=identity
    )
    protocols = [
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    ]
    up = route.upstream
    t0 = time.perf_counter()
    try:
        upstream = await proxy.session.ws_connect(
            url,
            headers=headers,
            protocols=protocols,
            timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT),
            max_msg_size=0,
        )
    except aiohttp.WSServerHandshakeError as exc:
        raise UpstreamError(
            f"upstream {up.name!r} refused the WebSocket upgrade with status {exc.status}"
        ) from exc
    except TimeoutError as exc:
        raise UpstreamTimeout(f"upstream {up.name!r} did not accept the WebSocket in time") from exc
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamUnavailable(f"upstream {up.name!r} refused the connection") from exc
    ex.upstream_ms = (time.perf_counter() - t0) * 1000.0
    ws = web.WebSocketResponse(
        protocols=[upstream.protocol] if upstream.protocol else (), max_msg_size=0
    )
    await ws.prepare(request)
    ex.status = 101
    stats: dict[str, int | None] = {
        "client_frames": 0,
        "client_bytes": 0,
        "upstream_frames": 0,
        "upstream_bytes": 0,
    }
    # Logged as it evolves: aiohttp may cancel this handler when the caller drops the TCP link.
    ex.response_body = Body({"websocket": stats}, "json", 0, False)
    to_up = asyncio.create_task(_pump(ws, upstream, stats, "client"))
    to_down = asyncio.create_task(_pump(upstream, ws, stats, "upstream"))
    try:
        await asyncio.wait({to_up, to_down}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (to_up, to_down):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await upstream.close()
        with contextlib.suppress(Exception):
            await ws.close(code=upstream.close_code or aiohttp.WSCloseCode.OK)
        stats["close_code"] = ws.close_code
        stats["upstream_close_code"] = upstream.close_code
    return ws


async def _pump(
    src: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    dst: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    stats: dict[str, int | None],
    side: str,
) -> None:
    async for msg in src:
        if msg.type == WSMsgType.TEXT:
            await dst.send_str(msg.data)
            size = len(msg.data.encode())
        elif msg.type == WSMsgType.BINARY:
            await dst.send_bytes(msg.data)
            size = len(msg.data)
        else:
            break
        stats[f"{side}_bytes"] = (stats[f"{side}_bytes"] or 0) + size
        stats[f"{side}_frames"] = (stats[f"{side}_frames"] or 0) + 1
    # src closed: pass its close code on.
    code = src.close_code or aiohttp.WSCloseCode.OK
    await dst.close(code=code)
