"""The HTTP server the gateway runs on: aiohttp's, with its own protocol handler.

aiohttp's HTTP parser refuses some requests before any handler sees them (an unknown
method, a bad version, invalid bytes in the target or a header, a missing or repeated
Host, Content-Length with Transfer-Encoding, obsolete line folding). Left alone, aiohttp
answers those in plain text, writes no api_logs row, and logs the raw offending line with
a traceback at ERROR (a token in a malformed header would reach the process log). Here:

* :class:`GatewayRequestHandler` keeps the first bytes of the request being parsed, and
  on a parser error answers the gateway's JSON ``bad_request`` (never echoing the bytes),
  writes an api_logs row from what a lenient reading of those bytes gives (method, target,
  redacted headers, peer) and logs one rate-limited warning without header values, query
  or raw bytes (logger ``gateway.http``);
* :class:`GatewayServer` sends CONNECT and ``OPTIONS *`` (no route can match them) to the
  proxy, which refuses them with JSON and a row; a request for a path the application
  serves itself (admin API, health, metrics: read from its router at start) goes to the
  application; every other request, the proxied calls, goes straight to the proxy's
  handler: no router resolution, match info or middleware chain (the application would
  resolve it to its catch-all proxy route, with the same result). A request with an
  ``Expect`` header takes the application's way, which answers ``100-continue``;
* :class:`GatewayRunner` and :func:`run` serve an application with those, as
  ``web.run_app`` would (SIGINT/SIGTERM: graceful shutdown within ``shutdown_timeout``).

This relies on aiohttp internals (``RequestHandler._messages``, ``_request_count``,
``_payload_parser``, ``_upgraded``, ``web_protocol._ErrInfo``, ``Server._kwargs``):
pyproject pins the aiohttp minor version and tests/unit/test_http_server.py fails loudly if
any of them changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

from aiohttp import web, web_protocol
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
)
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.capture.exchange import Exchange
from gateway.capture.record import (
    DEFAULT_REDACT_FIELDS,
    DEFAULT_REDACT_HEADERS,
    REDACTED,
    Redactor,
    capture_headers,
    clean_text,
    now_utc,
)
from gateway.errors import BadRequest, GatewayError
from gateway.proxy.headers import request_id_from
from gateway.tasks import CANCEL_GRACE
from gateway.web.responses import error_response

log = logging.getLogger("gateway.http")

HEAD_KEEP = 8 * 1024  # bytes of an unparsed request kept to describe it on a parser error
HELD_CHUNKS = 4  # received chunks referenced (not copied) while a request head arrives
HEADER_BLOCK_MAX = 4096  # characters of the leniently read header block kept in the row
HEADER_VALUE_MAX = 512  # characters of one leniently read header value kept in the row
LOG_METHOD_MAX = 16  # characters of the method in the warning line
LOG_PATH_MAX = 64  # characters of the path in the warning line
LOG_LINES_PER_SECOND = 10  # parser-error warnings per second per process; the rest counted
BAD_REQUEST_CODE = "bad_request"

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token (methods, header names)
_LOG_SAFE = re.compile(r"[^!-~]")  # anything but visible ASCII, replaced in the warning line
_LINES = re.compile(r"\r?\n")
_QUERY = Redactor(DEFAULT_REDACT_FIELDS)

# What a client is told per parser error class (never the offending bytes).
_MESSAGES: tuple[tuple[type[HttpProcessingError], str], ...] = (
    (BadHttpMethod, "malformed HTTP request: invalid method"),
    (InvalidURLError, "malformed HTTP request: invalid request target"),
    (BadStatusLine, "malformed HTTP request: invalid request line"),
    (LineTooLong, "malformed HTTP request: a request or header line is too long"),
    (InvalidHeader, "malformed HTTP request: invalid header"),
)
_DEFAULT_MESSAGE = "malformed HTTP request: invalid headers or framing"

AppHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def refusal_message(exc: BaseException) -> str:
    """The JSON message for a parser error: its kind, in words, without any of its bytes."""
    for kind, message in _MESSAGES:
        if isinstance(exc, kind):
            return message
    return _DEFAULT_MESSAGE


# -- reading what could be read ---------------------------------------------------------


def lenient_head(raw: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    """(method, target, header lines) of a request head the parser refused, read as far as
    it goes: folded lines join the header they continue (so they are redacted with it),
    and a line without a colon is kept as ``(invalid line)`` with its content redacted."""
    text = raw.decode("utf-8", "replace").split("\r\n\r\n", 1)[0].split("\n\n", 1)[0]
    lines = _LINES.split(text)
    parts = lines[0].split(" ")
    method, target = parts[0], parts[1] if len(parts) > 1 else ""
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
        elif ":" in line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        elif line:
            headers.append(("(invalid line)", REDACTED))
    return method, target, headers


def safe_headers(headers: list[tuple[str, str]]) -> list[list[str]]:
    """Leniently read headers as a row keeps them: the default redact set applied, a value
    under a name that is not a token redacted too, everything truncated."""
    named = [(n, v if _TOKEN.fullmatch(n) else REDACTED) for n, v in headers]
    out: list[list[str]] = []
    used = 0
    for name, value in capture_headers(named, DEFAULT_REDACT_HEADERS):
        pair = [clean_text(name, HEADER_VALUE_MAX), clean_text(value, HEADER_VALUE_MAX)]
        used += len(pair[0]) + len(pair[1])
        if used > HEADER_BLOCK_MAX:
            out.append(["(truncated)", ""])
            break
        out.append(pair)
    return out


def unparsed_exchange(raw: bytes, peer: str | None) -> Exchange:
    """The api_logs exchange of a request the parser refused (``raw``: its first bytes)."""
    method, target, headers = lenient_head(raw)
    path, _, query = target.partition("?")
    ua = next((v for n, v in headers if n.lower() == "user-agent"), None)
    return Exchange(
        created_at=now_utc(),
        started=time.perf_counter(),
        request_id=request_id_from(CIMultiDictProxy(CIMultiDict(headers))),
        method=clean_text(method, LOG_PATH_MAX),
        path=clean_text(path),
        query=clean_text(_QUERY.text(query)),  # e.g. ?api_key=: redacted like body fields
        request_headers=safe_headers(headers),
        client_ip=peer,
        user_agent=clean_text(ua, HEADER_VALUE_MAX) if ua is not None else None,
    )


def log_safe(value: str, limit: int) -> str:
    """A method or path for the process log: visible ASCII only, no query, truncated."""
    return _LOG_SAFE.sub("?", value.split("?", 1)[0][:limit]) or "-"


# -- the warning line, rate-limited -----------------------------------------------------


class ParseErrorLog:
    """At most ``per_second`` warnings a second; the rest are counted, and the count is
    logged once the second is over (a flood of bad requests is a few lines, not a flood)."""

    def __init__(self, per_second: int = LOG_LINES_PER_SECOND) -> None:
        self.per_second = per_second
        self.window = 0.0
        self.used = 0
        self.suppressed = 0
        self._flush: asyncio.TimerHandle | None = None

    def warn(self, exc: BaseException, peer: str | None, ex: Exchange) -> None:
        now = time.monotonic()
        if now - self.window >= 1.0:
            self.window, self.used = now, 0
        if self.used >= self.per_second:
            self.suppressed += 1
            if self._flush is None:
                loop = asyncio.get_running_loop()
                self._flush = loop.call_at(loop.time() + 1.0, self.flush)
            return
        self.used += 1
        method, path = log_safe(ex.method, LOG_METHOD_MAX), log_safe(ex.path, LOG_PATH_MAX)
        log.warning(
            "malformed HTTP request refused: %s from %s (%s %s)",
            type(exc).__name__,
            peer or "-",
            method,
            path,
            extra={"request_id": ex.request_id, "status": ex.status, "error_code": ex.error_code},
        )

    def flush(self) -> None:
        """Log how many warnings were left out since the last such line."""
        self._flush = None
        if self.suppressed:
            log.warning("%d more malformed HTTP requests refused (not logged)", self.suppressed)
            self.suppressed = 0


# -- protocol, server, runner -----------------------------------------------------------


class GatewayRequestHandler(web_protocol.RequestHandler):
    """aiohttp's protocol handler, with parser errors answered and logged the gateway's way."""

    __slots__ = ("_bad_head", "_body", "_closing", "_gateway", "_held", "caller_left")

    def __init__(self, manager: GatewayServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._gateway = manager
        self._held: list[bytes] = []  # chunks of the request head being received
        self._body: Any = None  # payload of the last parsed request (its body may follow)
        self._bad_head: bytes | None = None
        self._closing = False  # the gateway closes the connection (shutdown, error, idle)
        self.caller_left = False  # the caller closed it first (Proxy.note_cancelled reads it)

    def force_close(self) -> None:
        """aiohttp's; remembered, so a connection lost afterwards is not the caller's doing."""
        self._closing = True
        super().force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        """aiohttp's; notes whether the caller hung up before the gateway closed."""
        if not self._closing:
            self.caller_left = True
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """aiohttp's, keeping references to the chunks of a request head until it parses."""
        if self._payload_parser is not None or self._upgraded or self._bad_head is not None:
            super().data_received(data)
            return
        body = self._body
        if (body is None or body.is_eof()) and len(self._held) < HELD_CHUNKS:
            self._held.append(data)
        before = self._request_count
        super().data_received(data)
        if self._request_count != before and self._messages:
            message, payload = self._messages[-1]
            if isinstance(message, web_protocol._ErrInfo):
                self._bad_head = b"".join(self._held)[:HEAD_KEEP]
            self._body = payload
            self._held.clear()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A parser error: JSON 400, an api_logs row, one rate-limited warning line."""
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        if request.writer.output_size > 0:  # as aiohttp: nothing can be answered any more
            raise ConnectionError("response already sent, cannot answer the parser error")
        peer = request.remote or None
        ex = unparsed_exchange(self._bad_head or b"", peer)
        refusal = BadRequest(refusal_message(exc), code=BAD_REQUEST_CODE)
        resp = self._gateway.refuse(ex, refusal)
        self._gateway.parse_log.warn(exc, peer, ex)
        resp.force_close()
        return resp


class Refusals(Protocol):
    """What the server needs of the proxy (gateway.proxy.pipeline.Proxy)."""

    def refuse_now(self, ex: Exchange, exc: GatewayError) -> web.Response: ...

    async def refuse_target(self, request: web.BaseRequest) -> web.Response: ...

    async def handle(self, request: web.Request) -> web.StreamResponse: ...


_SERVER_ARGS = frozenset({"request_factory", "handler_cancellation"})


class OwnPaths:
    """The paths an application serves itself, read from its router: exact paths, and the
    fixed heads of paths with variables (``/admin/v1/logs/`` of
    ``/admin/v1/logs/{log_id}``). The catch-all proxy route (head ``/``) is not one."""

    __slots__ = ("exact", "heads")

    def __init__(self, exact: frozenset[str], heads: tuple[str, ...]) -> None:
        self.exact = exact
        self.heads = heads

    @classmethod
    def of(cls, app: web.Application) -> OwnPaths:
        exact: set[str] = set()
        heads: set[str] = set()
        for resource in app.router.resources():
            canonical = resource.canonical
            head = canonical.split("{", 1)[0]
            if isinstance(resource, web.PrefixedSubAppResource):
                heads.add(canonical.rstrip("/") + "/")
                exact.add(canonical)
            elif head == canonical:
                exact.add(canonical)
            elif head != "/":
                heads.add(head)
        return cls(frozenset(exact), tuple(sorted(heads)))

    def served(self, path: str) -> bool:
        """Whether the application may serve ``path`` itself (else: proxied)."""
        return path in self.exact or path.startswith(self.heads)


class GatewayServer(web.Server):
    """aiohttp's low-level server with :class:`GatewayRequestHandler` connections."""

    def __init__(
        self,
        handler: AppHandler,
        *,
        proxy: Callable[[], Refusals | None],
        loop: asyncio.AbstractEventLoop,
        own_paths: OwnPaths | None = None,
        **kwargs: Any,
    ) -> None:
        self._app_handle = handler
        self._own = own_paths
        self._handler_kwargs = {k: v for k, v in kwargs.items() if k not in _SERVER_ARGS}
        super().__init__(self._dispatch, loop=loop, **kwargs)
        self._proxy = proxy
        self.parse_log = ParseErrorLog()

    def __call__(self) -> GatewayRequestHandler:
        return GatewayRequestHandler(self, loop=self._loop, **self._handler_kwargs)

    def _dispatch(self, request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        """CONNECT and ``OPTIONS *`` to the proxy (no route matches them); all else to the
        application. Not a coroutine: no extra frame per request."""
        path = request.raw_path
        if request.method == "CONNECT" or path == "*":
            proxy = self._proxy()
            if proxy is not None:
                return proxy.refuse_target(request)
            return self._app_handle(request)
        own = self._own
        # The path as the application's router reads it (percent-decoded but for %2F).
        if own is not None and "Expect" not in request.headers:
            if not own.served(request.rel_url.path_safe):
                proxy = self._proxy()
                if proxy is not None:  # the application's request_factory made a web.Request
                    return proxy.handle(cast(web.Request, request))
        return self._app_handle(request)

    def refuse(self, ex: Exchange, exc: GatewayError) -> web.Response:
        """The JSON refusal, logged through the proxy when the application has one."""
        proxy = self._proxy()
        if proxy is None:  # not started (or no proxy): answer JSON all the same
            return error_response(exc, ex.request_id)
        return proxy.refuse_now(ex, exc)


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` serving through :class:`GatewayServer`; ``proxy_key`` names the
    application's Proxy (present once the application has started)."""

    def __init__(self, app: web.Application, *, proxy_key: web.AppKey[Any], **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._proxy_key = proxy_key

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # starts the application
        app, key = self.app, self._proxy_key
        return GatewayServer(
            plain.request_handler,
            proxy=lambda: app.get(key),
            loop=asyncio.get_running_loop(),
            own_paths=OwnPaths.of(app),
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            **plain._kwargs,
        )


async def _serve(runner: GatewayRunner, host: str, port: int, reuse_port: bool) -> None:
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port)
        await site.start()
        log.info("serving on %s", site.name)
        while True:  # until SIGINT/SIGTERM (GracefulExit) or cancellation
            await asyncio.sleep(3600)
    finally:
        await runner.cleanup()


def run(
    runner: GatewayRunner,
    *,
    host: str,
    port: int,
    loop: asyncio.AbstractEventLoop,
    reuse_port: bool = False,
) -> None:
    """``web.run_app`` for a :class:`GatewayRunner` (built with ``handle_signals=True``
    and its ``shutdown_timeout``): serve until SIGINT/SIGTERM, then shut down gracefully."""
    main = loop.create_task(_serve(runner, host, port, reuse_port))
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()  # runs runner.cleanup(): shutdown, then the app's cleanup
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            _cancel_rest(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


def _cancel_rest(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the tasks still pending after cleanup and report any that failed; one that
    will not even unwind (stuck on a hung database) is left behind, never waited for."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    loop.run_until_complete(asyncio.wait(tasks, timeout=CANCEL_GRACE))
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {"message": "unhandled exception during shutdown", "task": task}
            )
