"""A keep-alive HTTP/1.1 connection pool for one upstream origin: asyncio.Protocol + httptools.

The proxy's hot path spends a third of its CPU in aiohttp's ClientSession; this pool does
the same job with less: one ``write()`` of head and body, the answer parsed by llhttp
(httptools) straight into the response object, no per-call timers.

    pool = UpstreamPool("http://127.0.0.1:8080", read_timeout=1.5)
    resp = await pool.request("GET", "/v1/reservations/7?x=1", [(b"Accept", b"*/*")])
    body = await resp.read()                # or: async for chunk in resp.iter_chunks(): ...
    await pool.close()

Contract:

* Headers are raw bytes both ways: the request's as ``(name, value)`` pairs, the answer's
  as received (``UpstreamResponse.headers``, original case, in order, repeats kept). The
  pool writes ``Host``, the body framing (``Content-Length`` or ``Transfer-Encoding:
  chunked``) and ``Connection: close`` itself; callers drop hop-by-hop headers (the
  pipeline already does). CR or LF inside a header or the target is refused (ValueError).
* A body is bytes (sent with its length), or an async iterable of bytes: with
  ``content_length`` it is sent as exactly that many bytes, else chunked. Streaming waits
  for the transport to drain (pause_writing/resume_writing). An answer that comes while
  the body is still being sent stops the upload (the connection is then not reused).
* Answers by Content-Length, chunked (trailers kept in ``trailers``) and read-until-close;
  none for HEAD, 1xx, 204 and 304. Interim 1xx answers (100 Continue, 103) are skipped;
  101 is a protocol error (upgrades go through the WebSocket relay, not here). Bodies
  stream to the caller; past ``high_water`` buffered bytes the socket stops being read
  until the caller catches up.
* A connection is reused only after a complete answer that allows it (HTTP/1.1 without
  ``Connection: close``; HTTP/1.0 with keep-alive), when the request did not ask to close
  and no stray bytes followed. One that the upstream closed while idle is dropped as soon
  as the loop sees it; when that happens after it was picked, the call is repeated once
  on a fresh connection if that is safe: no byte of the answer came, and the method is
  idempotent or the request never left (and its body can be sent again).
* Timeouts: ``connect_timeout`` for the TCP (and TLS) connect and also for waiting for a
  free connection when the pool is at ``max_connections``; ``read_timeout`` for silence
  while the upstream owes bytes (not while the caller's own body iterator or the
  caller's slowness holds things up); ``total_timeout`` (optional) from sending the
  request to the end of the answer. Read and total timeouts are checked by one timer per
  pool, every ``timer_resolution`` seconds, so they fire up to two ticks late; they cost
  nothing per call.
* Errors: UpstreamConnectError (no connection), UpstreamTimeout (also a TimeoutError;
  ``phase`` says which), UpstreamProtocolError (not valid HTTP/1.1), UpstreamClosed (the
  connection ended before the answer did), all UpstreamPoolError. Connect errors are
  retried ``connect_retries`` times with exponential backoff for idempotent methods with
  a replayable body. Exceptions raised by the caller's body iterator pass through as they
  are (the connection is closed).

For the pipeline's answers: UpstreamConnectError is 502 ``upstream_unavailable``,
UpstreamTimeout 504 ``upstream_timeout``, UpstreamProtocolError and UpstreamClosed 502
``upstream_error`` (an UpstreamClosed with ``request_sent`` may have been acted upon).

A pool belongs to the event loop it was created in (create it inside the running loop,
e.g. in an aiohttp cleanup context) and is closed with ``await pool.close()``.
"""

from __future__ import annotations

import asyncio
import re
import ssl as ssl_module
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import Final, Literal, cast
from urllib.parse import urlsplit

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from gateway.routes import IDEMPOTENT_METHODS

Header = tuple[bytes, bytes]
RequestBody = bytes | bytearray | memoryview | AsyncIterable[bytes] | None
Phase = Literal["connect", "pool", "read", "total"]

DEFAULT_CONNECT_TIMEOUT: Final = 5.0
DEFAULT_READ_TIMEOUT: Final = 30.0
# Shorter than the shortest common server keep-alive (Node.js closes idle connections after
# 5 s): a connection the pool drops itself is never one the upstream drops under a request.
DEFAULT_IDLE_TIMEOUT: Final = 4.0
DEFAULT_MAX_CONNECTIONS: Final = 100
DEFAULT_HIGH_WATER: Final = 256 * 1024  # buffered answer bytes before the socket is paused
DEFAULT_MAX_HEADER_BYTES: Final = 64 * 1024  # llhttp itself has no limit
SPLIT_WRITE: Final = 64 * 1024  # larger bodies are written apart from the head, not copied
_METHOD_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_METHODS: Final = {m: m.encode() for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")}
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})  # sent "Content-Length: 0" bodiless
_NO_BODY: Final = b"Content-Length: 0\r\n"
_BAD_TARGET: Final = re.compile(rb"[\x00-\x20\x7f]")  # controls and space
_INF: Final = float("inf")


class UpstreamPoolError(Exception):
    """The exchange with the upstream failed."""


class UpstreamConnectError(UpstreamPoolError):
    """No connection: refused, unreachable, name not resolved, TLS handshake failed."""


class UpstreamTimeout(UpstreamPoolError, TimeoutError):
    """A timeout; ``phase`` is "connect", "pool" (no free connection), "read" or "total"."""

    def __init__(self, message: str, phase: Phase) -> None:
        super().__init__(message)
        self.phase: Phase = phase


class UpstreamProtocolError(UpstreamPoolError):
    """The upstream's answer is not valid HTTP/1.1, too large a head, or an upgrade."""


class UpstreamClosed(UpstreamPoolError):
    """The connection ended before the answer did (or the pool was closed).

    ``request_sent``: the whole request was handed to the socket, so the upstream may have
    acted on it; ``response_started``: some bytes of an answer had come."""

    def __init__(self, message: str, *, request_sent: bool, response_started: bool) -> None:
        super().__init__(message)
        self.request_sent = request_sent
        self.response_started = response_started


class _StopParsing(Exception):
    """Raised from a parser callback to stop llhttp (caught around feed_data)."""


def _until_close(headers: list[Header]) -> bool:
    """Whether an answer with these headers has its body end with the connection: no
    Content-Length and not chunked (llhttp ends CL and chunked bodies itself)."""
    for name, value in headers:
        low = name.lower()
        if low == b"content-length":
            return False
        if low == b"transfer-encoding" and value.rsplit(b",", 1)[-1].strip().lower() == b"chunked":
            return False
    return True


def _head_size(headers: list[Header]) -> int:
    return sum(len(name) + len(value) + 4 for name, value in headers)


class _Conn(asyncio.Protocol):
    """One upstream connection. Parser callbacks fill the current UpstreamResponse."""

    __slots__ = (
        "active",
        "armed",
        "buffered",
        "chunks",
        "closed",
        "complete",
        "deadline",
        "drain",
        "exc",
        "head_bytes",
        "head_limit",
        "head_stop",
        "headers_done",
        "high_water",
        "hlist",
        "idle_since",
        "in_idle",
        "is_head",
        "keep",
        "parser",
        "pool",
        "quiet_since",
        "read_paused",
        "resp",
        "sent",
        "started",
        "streamed",
        "trailers",
        "transport",
        "waiter",
        "write_paused",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = HttpResponseParser(self)
        self.high_water = pool.high_water
        self.head_limit = pool.max_header_bytes
        self.closed = False  # connection_lost seen
        self.in_idle = False
        self.idle_since = 0.0
        self.waiter: asyncio.Future[None] | None = None  # the caller waiting for the answer
        self.drain: asyncio.Future[None] | None = None  # the body sender waiting to write
        self.write_paused = False
        self.read_paused = False
        # The exchange in progress (set for each call by UpstreamPool._exchange).
        self.resp: UpstreamResponse | None = None
        self.hlist: list[Header] = []  # where on_header appends: the headers, then trailers
        self.trailers: list[Header] = []
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.head_bytes = 0
        self.sent = False
        self.streamed = False
        self.started = False
        self.headers_done = False
        self.complete = False
        self.keep = True
        self.is_head = False
        self.head_stop = False
        self.exc: UpstreamPoolError | None = None
        self.armed = False  # the read timeout applies (the upstream owes bytes)
        self.active = False  # bytes moved since the timer last looked
        self.quiet_since = 0.0
        self.deadline = _INF

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.active = True
        if self.resp is None or self.complete:
            # Bytes nobody asked for: the framing of this connection cannot be trusted.
            self.keep = False
            if self.resp is None:
                self.pool._discard(self)
            return
        self.started = True
        if not self.headers_done:
            self.head_bytes += len(data)  # an upper bound of the head's size so far
        try:
            self.parser.feed_data(data)
        except HttpParserError as exc:
            self._parse_error(exc, data)
        except HttpParserUpgrade:
            self.fail(UpstreamProtocolError("the upstream switched protocols"))
        if not self.headers_done and self.exc is None and self.head_bytes > self.head_limit:
            # llhttp has no limit of its own; 1xx answers count too.
            self.fail(UpstreamProtocolError(f"answer head larger than {self.head_limit} bytes"))
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def eof_received(self) -> bool:
        self._ended()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._ended()
        drain = self.drain
        if drain is not None:
            self.drain = None
            if not drain.done():
                drain.set_result(None)
        self.pool._lost(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.active = True
        drain = self.drain
        if drain is not None:
            self.drain = None
            if not drain.done():
                drain.set_result(None)

    # -- httptools callbacks --------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        if self.complete:  # a second answer in the same read: stray bytes
            raise _StopParsing
        assert self.resp is not None
        self.resp._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.hlist.append((name, value))

    def on_headers_complete(self) -> None:
        resp = self.resp
        assert resp is not None
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                self.fail(UpstreamProtocolError("the upstream switched protocols (101)"))
                raise _StopParsing
            self.hlist.clear()  # an interim answer: forget it, the final one follows
            resp._reason = b""
            return
        if self.head_bytes > self.head_limit and _head_size(self.hlist) > self.head_limit:
            # (head_bytes counts body bytes that came with the head too: then measure)
            self.fail(UpstreamProtocolError(f"answer head larger than {self.head_limit} bytes"))
            raise _StopParsing
        resp.status = status
        self.headers_done = True
        self.hlist = self.trailers
        if self.is_head:  # llhttp cannot be told that a HEAD answer has no body
            self.complete = True
            self.armed = False
            self.keep = self.keep and self.parser.should_keep_alive()
            self.head_stop = True
            raise _StopParsing

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > self.high_water and not self.read_paused:
            self.pause()

    def on_message_complete(self) -> None:
        if not self.headers_done:
            return  # the end of an interim 1xx answer
        self.complete = True
        self.armed = False
        if not self.parser.should_keep_alive():
            self.keep = False
        if self.trailers:
            assert self.resp is not None
            self.resp.trailers = self.trailers
            self.trailers = []

    # -- state changes --------------------------------------------------------------------

    def _parse_error(self, exc: HttpParserError, data: bytes) -> None:
        if self.head_stop:  # our stop after a HEAD answer's head: a fresh parser for reuse
            self.head_stop = False
            self.parser = HttpResponseParser(self)
            if not data.endswith(b"\r\n\r\n"):
                self.keep = False  # bytes after the head, or a head split oddly: not reused
        elif self.complete:
            self.keep = False  # stray bytes after a complete answer
        elif self.exc is None:
            err = UpstreamProtocolError(f"invalid HTTP answer from the upstream: {exc}")
            err.__cause__ = exc
            self.fail(err)

    def _ended(self) -> None:
        """The upstream closed its side (EOF), or the connection is gone."""
        resp = self.resp
        if resp is None:
            self.pool._discard(self)
            return
        if self.complete or self.exc is not None:
            self.keep = False  # (an answer complete but not released yet: not reused)
            return
        if self.headers_done and _until_close(resp.headers):
            self.complete = True  # a body delimited by the end of the connection
            self.armed = False
            self.keep = False
        else:
            where = "mid-body" if self.headers_done else "before the answer's head ended"
            if not self.started:
                where = "before answering"
            self.fail(
                UpstreamClosed(
                    f"the upstream closed the connection {where}",
                    request_sent=self.sent,
                    response_started=self.started,
                )
            )
        self.wake()

    def fail(self, exc: UpstreamPoolError) -> None:
        """End the exchange with ``exc`` (unless its answer is complete) and the connection."""
        if self.exc is None and not self.complete:
            self.exc = exc
        self.keep = False
        self.armed = False
        transport = self.transport
        if transport is not None and not self.closed:
            transport.abort()
        self.pool._forget(self)
        self.wake()
        drain = self.drain
        if drain is not None:
            self.drain = None
            if not drain.done():
                drain.set_result(None)

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def wait(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self.pool._loop.create_future()
        self.waiter = fut
        return fut

    def pause(self) -> None:
        self.read_paused = True
        self.armed = False  # the caller is the slow one now
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def take(self) -> list[bytes]:
        """The body bytes buffered so far; reading resumes if it was paused."""
        chunks = self.chunks
        self.chunks = []
        self.buffered = 0
        if self.read_paused:
            self.read_paused = False
            if not self.complete and self.exc is None:
                self.armed = self.active = True
            if self.transport is not None and not self.closed:
                self.transport.resume_reading()
        return chunks

    async def drained(self) -> None:
        """Wait until the transport takes more bytes (or the connection ends)."""
        if self.closed or self.exc is not None:
            return
        self.armed = self.active = True  # the upstream owes us progress
        fut: asyncio.Future[None] = self.pool._loop.create_future()
        self.drain = fut
        await fut


class UpstreamResponse:
    """The upstream's answer. Read the body with ``read()`` or ``iter_chunks()``; either
    returns the connection to the pool at the body's end. Otherwise call ``release()``
    (reuses the connection if the body is complete, else closes it) or ``close()``, or use
    ``async with``."""

    __slots__ = ("_body", "_conn", "_names", "_reason", "headers", "reused", "status", "trailers")

    def __init__(self, conn: _Conn, reused: bool) -> None:
        self.status = 0
        self.headers: list[Header] = []
        self.trailers: Sequence[Header] = ()  # after a chunked body, if the upstream sent any
        self.reused = reused  # the call went over a connection an earlier call had used
        self._reason = b""
        self._conn: _Conn | None = conn
        self._body: bytes | None = None
        self._names: list[bytes] | None = None

    @property
    def reason(self) -> str:
        return self._reason.decode("latin-1")

    def lower_names(self) -> list[bytes]:
        """The answer's header names in lower case, in the order of ``headers`` (lowered
        once per answer: the pipeline looks several up and filters the rest)."""
        names = self._names
        if names is None:
            names = self._names = [key.lower() for key, _ in self.headers]
        return names

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        names = self._names
        if names is None:
            names = self.lower_names()
        name = name.lower()
        # (`in` first: a failed index() formats the missing name into its ValueError)
        return self.headers[names.index(name)][1] if name in names else None

    @property
    def content_length(self) -> int | None:
        value = self.header(b"content-length")
        return int(value) if value is not None else None

    async def read(self) -> bytes:
        """The whole body (b"" for HEAD, 1xx, 204, 304); the connection goes back to the pool."""
        if self._body is not None:
            return self._body
        conn = self._conn
        if conn is None:
            raise RuntimeError("the response was released before its body was read")
        if conn.complete and not conn.read_paused:  # the usual case: all of it came at once
            chunks = conn.chunks
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        else:
            parts: list[bytes] = []
            while True:
                parts += conn.take()
                if conn.complete:
                    break
                await self._wait(conn)
            body = b"".join(parts)
        self._body = body
        self.release()
        return body

    def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body as it comes, in pieces; the connection goes back to the pool at its end."""
        return self

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        if conn is None:
            raise StopAsyncIteration
        while True:
            if conn.chunks:
                chunks = conn.take()
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if conn.complete:
                self.release()
                raise StopAsyncIteration
            await self._wait(conn)

    async def _wait(self, conn: _Conn) -> None:
        exc = conn.exc
        if exc is None:
            try:
                await conn.wait()
            except BaseException:  # cancelled: the connection's state is unknown
                self.close()
                raise
            exc = conn.exc
        if exc is not None and not conn.chunks:
            self.close()
            raise exc

    def release(self) -> None:
        """Done with the answer: the connection is reused if its body was read to the end
        (or has come in full), else closed."""
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.pool._release(conn)

    def close(self) -> None:
        """Done with the answer; close the connection whatever its state."""
        conn = self._conn
        if conn is not None:
            conn.keep = False
            self.release()

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if exc_info[0] is not None:
            self.close()
        else:
            self.release()


class UpstreamPool:
    """Keep-alive connections to one origin (scheme, host, port); see the module doc."""

    def __init__(
        self,
        origin: str,
        *,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        total_timeout: float | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_idle: int | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        connect_retries: int = 0,
        retry_backoff: float = 0.1,
        high_water: int = DEFAULT_HIGH_WATER,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        timer_resolution: float | None = None,
    ) -> None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) origin: {origin!r}")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ValueError(f"an origin has no path, query or credentials: {origin!r}")
        if max_connections < 1 or connect_timeout <= 0 or read_timeout <= 0:
            raise ValueError("max_connections, connect_timeout and read_timeout must be > 0")
        tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if tls else 80)
        if tls:
            self.ssl: ssl_module.SSLContext | None = ssl or ssl_module.create_default_context()
            self.server_hostname: str | None = server_hostname or self.host
        else:
            if ssl is not None:
                raise ValueError("an ssl context needs an https origin")
            self.ssl, self.server_hostname = None, None
        host = f"[{self.host}]" if ":" in self.host else self.host
        if parts.port is not None and parts.port != (443 if tls else 80):
            host = f"{host}:{parts.port}"
        self._host_line = b" HTTP/1.1\r\nHost: " + host.encode("idna") + b"\r\n"
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.total_timeout = total_timeout
        self.max_connections = max_connections
        self.max_idle = max_connections if max_idle is None else max_idle
        self.idle_timeout = idle_timeout
        self.connect_retries = connect_retries
        self.retry_backoff = retry_backoff
        self.high_water = high_water
        self.max_header_bytes = max_header_bytes
        shortest = min(read_timeout, idle_timeout, total_timeout or _INF)
        self.tick = timer_resolution or min(max(shortest / 10, 0.005), 0.1)
        self.opened = 0  # connections made
        self.retried = 0  # calls repeated on a fresh connection after a stale one failed
        self._conns: set[_Conn] = set()  # connections counted against max_connections
        self._open: set[_Conn] = set()  # transports not closed yet (waited for by close())
        self._idle: deque[_Conn] = deque()  # oldest left, most recently used right
        self._waiters: deque[asyncio.Future[_Conn | None]] = deque()
        self._connecting = 0  # connections being opened (slots taken)
        self._closed = False
        self._all_closed: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._now = 0.0  # the timer's clock, at most a tick old while connections exist
        self._loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def connections(self) -> int:
        return len(self._conns) + self._connecting

    # -- the call ---------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        target: str | bytes,
        headers: Sequence[Header] = (),
        body: RequestBody = None,
        *,
        content_length: int | None = None,
        close: bool = False,
    ) -> UpstreamResponse:
        """Send one request (``target``: path and query, as sent) and return the answer once
        its head has come. The caller reads or releases it (see UpstreamResponse)."""
        if self._closed:
            raise UpstreamClosed("the pool is closed", request_sent=False, response_started=False)
        head, payload, stream = self._prepare(method, target, headers, body, content_length, close)
        idempotent = method in IDEMPOTENT_METHODS
        retries = self.connect_retries if idempotent and stream is None else 0
        idle = self._idle
        if idle:  # a warm connection: the usual case
            conn = idle.pop()
            conn.in_idle = False
            reused = True
        else:
            conn, reused = await self._acquire(False, retries)
        is_head = method == "HEAD"
        try:
            return await self._exchange(
                conn, reused, head, payload, stream, content_length, is_head, close
            )
        except UpstreamClosed as exc:
            safe = not exc.response_started and (idempotent or not exc.request_sent)
            if not (reused and safe and not conn.streamed) or self._closed:
                raise
        self.retried += 1
        conn, reused = await self._acquire(True, retries)
        return await self._exchange(
            conn, reused, head, payload, stream, content_length, is_head, close
        )

    def _prepare(
        self,
        method: str,
        target: str | bytes,
        headers: Sequence[Header],
        body: RequestBody,
        content_length: int | None,
        close: bool,
    ) -> tuple[bytes, bytes, AsyncIterable[bytes] | None]:
        """(the head with a small body, a large body sent apart, a streamed body)."""
        method_b = _METHODS.get(method) or _method_bytes(method)
        if isinstance(target, str):  # (str checks: `in` on bytes tries int() first, slowly)
            if not target or " " in target or not target.isprintable():
                raise ValueError(f"not a request target: {target!r}")
            target_b = target.encode("utf-8", "surrogateescape")
        else:
            if not target or _BAD_TARGET.search(target):
                raise ValueError(f"not a request target: {target!r}")
            target_b = target
        stream = None
        payload = b""
        if body is None and not close:
            framing = _NO_BODY if method in _BODY_METHODS else b""
        else:
            payload, stream, framing = _framing(method, body, content_length, close)
        parts: tuple[bytes, ...]
        if headers:
            lines = b"\r\n".join(map(b": ".join, headers))
            n = len(headers) - 1
            if lines.count(b"\n") != n or lines.count(b"\r") != n:
                raise ValueError("CR or LF inside a request header")
            parts = (method_b, b" ", target_b, self._host_line, lines, b"\r\n", framing, b"\r\n")
        else:
            parts = (method_b, b" ", target_b, self._host_line, framing, b"\r\n")
        if not payload or len(payload) >= SPLIT_WRITE:
            return b"".join(parts), payload, stream
        return b"".join((*parts, payload)), b"", stream

    async def _exchange(
        self,
        conn: _Conn,
        reused: bool,
        head: bytes,
        payload: bytes,
        stream: AsyncIterable[bytes] | None,
        content_length: int | None,
        is_head: bool,
        close: bool,
    ) -> UpstreamResponse:
        resp = UpstreamResponse(conn, reused)
        # The exchange's state (inline: this runs for every call).
        conn.resp = resp
        conn.hlist = resp.headers
        conn.buffered = conn.head_bytes = 0
        conn.sent = conn.streamed = conn.started = conn.headers_done = conn.complete = False
        conn.keep = not close
        conn.is_head = is_head
        conn.exc = None
        conn.armed = conn.active = True
        total = self.total_timeout
        conn.deadline = self._loop.time() + total if total else _INF
        if conn.trailers:
            conn.trailers = []
        transport = conn.transport
        try:
            if conn.closed or transport is None or transport.is_closing():
                raise UpstreamClosed(
                    "the upstream closed the connection before the request was sent",
                    request_sent=False,
                    response_started=False,
                )
            transport.write(head)
            if payload:
                transport.write(payload)
            if transport.is_closing() and conn.exc is None:  # the write itself failed
                raise UpstreamClosed(
                    "the connection failed while the request was written",
                    request_sent=False,
                    response_started=conn.started,
                )
            if stream is not None:
                await self._send_stream(conn, stream, content_length)
            conn.sent = True
            while not conn.headers_done:
                if conn.exc is not None:
                    raise conn.exc
                conn.waiter = waiter = self._loop.create_future()
                await waiter
        except BaseException:
            resp.close()
            raise
        return resp

    async def _send_stream(
        self, conn: _Conn, stream: AsyncIterable[bytes], content_length: int | None
    ) -> None:
        transport = conn.transport
        assert transport is not None
        sent = 0
        conn.armed = False  # waiting for the caller's body is not the upstream's silence
        iterator = aiter(stream)
        finished = False
        try:
            async for chunk in iterator:
                if conn.headers_done or conn.exc is not None or conn.closed:
                    conn.keep = False  # an early answer, or the end: the upload stops here
                    break
                if not chunk:
                    continue  # an empty chunk would end a chunked body
                conn.streamed = True
                size = len(chunk)
                sent += size
                if content_length is None:
                    transport.writelines((b"%x\r\n" % size, chunk, b"\r\n"))
                else:
                    if sent > content_length:
                        raise ValueError(f"the body is longer than content_length={content_length}")
                    transport.write(chunk)
                if conn.write_paused:
                    await conn.drained()
                    conn.armed = False
            else:
                if content_length is None:
                    transport.write(b"0\r\n\r\n")
                elif sent != content_length:
                    raise ValueError(
                        f"the body ended after {sent} of content_length={content_length} bytes"
                    )
                finished = True
        finally:
            aclose = getattr(iterator, "aclose", None)
            if not finished and aclose is not None:
                await aclose()  # an async generator's cleanup runs now, not at collection
        conn.armed = conn.active = not conn.complete and conn.exc is None

    # -- connections --------------------------------------------------------------------

    async def _acquire(self, fresh: bool, retries: int) -> tuple[_Conn, bool]:
        """A connection: idle (unless ``fresh``), new, or handed over by a finished call."""
        if self._closed:
            raise UpstreamClosed("the pool is closed", request_sent=False, response_started=False)
        idle = self._idle
        if idle and not fresh:
            conn = idle.pop()
            conn.in_idle = False
            return conn, True
        if len(self._conns) + self._connecting < self.max_connections:
            self._connecting += 1
        else:
            got = await self._queue()
            if got is not None:
                return got, True
        return await self._connect(retries), False

    async def _queue(self) -> _Conn | None:
        """Wait for a connection a call hands over (returned) or a free slot (None, the
        slot already counted in _connecting)."""
        fut: asyncio.Future[_Conn | None] = self._loop.create_future()
        self._waiters.append(fut)
        try:
            async with asyncio.timeout(self.connect_timeout):
                return await fut
        except BaseException as exc:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                got = fut.result()  # handed over just as the wait ended: pass it on
                if got is None:
                    self._connecting -= 1
                    self._wake()
                elif got.closed:
                    self._forget(got)
                else:
                    self._recycle(got)
            else:
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
            if isinstance(exc, TimeoutError) and not isinstance(exc, UpstreamPoolError):
                raise UpstreamTimeout(
                    f"no free connection to {self.host}:{self.port} within "
                    f"{self.connect_timeout} s ({self.max_connections} in use)",
                    "pool",
                ) from None
            raise

    async def _connect(self, retries: int) -> _Conn:
        """Open a connection in the slot already counted in _connecting."""
        try:
            attempt = 0
            while True:
                try:
                    conn = await self._open_connection()
                    break
                except UpstreamConnectError:
                    if attempt >= retries or self._closed:
                        raise
                await asyncio.sleep(self.retry_backoff * 2**attempt)
                attempt += 1
        except BaseException:
            self._connecting -= 1
            self._wake()
            raise
        self._connecting -= 1
        if self._closed:
            if conn.transport is not None:
                conn.transport.abort()
            raise UpstreamClosed("the pool is closed", request_sent=False, response_started=False)
        self._conns.add(conn)
        self._open.add(conn)
        self.opened += 1
        if self._timer is None:
            self._now = self._loop.time()
            self._timer = self._loop.call_later(self.tick, self._sweep)
        return conn

    async def _open_connection(self) -> _Conn:
        conn = _Conn(self)
        where = f"{self.host}:{self.port}"
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._loop.create_connection(
                    lambda: conn,
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.server_hostname,
                )
        except TimeoutError:
            raise UpstreamTimeout(
                f"no connection to {where} within {self.connect_timeout} s", "connect"
            ) from None
        except OSError as exc:  # refused, unreachable, DNS (gaierror), TLS (SSLError)
            raise UpstreamConnectError(f"cannot connect to {where}: {exc}") from exc
        return conn

    def _release(self, conn: _Conn) -> None:
        """A call is done with ``conn``: reuse it if its answer ended cleanly, else close it."""
        conn.resp = None
        conn.waiter = None
        conn.chunks.clear()
        if conn.keep and conn.complete and not conn.closed:
            if conn.read_paused:
                conn.read_paused = False
                if conn.transport is not None:
                    conn.transport.resume_reading()
            if not self._waiters and len(self._idle) < self.max_idle and not self._closed:
                conn.idle_since = self._now  # the usual case, inline
                conn.in_idle = True
                self._idle.append(conn)
            else:
                self._recycle(conn)
            return
        transport = conn.transport
        if transport is not None and not conn.closed:
            if conn.complete:
                transport.close()
            else:
                transport.abort()
        self._forget(conn)

    def _recycle(self, conn: _Conn) -> None:
        """A healthy connection: to a waiting call, else idle, else (too many) closed."""
        if not self._closed:
            waiters = self._waiters
            while waiters:
                fut = waiters.popleft()
                if not fut.done():
                    fut.set_result(conn)
                    return
            if len(self._idle) < self.max_idle:
                conn.idle_since = self._now
                conn.in_idle = True
                self._idle.append(conn)
                return
        if conn.transport is not None and not conn.closed:
            conn.transport.close()
        self._forget(conn)

    def _discard(self, conn: _Conn) -> None:
        """An idle connection the upstream closed or wrote to: drop it."""
        if conn.transport is not None and not conn.closed:
            conn.transport.abort()
        self._forget(conn)

    def _forget(self, conn: _Conn) -> None:
        """``conn`` no longer counts against the limit (it is closing or closed)."""
        if conn in self._conns:
            self._conns.discard(conn)
            if conn.in_idle:
                conn.in_idle = False
                self._idle.remove(conn)
            self._wake()

    def _lost(self, conn: _Conn) -> None:
        self._forget(conn)
        self._open.discard(conn)
        done = self._all_closed
        if done is not None and not self._open and not done.done():
            done.set_result(None)

    def _wake(self) -> None:
        """Give free slots to waiting calls."""
        waiters = self._waiters
        while waiters and len(self._conns) + self._connecting < self.max_connections:
            fut = waiters.popleft()
            if not fut.done():
                self._connecting += 1
                fut.set_result(None)

    def _sweep(self) -> None:
        """The pool's one timer: read and total timeouts of calls, idle expiry."""
        self._timer = None
        now = self._loop.time()
        self._now = now
        late: list[tuple[_Conn, UpstreamTimeout]] = []
        for conn in self._conns:
            if conn.resp is None or conn.complete:
                continue
            if now >= conn.deadline:
                msg = f"the upstream's answer took longer than {self.total_timeout} s"
                late.append((conn, UpstreamTimeout(msg, "total")))
            elif conn.armed:
                if conn.active:
                    conn.active = False
                    conn.quiet_since = now
                elif now - conn.quiet_since >= self.read_timeout:
                    msg = f"the upstream sent nothing for {self.read_timeout} s"
                    late.append((conn, UpstreamTimeout(msg, "read")))
        for conn, exc in late:
            conn.fail(exc)
        self._expire_idle(now - self.idle_timeout)
        if self._conns and not self._closed:
            self._timer = self._loop.call_later(self.tick, self._sweep)

    def _expire_idle(self, oldest: float) -> None:
        idle = self._idle
        while idle and idle[0].idle_since <= oldest:
            conn = idle.popleft()
            conn.in_idle = False
            if conn.transport is not None and not conn.closed:
                conn.transport.close()
            self._forget(conn)

    # -- shutdown -------------------------------------------------------------------------

    async def close(self, grace: float = 1.0) -> None:
        """Close every connection; calls in flight fail with UpstreamClosed. Waits up to
        ``grace`` seconds for the transports to finish closing (TLS sends close_notify)."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(
                    UpstreamClosed("the pool is closed", request_sent=False, response_started=False)
                )
        self._close_all()
        if self._open:
            self._all_closed = self._loop.create_future()
            try:
                async with asyncio.timeout(grace):
                    await self._all_closed
            except TimeoutError:
                for conn in list(self._open):
                    if conn.transport is not None:
                        conn.transport.abort()

    def _close_all(self) -> None:
        for conn in list(self._open):
            if conn.resp is not None and not conn.complete:
                conn.fail(
                    UpstreamClosed(
                        "the pool was closed during the call",
                        request_sent=conn.sent,
                        response_started=conn.started,
                    )
                )
            elif conn.transport is not None and not conn.closed:
                conn.transport.close()
            self._forget(conn)

    async def __aenter__(self) -> UpstreamPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _framing(
    method: str, body: RequestBody, content_length: int | None, close: bool
) -> tuple[bytes, AsyncIterable[bytes] | None, bytes]:
    """(bytes body, streamed body, the framing header lines) of a request."""
    stream: AsyncIterable[bytes] | None = None
    payload = b""
    if body is None:
        framing = _NO_BODY if method in _BODY_METHODS else b""
    elif isinstance(body, bytes | bytearray | memoryview):
        payload = body if isinstance(body, bytes) else bytes(body)
        framing = b"Content-Length: %d\r\n" % len(payload)
    else:
        stream = body
        if content_length is None:
            framing = b"Transfer-Encoding: chunked\r\n"
        else:
            framing = b"Content-Length: %d\r\n" % content_length
    if close:
        framing += b"Connection: close\r\n"
    return payload, stream, framing


def _method_bytes(method: str) -> bytes:
    if not _METHOD_RE.fullmatch(method):
        raise ValueError(f"not an HTTP method: {method!r}")
    return method.encode("ascii")
