"""The proxy pipeline, top to bottom, for one partner call:

    match route → authenticate (unless the route is public) → read/stream the request
    (capture it) → translate ids → forward to the upstream → relay the answer (capture
    it, translate ids back) → emit events (routes with `emit`) → queue the api_logs row
    → metrics (and the sync outcome, on routes with `sync`)

Every outcome, refusals included, produces exactly one api_logs row.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from gateway import metrics
from gateway.auth.authenticator import Authenticator, RateLimiter, refuse
from gateway.auth.keys import ApiKey, Role
from gateway.capture.exchange import CapturePolicy, Exchange
from gateway.capture.record import (
    DEFAULT_REDACT_FIELDS,
    DEFAULT_REDACT_HEADERS,
    Body,
    capture_headers,
    capture_raw_headers,
    clean_text,
    now_utc,
)
from gateway.capture.writer import LogWriter
from gateway.errors import (
    BadRequest,
    ClientGone,
    Forbidden,
    GatewayError,
    HeadersTooLarge,
    MethodNotAllowed,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    ShuttingDown,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.mapping.flow import Flow, Translator, scans_request_text, wants_parsed_request
from gateway.proxy import upstream as pool
from gateway.proxy import websocket
from gateway.proxy.answer import RawAnswer, answer_head
from gateway.proxy.headers import (
    KEY_ID_HEADER,
    REQUEST_ID_HEADER,
    SYSTEM_HEADER,
    TENANT_HEADER,
    check_host,
    client_ip,
    decode_headers,
    downstream_response_headers,
    request_id_from,
    upstream_request_headers,
)
from gateway.proxy.origins import Origins
from gateway.routes import (
    HTTP_METHODS,
    CaptureOptions,
    Route,
    RouteMatch,
    RouteTable,
)
from gateway.settings import Settings
from gateway.sync.recorder import SyncRecorder
from gateway.sync.traffic import Call, report_for
from gateway.web.responses import error_payload, error_response

if TYPE_CHECKING:
    from gateway.webhooks.emit import RouteEmitter

log = logging.getLogger(__name__)
access_log = logging.getLogger("gateway.access")

CHUNK = 64 * 1024  # bytes per read when streaming bodies
CLIENT_GONE_STATUS = 499  # nginx's "client closed request": the caller hung up mid-answer
NO_BODY_STATUSES = frozenset({204, 304})
MAX_PATH_DECODES = 3  # percent-decodings undone when looking for dot segments (%25252e)
_SLOW_BODY = "the client stopped sending its request body"
_GONE = "the client closed the connection while sending its request body"


@dataclass(slots=True, eq=False)
class RouteConfig:
    """What one reading of routes.yaml gives the proxy: the route table, each route's
    capture policy, the upstreams' pools; and how many calls started on it are running."""

    routes: RouteTable
    policies: dict[str, CapturePolicy]
    origins: Origins
    calls: int = 0


async def _close_pools(pools: list[pool.UpstreamPool]) -> None:
    await asyncio.gather(*(p.close() for p in pools))


class Proxy:
    def __init__(
        self,
        settings: Settings,
        routes: RouteTable,
        session: aiohttp.ClientSession,
        origins: Origins,
        writer: LogWriter,
        auth: Authenticator,
        translator: Translator | None = None,
        sync: SyncRecorder | None = None,
        emitter: RouteEmitter | None = None,
    ) -> None:
        self.settings = settings
        self.translator = translator
        self.sync = sync
        self.emitter = emitter  # webhook events from routes with `emit` (gateway/webhooks)
        self.auth = auth
        self.limiter = RateLimiter()
        self.session = session  # WebSocket upgrades only
        self.websockets = websocket.Relay(
            session, translator, settings.stream_threshold_bytes, settings.trusted_proxies
        )
        self.writer = writer
        fields = DEFAULT_REDACT_FIELDS | frozenset(settings.capture_redact_fields)
        headers = DEFAULT_REDACT_HEADERS | frozenset(settings.capture_redact_headers)
        self.default_policy = CapturePolicy.build(
            CaptureOptions(), settings.capture_max_body_bytes, fields, headers
        )
        self._redact = (fields, headers)
        # routes.yaml as the proxy uses it; a reload swaps it whole (see reload).
        self.config = RouteConfig(routes, self._policies(routes), origins)
        self._retiring: set[RouteConfig] = set()  # replaced, calls still running on them
        self._closing: set[asyncio.Task[None]] = set()
        self.in_flight = 0
        self.shutting_down = False  # set by the app's on_shutdown: cut calls are 503, not 499
        metrics.IN_FLIGHT.set_function(lambda: self.in_flight)
        # Metric series resolved once per label set (.labels() takes a lock every call) and
        # counted as plain numbers, added to the series when metrics are read.
        self._counters: dict[tuple[str, str, int], metrics.Tally] = {}
        self._durations: dict[str, tuple[metrics.HistogramTally, metrics.HistogramTally]] = {}

    @property
    def routes(self) -> RouteTable:
        return self.config.routes

    def _policies(self, routes: RouteTable) -> dict[str, CapturePolicy]:
        fields, headers = self._redact
        most = self.settings.capture_max_body_bytes
        return {r.name: CapturePolicy.build(r.capture, most, fields, headers) for r in routes}

    def reload(self, routes: RouteTable) -> None:
        """Serve new calls with ``routes`` (already validated); calls in flight finish on
        the routes they started with. Pools of upstreams whose origin and settings did not
        change are kept (warm connections); the others close once no call uses them."""
        old = self.config
        origins = old.origins.replaced(routes.upstreams)
        self.config = RouteConfig(routes, self._policies(routes), origins)
        if old.calls:
            self._retiring.add(old)
        else:
            self._retire(old)

    def _retire(self, config: RouteConfig) -> None:
        """No call runs on ``config`` any more: close its pools that no live config has."""
        self._retiring.discard(config)
        live = {id(p) for c in (self.config, *self._retiring) for p in c.origins.pools.values()}
        pools = [p for p in config.origins.pools.values() if id(p) not in live]
        if pools:
            task = asyncio.get_running_loop().create_task(_close_pools(pools))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close every upstream pool (at shutdown, after the last call)."""
        pools = {id(p): p for c in (self.config, *self._retiring) for p in c.origins.pools.values()}
        self._retiring.clear()
        await asyncio.gather(*self._closing, return_exceptions=True)
        await _close_pools(list(pools.values()))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Entry point for every request that is not the gateway's own endpoint."""
        policy = self.default_policy
        ex = self.exchange_for(request)
        self.in_flight += 1
        config = self.config  # this call's routes, whatever a reload does meanwhile
        config.calls += 1
        match = None
        answer: web.StreamResponse | None = None
        try:
            check_host(request.headers)  # before the host steers the match
            match = config.routes.match(request.method, request.rel_url.raw_path, request.host)
            route = match.route
            ex.route, ex.upstream = route.name, route.upstream.name
            policy = config.policies[route.name]
            _capture_request(request, policy, ex)
            _check_path(request.rel_url.raw_path)
            self._check_headers(request)
            identity = None
            if not route.public:
                key = await self.auth.authenticate(request.headers)
                identity = self._authorize(key, route, ex)
            if websocket.is_upgrade(request):
                return await websocket.relay(self.websockets, request, route, ex, identity)
            upstream = config.origins[route.upstream.name]
            answer = await self._proxy_http(request, route, upstream, policy, ex, identity)
            return answer
        except GatewayError as exc:
            if not ex.request_headers:
                _capture_request(request, policy, ex)
            return await _answer_refusal(request, exc, self._refuse(exc, ex))
        except asyncio.CancelledError:
            self.note_cancelled(request, ex)
            raise
        except Exception as exc:  # never a traceback to the client
            log.exception(
                "unexpected error proxying %s %s",
                request.method,
                ex.path,
                extra={"request_id": ex.request_id, "route": ex.route},
            )
            return self._refuse(GatewayError("the gateway failed to handle this request"), ex, exc)
        finally:
            self.in_flight -= 1
            config.calls -= 1
            if not config.calls and config in self._retiring:
                self._retire(config)
            self._finish(ex)
            if not isinstance(answer, RawAnswer):  # it waits for the log line itself
                self.writer.flush_turn()  # no answer leaves before its row is in the log
            if match is not None and match.route.sync is not None:
                self._record_sync(match, ex)

    def exchange_for(self, request: web.BaseRequest) -> Exchange:
        """A new exchange for ``request``, its headers not captured yet."""
        return Exchange(
            created_at=now_utc(),
            started=time.perf_counter(),
            request_id=request_id_from(request.headers),
            method=request.method,
            path=clean_text(request.raw_path.split("?", 1)[0]),
            query="",  # set with the headers, once the route's redaction is known
            request_headers=[],
            client_ip=client_ip(request, self.settings.trusted_proxies),
            user_agent=_user_agent(request),
        )

    def note_cancelled(self, request: web.BaseRequest, ex: Exchange) -> None:
        """Why a handler was cancelled: the caller hung up (499), or the gateway cut the
        call off at shutdown (503 ``shutting_down``). aiohttp closes the connection itself
        just before it cancels a call at shutdown; the gateway's protocol handler tells
        whether the caller had gone first (gateway.proxy.server), else a closed transport
        counts as the caller's doing."""
        left = getattr(request.protocol, "caller_left", None)
        if left is None:
            left = request.transport is None or request.transport.is_closing()
        if self.shutting_down and not left:
            if ex.status != 101:
                ex.status = ShuttingDown.status
            ex.fail(ShuttingDown.code, "the gateway shut down before the call ended")
            return
        if ex.status != 101:
            ex.status = CLIENT_GONE_STATUS
        if ex.error_code is None:  # else that error is why it ended (a refused message)
            ex.fail("client_disconnected", "client closed the connection before the answer")

    async def refuse_target(self, request: web.BaseRequest) -> web.Response:
        """CONNECT (the gateway is no forward proxy) and ``OPTIONS *`` (asterisk-form: no
        route applies): JSON and a row, before anything else (gateway.proxy.server)."""
        ex = self.exchange_for(request)
        _capture_request(request, self.default_policy, ex)
        exc: GatewayError
        if request.method == "CONNECT":
            exc = MethodNotAllowed(
                "CONNECT is not supported: the gateway is not a forward proxy",
                tuple(sorted(HTTP_METHODS)),
            )
        else:
            exc = BadRequest("the asterisk-form target (OPTIONS *) is not supported")
        return self.refuse_now(ex, exc)

    def refuse_now(self, ex: Exchange, exc: GatewayError) -> web.Response:
        """Answer ``exc`` as JSON and log the exchange (a call refused outside handle())."""
        resp = self._refuse(exc, ex)
        self.record(ex)
        self.writer.flush_turn()
        return resp

    def record(self, ex: Exchange) -> None:
        """Count and log one finished exchange: metrics, its api_logs row, the access log."""
        self._finish(ex)

    def _check_headers(self, request: web.Request) -> None:
        """431 for more or larger request headers than GATEWAY_MAX_HEADERS/_HEADER_BYTES."""
        raw = request.raw_headers
        limit, most = self.settings.max_header_bytes, self.settings.max_headers
        if len(raw) > most:
            raise HeadersTooLarge(f"{len(raw)} request headers; at most {most} are accepted")
        size = sum(len(name) + len(value) + 4 for name, value in raw)  # ": " and CRLF
        if size > limit:
            raise HeadersTooLarge(f"request headers of {size} bytes exceed the {limit} byte limit")

    def _record_sync(self, match: RouteMatch, ex: Exchange) -> None:
        """Queue the call's sync outcome (written in batches, never awaited here)."""
        assert match.route.sync is not None
        found = report_for(match.route.sync, _sync_call(match, ex))
        if found is not None and self.sync is not None:
            self.sync.submit(*found)

    # -- who is calling ----------------------------------------------------------------

    def _authorize(self, key: ApiKey, route: Route, ex: Exchange) -> dict[str, str]:
        """Check an authenticated key may use the route and apply its rate limits; the
        identity headers the upstream gets."""
        ex.tenant_id, ex.api_key_id = key.tenant_id_str, key.id_str
        ex.external_system = key.external_system
        if key.role is not Role.PARTNER:
            raise refuse(
                "forbidden",
                Forbidden(
                    f"proxied routes need a partner key; this key's role is {key.role.value}"
                ),
            )
        if route.external_systems and key.external_system not in route.external_systems:
            raise refuse(
                "forbidden",
                Forbidden(
                    f"external system {key.external_system!r} may not use route {route.name!r}"
                ),
            )
        if route.rate_limit is not None or key.rate_limit_per_minute is not None:
            self._rate_limit(key, route)
        return {
            TENANT_HEADER: key.tenant_id_str,
            SYSTEM_HEADER: key.external_system or "",
            KEY_ID_HEADER: key.id_str,
        }

    def _rate_limit(self, key: ApiKey, route: Route) -> None:
        wait = 0.0
        if route.rate_limit is not None:
            rl = route.rate_limit
            wait = self.limiter.take(key.id, route.name, rl.requests, rl.per_seconds)
        if key.rate_limit_per_minute is not None:
            wait = max(wait, self.limiter.take(key.id, "*", key.rate_limit_per_minute, 60.0))
        if wait > 0:
            metrics.RATE_LIMITED.labels(route.name).inc()
            raise RateLimited(f"rate limit exceeded for this key on route {route.name!r}", wait)

    # -- HTTP -----------------------------------------------------------------------------

    async def _proxy_http(
        self,
        request: web.Request,
        route: Route,
        upstream: pool.UpstreamPool,
        policy: CapturePolicy,
        ex: Exchange,
        identity: dict[str, str] | None,
    ) -> web.StreamResponse:
        tr = route.translate if self.translator is not None else None
        whole = self.settings.stream_threshold_bytes if tr and tr.reads_request_body else 0
        parse = tr is not None and wants_parsed_request(tr)
        # A body the translation scanner reads is captured after it: the scanner checks its
        # syntax on the way, so the capture need not (CapturePolicy.body's ``checked``).
        later = tr is not None and scans_request_text(tr)
        body = streamed = await self._request_body(request, policy, ex, whole, parse, later)
        raw_path, query = request.rel_url.raw_path, request.rel_url.raw_query_string
        flow: Flow | None = None
        if route.translate is not None and self.translator is not None:  # ID translation
            try:
                flow = self.translator.start(
                    route, ex.tenant_id or "", ex.external_system or "", ex.api_key_id
                )
                ex.translated = flow.record
                parsed = None
                if parse and type(body) is bytes:  # parsed by its capture, for translation
                    parsed = ex.request_body.parsed_from(body)
                raw_path, query, body = await flow.inbound(raw_path, query, body, parsed)
            finally:  # refused or not, the row keeps the body as the partner sent it
                if later and type(streamed) is bytes:
                    h, checked = request.headers, flow is not None and flow.request_checked
                    ctype, enc = h.get("Content-Type", ""), h.get("Content-Encoding", "")
                    _capture_request_body(policy, ex, streamed, ctype, enc, checked=checked)
            if route.sync is not None:  # sync status is keyed on the internal ids
                internal = route.regex.fullmatch(raw_path)
                ex.forwarded_params = internal.groupdict() if internal else {}
                ex.forwarded_body = flow.forwarded
        headers = upstream_request_headers(
            request,
            ex.request_id,
            self.settings.trusted_proxies,
            identity=identity,
            drop_encoding=flow is not None,  # the answer must be readable to translate
        )
        length = _declared_length(request, body, streamed)
        target = route.upstream_target(raw_path, query)
        up = route.upstream
        t0 = time.perf_counter()
        try:
            answer = await upstream.request(
                request.method, target, headers, body, content_length=length
            )
            async with answer:
                ex.upstream_ms = (time.perf_counter() - t0) * 1000.0
                resp = await self._relay(request, answer, policy, ex, flow)
            if (
                route.emit
                and self.emitter is not None
                and isinstance(resp, RawAnswer | web.Response)
            ):
                # The upstream's own answer (internal ids), not the partner's translation.
                body = ex.upstream_body
                if body is None:
                    body = resp.body if isinstance(resp.body, bytes) else b""
                await self.emitter.answered(
                    route,
                    request.method,
                    ex.status,
                    ex.tenant_id,
                    body,
                    origin_system=ex.external_system,  # echo suppression
                )
            return resp
        except pool.UpstreamTimeout as exc:
            msg = f"upstream {up.name!r} did not answer within its timeout"
            raise UpstreamTimeout(msg) from exc
        except pool.UpstreamConnectError as exc:
            raise UpstreamUnavailable(f"upstream {up.name!r} refused the connection") from exc
        except pool.UpstreamPoolError as exc:  # not HTTP, or closed before the answer ended
            raise UpstreamError(f"upstream {up.name!r} failed: {type(exc).__name__}") from exc

    async def _request_body(
        self,
        request: web.Request,
        policy: CapturePolicy,
        ex: Exchange,
        whole: int = 0,
        parse: bool = False,
        later: bool = False,
    ) -> bytes | Any | None:
        """The body to send upstream: bytes when small and sized, else a capturing stream.
        With ``whole``, a body of unknown length (chunked) is read whole when it ends within
        that many bytes (a translated route must see all of it); else it is streamed on.
        With ``parse``, a body read whole is parsed by its capture, for translation; with
        ``later``, a body read whole is left for the caller to capture (_capture_request_body)."""
        if not request.body_exists:
            return None
        size = request.content_length
        limit = self.settings.max_request_bytes
        if size is not None and size > limit:
            raise PayloadTooLarge(f"request body of {size} bytes exceeds the {limit} byte limit")
        ctype = request.headers.get("Content-Type", "")
        enc = request.headers.get("Content-Encoding", "")
        timeout = self.settings.client_timeout
        if size is None and whole:
            most = min(whole, limit)
            head = await _read_up_to(request, most, timeout)
            if len(head) <= most:  # it ended: the whole body
                if not later:
                    _capture_request_body(policy, ex, head, ctype, enc, parse=parse)
                return head
            # Logged as far as it was read, should the call end before it is streamed on
            # (too large, or refused by a strict translated route); streaming replaces it.
            seen = policy.body(policy.request_body, head, len(head) + 1, ctype, enc)
            ex.request_body = seen.with_size(len(head))
            if len(head) > limit:
                raise PayloadTooLarge(f"request body exceeds the {limit} byte limit")
            return _StreamCapture(request, policy, ex, limit, ctype, enc, timeout, head).stream()
        if size is not None and size <= self.settings.stream_threshold_bytes:
            data = await _read_sized(request, limit, timeout)
            if not later:
                _capture_request_body(policy, ex, data, ctype, enc, parse=parse)
            return data
        return _StreamCapture(request, policy, ex, limit, ctype, enc, timeout).stream()

    async def _relay(
        self,
        request: web.Request,
        upstream: pool.UpstreamResponse,
        policy: CapturePolicy,
        ex: Exchange,
        flow: Flow | None = None,
    ) -> web.StreamResponse:
        """Send the upstream's answer to the caller, buffered when small, streamed otherwise."""
        status = ex.status = upstream.status
        names = upstream.lower_names()
        ex.response_headers = capture_raw_headers(upstream.headers, names, policy.redact_headers)
        ctype = _header(upstream, b"content-type")
        enc = _header(upstream, b"content-encoding")
        size = upstream.content_length
        if request.method == "HEAD" or status in NO_BODY_STATUSES:
            upstream.release()
            headers = downstream_response_headers(decode_headers(upstream.headers))
            headers[REQUEST_ID_HEADER] = ex.request_id
            resp = web.Response(status=status, headers=headers)
            if size is not None and request.method == "HEAD":
                resp.headers["Content-Length"] = str(size)
            return resp
        small = size is not None and size <= self.settings.stream_threshold_bytes
        translating = flow is not None and flow.translates_response
        if small or translating:
            # A failure here (before a byte went to the caller) is answered by _proxy_http.
            if small or flow is None:
                data = await upstream.read()
            else:
                data = await flow.read_capped(upstream)
            written = None
            if flow is not None and translating:
                ex.upstream_body = data  # route events carry internal ids
                data, written = await flow.outbound(status, data, enc)
            if written is not None:
                ex.response_body = policy.serialised_body(policy.response_body, written, data)
            else:
                checked = flow is not None and flow.answer_checked  # JSON the scanner wrote
                ex.response_body = policy.body(
                    policy.response_body, data, len(data), ctype, enc, checked=checked
                )
            if request.transport is None or request.transport.is_closing():
                ex.status = CLIENT_GONE_STATUS
                ex.fail("client_disconnected", "client closed the connection before the answer")
            head = answer_head(upstream.headers, ex.request_id, len(data), names)
            return RawAnswer(status, head, data, self.writer)
        headers = downstream_response_headers(decode_headers(upstream.headers))
        headers[REQUEST_ID_HEADER] = ex.request_id
        return await self._stream_response(request, upstream, headers, policy, ex, ctype, enc)

    async def _stream_response(
        self,
        request: web.Request,
        upstream: pool.UpstreamResponse,
        headers: CIMultiDict[str],
        policy: CapturePolicy,
        ex: Exchange,
        ctype: str,
        enc: str,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=upstream.status, headers=headers)
        if upstream.content_length is not None:
            resp.content_length = upstream.content_length
        cap = policy.max_body_bytes if policy.response_body else 0
        kept = bytearray()
        total = 0
        try:
            await resp.prepare(request)
            async for chunk in upstream:
                total += len(chunk)
                if len(kept) < cap:
                    kept += chunk[: cap - len(kept) + 1]
                await resp.write(chunk)
            await resp.write_eof()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError) as exc:
            upstream.close()
            ex.status = CLIENT_GONE_STATUS
            ex.fail("client_disconnected", f"client closed the connection mid-answer: {exc}")
        except pool.UpstreamPoolError as exc:
            # Headers are gone already: all we can do is cut the answer short and say so.
            ex.fail(
                "upstream_stream_error",
                f"upstream {ex.upstream!r} broke off mid-answer: {type(exc).__name__}",
            )
            request.transport and request.transport.close()  # type: ignore[func-returns-value]
        finally:
            ex.response_body = policy.body(policy.response_body, bytes(kept), total, ctype, enc)
        return resp

    # -- refusals and bookkeeping ------------------------------------------------------

    def _refuse(
        self, exc: GatewayError, ex: Exchange, cause: BaseException | None = None
    ) -> web.Response:
        ex.status = exc.status
        ex.fail(
            exc.code, exc.message if cause is None else f"{exc.message}: {type(cause).__name__}"
        )
        if ex.route is not None and isinstance(exc, UpstreamError):
            metrics.UPSTREAM_ERRORS.labels(ex.route, exc.code).inc()
        payload = error_payload(exc, ex.request_id)
        resp = error_response(exc, ex.request_id)
        ex.response_headers = [[k, v] for k, v in resp.headers.items()]
        size = len(resp.body) if isinstance(resp.body, bytes) else 0
        ex.response_body = Body(payload, "json", size, False)
        return resp

    def _finish(self, ex: Exchange) -> None:
        elapsed = time.perf_counter() - ex.started
        route = ex.route or "unmatched"
        # Label values stay bounded: unknown methods (any token is legal HTTP) become OTHER.
        method = ex.method if ex.method in HTTP_METHODS else "OTHER"
        key = (route, method, ex.status)  # the status itself: its class is computed once
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = metrics.tally(
                metrics.REQUESTS, route, method, metrics.status_class(ex.status)
            )
        counter.n += 1
        durations = self._durations.get(route)
        if durations is None:
            durations = self._durations[route] = (
                metrics.histogram_tally(metrics.REQUEST_DURATION, route),
                metrics.histogram_tally(metrics.UPSTREAM_DURATION, route),
            )
        durations[0].observe(elapsed)
        if ex.upstream_ms is not None:
            durations[1].observe(ex.upstream_ms / 1000.0)
        self.writer.submit(ex.to_row(elapsed * 1000.0))
        if self.settings.access_log:
            access_log.info(
                "%s %s %d",
                ex.method,
                ex.route or "-",
                ex.status,
                extra={
                    "request_id": ex.request_id,
                    "route": ex.route,
                    "method": ex.method,
                    "status": ex.status,
                    "duration_ms": round(elapsed * 1000.0, 3),
                    "tenant_id": ex.tenant_id,
                    "external_system": ex.external_system,
                    "error_code": ex.error_code,
                },
            )


class _StreamCapture:
    """Streams a request body upstream while keeping the first bytes for the log."""

    def __init__(
        self,
        request: web.Request,
        policy: CapturePolicy,
        ex: Exchange,
        limit: int,
        ctype: str,
        enc: str,
        timeout: float,
        head: bytes = b"",
    ) -> None:
        self.request, self.policy, self.ex = request, policy, ex
        self.limit, self.ctype, self.enc = limit, ctype, enc
        self.timeout = timeout
        self.head = head  # bytes of the body already read, sent first

    async def stream(self) -> Any:
        cap = self.policy.max_body_bytes if self.policy.request_body else 0
        head = self.head
        kept = bytearray(head[: cap + 1])
        total = len(head)
        try:
            if head:
                yield head
            while True:
                chunk = await _read_chunk(self.request, self.timeout)
                if not chunk:
                    break
                total += len(chunk)
                if total > self.limit:
                    raise PayloadTooLarge(f"request body exceeds the {self.limit} byte limit")
                if len(kept) < cap:
                    kept += chunk[: cap - len(kept) + 1]
                yield chunk
        finally:
            self.ex.request_body = self.policy.body(
                self.policy.request_body, bytes(kept), total, self.ctype, self.enc
            )


async def _read_chunk(request: web.Request, timeout: float) -> bytes:
    """The next piece of a request body (b"" at its end); a client that sends nothing for
    ``timeout`` seconds gets 408, one that hangs up is logged as 499 (also while its body
    is streamed upstream: the upstream's failure is not the cause then)."""
    try:
        async with asyncio.timeout(timeout):
            return await request.content.read(CHUNK)
    except TimeoutError:
        raise RequestTimeout(_SLOW_BODY) from None
    except ConnectionResetError:
        raise ClientGone(_GONE) from None


async def _read_up_to(request: web.Request, most: int, timeout: float) -> bytes:
    """A body of unknown length read until it ends or is over ``most`` bytes (then the
    bytes read so far, more than ``most``); each read waits ``timeout`` seconds at most."""
    data = bytearray()
    while len(data) <= most:
        chunk = await _read_chunk(request, timeout)
        if not chunk:
            break
        data += chunk
    return bytes(data)


def _capture_request_body(
    policy: CapturePolicy,
    ex: Exchange,
    data: bytes,
    ctype: str,
    enc: str,
    parse: bool = False,
    checked: bool = False,
) -> None:
    """The row's request body, from a body read whole (see CapturePolicy.body)."""
    ex.request_body = policy.body(
        policy.request_body, data, len(data), ctype, enc, parse=parse, checked=checked
    )


async def _read_sized(request: web.Request, limit: int, timeout: float) -> bytes:
    """A body of declared length, read whole; its failures as the caller's errors."""
    try:
        return await _read_body(request, timeout)
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(f"request body exceeds the {limit} byte limit") from exc
    except TimeoutError:  # a slow client must not hold its handler forever
        raise RequestTimeout(_SLOW_BODY) from None
    except ConnectionResetError:
        raise ClientGone(_GONE) from None


async def _read_body(request: web.Request, timeout: float) -> bytes:
    """The whole (small) body; a client that stops sending it for ``timeout`` seconds
    raises TimeoutError. Usually the body came with the headers: then no timer is armed
    (one asyncio.timeout costs ~4 us, on every call with a body)."""
    if request.content.is_eof():
        return await request.read()
    async with asyncio.timeout(timeout):
        return await request.read()


async def _answer_refusal(
    request: web.Request, exc: GatewayError, resp: web.Response
) -> web.Response:
    """A 408 is written and the connection closed at once. Left to aiohttp, a stalled body
    is "drained" for its lingering time (10 s) before the connection closes, so a client
    waiting for the end of the connection saw it long after GATEWAY_CLIENT_TIMEOUT."""
    if not isinstance(exc, RequestTimeout):
        return resp
    resp.force_close()  # Connection: close
    try:
        await resp.prepare(request)
        await resp.write_eof()
    except ConnectionError:
        return resp  # the client is gone already
    request.protocol.force_close()  # no lingering: the rest of the body is not coming
    return resp


def _sync_call(match: RouteMatch, ex: Exchange) -> Call:
    """The finished call as sync reads it: on a translated route, the upstream's side."""
    request_json = ex.forwarded_body
    if request_json is None and ex.request_body.format == "json":
        request_json = ex.request_body.value
    response_json = ex.response_body.value if ex.response_body.format == "json" else None
    if ex.upstream_body:
        try:
            response_json = orjson.loads(ex.upstream_body)
        except orjson.JSONDecodeError:
            response_json = None
    return Call(
        tenant_id=ex.tenant_id,
        external_system=ex.external_system,
        status=ex.status,
        reached_upstream=ex.upstream_ms is not None,
        error_code=ex.error_code,
        error_message=ex.error_message,
        params=ex.forwarded_params if ex.forwarded_params is not None else match.params,
        request_json=request_json,
        response_json=response_json,
    )


def _user_agent(request: web.BaseRequest) -> str | None:
    ua = request.headers.get("User-Agent")
    return clean_text(ua, 512) if ua is not None else None


def _capture_request(request: web.BaseRequest, policy: CapturePolicy, ex: Exchange) -> None:
    """The request's headers and query as the route's policy stores them (redacted)."""
    ex.request_headers = capture_headers(request.headers.items(), policy.redact_headers)
    ex.query = policy.query(request.rel_url.raw_query_string)


def _check_path(raw_path: str) -> None:
    """Refuse dot-segments, raw or percent-encoded (also twice or thrice, and with encoded
    or backslash separators): an upstream that decodes again could escape the prefix."""
    path = raw_path
    for _ in range(MAX_PATH_DECODES):
        if "%" not in path:
            break
        path = unquote(path)
    if "." not in path:
        return
    for segment in path.replace("\\", "/").split("/"):
        if segment in (".", ".."):
            raise BadRequest("path must not contain '.' or '..' segments", code="bad_path")


def _declared_length(request: web.Request, body: object, read: object) -> int | None:
    """A streamed body keeps the Content-Length its caller declared (it is sent unchunked
    then), so upstreams that need a length (411) take large uploads too; not when a
    translation replaced the ``read`` body. The stream sends exactly that many bytes:
    aiohttp's parser ends the body there, and a caller that sends fewer and hangs up is a
    499 (or a 408 when it stalls). None: bytes carry their own length, others go chunked."""
    if body is read and _is_stream(body):
        return request.content_length
    return None


def _header(answer: pool.UpstreamResponse, name: bytes) -> str:
    value = answer.header(name)
    return value.decode("latin-1") if value is not None else ""


def _is_stream(body: object) -> bool:
    return body is not None and not isinstance(body, bytes)
