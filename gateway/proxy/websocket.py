"""WebSocket pass-through: connect upstream first, then accept the caller and pump frames.

Connecting upstream before accepting means a refused upstream is a plain 502 JSON answer,
not an accepted socket that closes at once. The api_logs row (status 101) records frame
and byte counts per direction and the close code, not the frames themselves.

On a translated route the upgrade's path and query ids are translated before connecting
(unknown ones refused with the usual JSON answer), and each text message is translated at
the route's body pointers (gateway.mapping.flow.Flow.message). A message the route refuses
(an unknown id, a value that is no id, not JSON, or binary from the partner on a strict
route) closes both sockets with 1008, naming the reason; 1013 when the ids could not be
looked up, 1011 for an upstream message that cannot be rewritten. Translated messages are
capped at the stream threshold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import WSMsgType, web

from gateway.capture.record import Body
from gateway.errors import (
    ClientError,
    GatewayError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.proxy.headers import as_multidict, upstream_request_headers

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from gateway.capture.exchange import Exchange
    from gateway.mapping.flow import Flow, Translator
    from gateway.routes import Route
    from gateway.settings import IPNetwork

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 5.0  # seconds to wait for the other side's close frame
POLICY_VIOLATION = 1008  # a message the route refuses (unknown id, no id, not JSON, binary)
TRY_AGAIN_LATER = 1013  # its ids could not be looked up (the database is unreachable)
INTERNAL_ERROR = 1011


@dataclass(frozen=True, slots=True)
class Relay:
    """What relaying a WebSocket needs from the proxy."""

    session: aiohttp.ClientSession  # the upstream client
    translator: Translator | None  # ID translation, when the gateway has a database
    max_translated: int  # bytes of a translated message (GATEWAY_STREAM_THRESHOLD_BYTES)
    trusted_proxies: tuple[IPNetwork, ...]  # whose X-Forwarded-* are believed


class _Refused(Exception):
    """A message the route's translation refused: ends the relay (see _close_code)."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


def is_upgrade(request: web.BaseRequest) -> bool:
    return request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket"


async def relay(
    via: Relay,
    request: web.Request,
    route: Route,
    ex: Exchange,
    identity: dict[str, str] | None = None,
) -> web.StreamResponse:
    raw_path, query = request.rel_url.raw_path, request.rel_url.raw_query_string
    flow = None
    if route.translate is not None and via.translator is not None:
        flow = via.translator.start(
            route, ex.tenant_id or "", ex.external_system or "", ex.api_key_id
        )
        ex.translated = flow.record
        raw_path, query, _ = await flow.inbound(raw_path, query, None)
    url = route.upstream_url(raw_path, query)
    # Translated messages are parsed whole: as large as a translated body may be (aiohttp
    # closes with 1009 above that); others stream through at any size.
    most = via.max_translated if flow is not None else 0
    headers = as_multidict(
        upstream_request_headers(
            request, ex.request_id, via.trusted_proxies, websocket=True, identity=identity
        )
    )
    protocols = [
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    ]
    up = route.upstream
    t0 = time.perf_counter()
    try:
        upstream = await via.session.ws_connect(
            url,
            headers=headers,
            protocols=protocols,
            timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT),
            max_msg_size=most,
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
        protocols=[upstream.protocol] if upstream.protocol else (), max_msg_size=most
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
    inbound = _translator(flow, inbound=True)
    outbound = _translator(flow, inbound=False)
    to_up = asyncio.create_task(_pump(ws, upstream, stats, "client", inbound))
    to_down = asyncio.create_task(_pump(upstream, ws, stats, "upstream", outbound))
    code: int | None = None
    reason = b""
    try:
        await asyncio.wait({to_up, to_down}, return_when=asyncio.FIRST_COMPLETED)
        ended = [t.exception() for t in (to_up, to_down) if t.done() and not t.cancelled()]
        failure = next((e for e in ended if e is not None), None)  # the partner's side first
        if isinstance(failure, _Refused):
            ex.fail(failure.error.code, failure.error.message)
            code, reason = _close_code(failure.error), _close_reason(failure.error.message)
        elif failure is not None:
            log.error(
                "websocket relay failed",
                exc_info=failure,
                extra={"request_id": ex.request_id, "route": ex.route},
            )
            ex.fail("internal_error", f"the gateway failed relaying: {type(failure).__name__}")
            code, reason = INTERNAL_ERROR, b"the gateway failed relaying this connection"
    finally:
        for task in (to_up, to_down):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if code is not None and not ws.closed:
            # Recorded first: the caller may hang up, and this handler be cancelled, as
            # soon as it has the close frame.
            stats["close_code"] = code
        try:
            # Both at once: the partner hears why without waiting for the upstream's close.
            await asyncio.gather(
                ws.close(
                    code=code or upstream.close_code or aiohttp.WSCloseCode.OK, message=reason
                ),
                upstream.close(code=code or aiohttp.WSCloseCode.OK, message=reason),
                return_exceptions=True,
            )
        finally:
            if stats.get("close_code") is None:
                stats["close_code"] = ws.close_code
            stats["upstream_close_code"] = upstream.close_code
    return ws


def _close_code(error: GatewayError) -> int:
    if error.status == 503:
        return TRY_AGAIN_LATER
    return INTERNAL_ERROR if error.status >= 500 else POLICY_VIOLATION


def _close_reason(text: str) -> bytes:
    """A close frame's reason: at most 123 bytes of UTF-8, not cut inside a character."""
    return text.encode()[:123].decode("utf-8", "ignore").encode()


Message = str | bytes


def _translator(flow: Flow | None, inbound: bool) -> Callable[[Message], Awaitable[Message]] | None:
    """Messages one way through the route's translation (None: passed as they are). Text
    is translated; binary cannot be, so a strict route refuses it from the partner."""
    if flow is None or not (flow.tr.request_trie if inbound else flow.tr.response_trie):
        return None
    assert flow is not None
    strict = inbound and flow.tr.refuse_unknown

    async def translated(data: Message) -> Message:
        try:
            if isinstance(data, str):
                return await flow.message(data, inbound)
            if strict:
                raise ClientError(
                    "binary messages cannot be translated on this route", code="malformed_body"
                )
            return data
        except GatewayError as exc:
            raise _Refused(exc) from None

    return translated


async def _pump(
    src: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    dst: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    stats: dict[str, int | None],
    side: str,
    translate: Callable[[Message], Awaitable[Message]] | None = None,
) -> None:
    async for msg in src:
        if msg.type == WSMsgType.TEXT:
            text = msg.data if translate is None else await translate(msg.data)
            await dst.send_str(text)  # type: ignore[arg-type]
            size = len(msg.data.encode())
        elif msg.type == WSMsgType.BINARY:
            data = msg.data if translate is None else await translate(msg.data)
            await dst.send_bytes(data)  # type: ignore[arg-type]
            size = len(msg.data)
        else:
            break
        stats[f"{side}_bytes"] = (stats[f"{side}_bytes"] or 0) + size
        stats[f"{side}_frames"] = (stats[f"{side}_frames"] or 0) + 1
    # src closed: pass its close code on.
    code = src.close_code or aiohttp.WSCloseCode.OK
    await dst.close(code=code)
