"""Conformance of the keep-alive upstream pool (gateway/proxy/upstream.py).

Two kinds of upstream on 127.0.0.1 (ports chosen by the OS):

* a real aiohttp web server: framing both ways, large bodies with backpressure, HEAD / 204
  / 304, keep-alive reuse, ``Connection: close``, TLS with a self-signed certificate made
  here, pool limits and timeouts;
* a raw asyncio "torture" server whose script per connection writes exactly the bytes a
  test wants: heads in tiny pieces, connections cut at every stage, trailers, bad chunk
  sizes, stalls, 1xx answers, idle connections closed under a request, bodies that end
  with the connection.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.proxy.upstream import (
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamPool,
    UpstreamProtocolError,
    UpstreamResponse,
    UpstreamTimeout,
)

pytestmark = pytest.mark.timeout(30)
UNDER_UVLOOP = "GATEWAY_TEST_UNDER_UVLOOP"

MB = 1024 * 1024
READ_SIZE = 256 * 1024  # the most an asyncio (or uvloop) transport reads at once


def pattern(n: int) -> bytes:
    block = bytes(range(256))
    return (block * (n // 256 + 1))[:n]


def header(resp: UpstreamResponse, name: str) -> str | None:
    value = resp.header(name.encode())
    return None if value is None else value.decode("latin-1")


# -- the aiohttp upstream -------------------------------------------------------------------


@dataclass
class Aio:
    """A running aiohttp upstream and what it saw."""

    url: str = ""
    peers: list[int] = field(default_factory=list)  # the client port of each request
    heads: list[dict[str, str]] = field(default_factory=list)  # each request's headers
    in_flight: int = 0
    most_in_flight: int = 0
    produced: list[int] = field(default_factory=lambda: [0])  # an upload's progress
    produced_at_read: int = -1
    sni: list[str | None] = field(default_factory=list)

    @property
    def connections(self) -> int:
        return len(set(self.peers))


SEEN = web.AppKey("seen", Aio)


@web.middleware
async def record(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    seen = request.app[SEEN]
    assert request.transport is not None
    seen.peers.append(request.transport.get_extra_info("peername")[1])
    seen.heads.append(dict(request.headers))
    seen.in_flight += 1
    seen.most_in_flight = max(seen.most_in_flight, seen.in_flight)
    try:
        return await handler(request)
    finally:
        seen.in_flight -= 1


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path_qs": request.path_qs,
            "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "chunked": request.headers.get("Transfer-Encoding") == "chunked",
            "content_length": request.headers.get("Content-Length"),
            "x_custom": request.headers.getall("X-Custom", []),
        },
        headers={"X-Upstream": "echo"},
    )


async def data(request: web.Request) -> web.StreamResponse:
    n = int(request.query.get("n", "1024"))
    body = pattern(n)
    if request.query.get("chunked"):
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, n, 64 * 1024):
            await resp.write(body[i : i + 64 * 1024])
        await resp.write_eof()
        return resp
    return web.Response(body=body, content_type="application/octet-stream")


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("delay", "5")))
    return web.Response(text="slow")


async def trickle(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for _ in range(int(request.query.get("n", "60"))):
        await resp.write(b".")
        await asyncio.sleep(float(request.query.get("every", "0.05")))
    await resp.write_eof()
    return resp


async def status(request: web.Request) -> web.Response:
    return web.Response(status=int(request.match_info["code"]), headers={"ETag": '"v1"'})


async def close(request: web.Request) -> web.Response:
    resp = web.Response(text="bye")
    resp.force_close()  # Connection: close
    return resp


async def slow_reader(request: web.Request) -> web.Response:
    seen = request.app[SEEN]
    await asyncio.sleep(0.5)  # the sender must stall meanwhile
    seen.produced_at_read = seen.produced[0]
    h = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        h.update(chunk)
        size += len(chunk)
    return web.json_response({"size": size, "sha256": h.hexdigest()})


def aio_app(seen: Aio) -> web.Application:
    app = web.Application(middlewares=[record], client_max_size=64 * MB)
    app[SEEN] = seen
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/data", data)
    app.router.add_get("/slow", slow)
    app.router.add_get("/trickle", trickle)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/close", close)
    app.router.add_post("/slow-reader", slow_reader)
    return app


async def start_aio(
    seen: Aio, *, ssl_context: ssl.SSLContext | None = None, rcvbuf: int | None = None
) -> web.AppRunner:
    sock = socket.socket()
    if rcvbuf is not None:  # inherited by accepted sockets: little kernel buffering
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind(("127.0.0.1", 0))
    runner = web.AppRunner(aio_app(seen), access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock, ssl_context=ssl_context).start()
    port = sock.getsockname()[1]
    seen.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    return runner


@pytest.fixture
async def aio() -> AsyncIterator[Aio]:
    seen = Aio()
    runner = await start_aio(seen)
    yield seen
    await runner.cleanup()


@pytest.fixture
async def pool(aio: Aio) -> AsyncIterator[UpstreamPool]:
    p = UpstreamPool(aio.url, read_timeout=5.0)
    yield p
    await p.close()


async def chunks_of(data: bytes, size: int, pause: float = 0.0) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]
        if pause:
            await asyncio.sleep(pause)


# -- framing both ways ----------------------------------------------------------------------


async def test_content_length_both_ways(aio: Aio, pool: UpstreamPool) -> None:
    body = pattern(5000)
    resp = await pool.request(
        "POST", "/echo?a=1&b=%20x", [(b"X-Custom", b"one"), (b"X-Custom", b"two")], body
    )
    assert (resp.status, resp.reason) == (200, "OK")
    assert header(resp, "x-upstream") == "echo"  # raw headers, looked up case-insensitively
    assert all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in resp.headers)
    got = json.loads(await resp.read())
    assert got["path_qs"] == "/echo?a=1&b=%20x"
    assert got["x_custom"] == ["one", "two"]
    assert got["content_length"] == "5000" and not got["chunked"]
    assert (got["size"], got["sha256"]) == (5000, hashlib.sha256(body).hexdigest())
    assert aio.heads[0]["Host"] == aio.url.split("//")[1]


async def test_bodiless_post_sends_content_length_zero(aio: Aio, pool: UpstreamPool) -> None:
    got = json.loads(await (await pool.request("POST", "/echo")).read())
    assert (got["size"], got["content_length"]) == (0, "0")
    got = json.loads(await (await pool.request("GET", "/echo")).read())
    assert got["content_length"] is None


async def test_streamed_request_chunked_and_with_declared_length(
    aio: Aio, pool: UpstreamPool
) -> None:
    body = pattern(300_000)
    resp = await pool.request("PUT", "/echo", [], chunks_of(body, 7000))
    got = json.loads(await resp.read())
    assert got["chunked"] and got["content_length"] is None
    assert (got["size"], got["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
    resp = await pool.request("PUT", "/echo", [], chunks_of(body, 7000), content_length=len(body))
    got = json.loads(await resp.read())
    assert not got["chunked"] and got["content_length"] == str(len(body))
    assert got["sha256"] == hashlib.sha256(body).hexdigest()
    assert pool.opened == 1


@pytest.mark.parametrize("chunked", [False, True])
async def test_response_by_length_and_chunked(pool: UpstreamPool, chunked: bool) -> None:
    n = 200_000
    resp = await pool.request("GET", f"/data?n={n}{'&chunked=1' if chunked else ''}")
    assert resp.content_length == (None if chunked else n)
    assert (header(resp, "transfer-encoding") == "chunked") is chunked
    assert await resp.read() == pattern(n)
    assert await resp.read() == pattern(n)  # kept
    resp = await pool.request("GET", "/data?n=10")
    assert resp.reused and await resp.read() == pattern(10)


async def test_large_response_streams_with_bounded_buffer(aio: Aio) -> None:
    """10 MB to a consumer slower than the upstream: the socket is paused past the high-water
    mark, so no piece handed over is much larger than it (without backpressure the pauses
    below would let megabytes pile up)."""
    n, high = 10 * MB, 64 * 1024
    async with UpstreamPool(aio.url, high_water=high) as p:
        resp = await p.request("GET", f"/data?n={n}&chunked=1")
        h, total, largest, pieces = hashlib.sha256(), 0, 0, 0
        async for chunk in resp.iter_chunks():
            h.update(chunk)
            total += len(chunk)
            largest = max(largest, len(chunk))
            pieces += 1
            if pieces % 8 == 1:
                await asyncio.sleep(0.02)  # fall behind
        assert total == n and h.hexdigest() == hashlib.sha256(pattern(n)).hexdigest()
        assert largest <= high + READ_SIZE, largest
        assert pieces > n // (high + READ_SIZE)
        again = await p.request("GET", "/data?n=5")
        assert again.reused and await again.read() == pattern(5)  # reading resumed


async def test_large_response_read_whole(pool: UpstreamPool) -> None:
    n = 10 * MB
    resp = await pool.request("GET", f"/data?n={n}")
    assert await resp.read() == pattern(n)
    assert (await pool.request("GET", "/data?n=3")).reused


async def test_large_upload_respects_write_backpressure(tmp_path: Path) -> None:
    """The upstream reads nothing for 0.5 s: the body iterator must stall too (kernel
    buffers are capped here; without waiting for the transport to drain, all of the body
    would be taken at once)."""
    wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    bound = wmem_max + 4 * 65536 + MB  # client send buffer, server receive buffer, slack
    n = max(10 * MB, 2 * bound)
    seen = Aio()
    runner = await start_aio(seen, rcvbuf=65536)
    body = pattern(n)

    async def produce() -> AsyncIterator[bytes]:
        for i in range(0, n, 65536):
            seen.produced[0] = i + 65536
            yield body[i : i + 65536]

    try:
        async with UpstreamPool(seen.url) as p:
            resp = await p.request("POST", "/slow-reader", [], produce())
            got = json.loads(await resp.read())
    finally:
        await runner.cleanup()
    assert (got["size"], got["sha256"]) == (n, hashlib.sha256(body).hexdigest())
    assert 0 < seen.produced_at_read < bound, (seen.produced_at_read, bound)


# -- no body, keep-alive, Connection: close ------------------------------------------------


async def test_head_has_no_body_and_keeps_the_connection(aio: Aio, pool: UpstreamPool) -> None:
    resp = await pool.request("HEAD", "/data?n=5000")
    assert resp.status == 200 and resp.content_length == 5000
    assert await resp.read() == b""
    resp = await pool.request("GET", "/data?n=7")
    assert resp.reused and await resp.read() == pattern(7)
    assert pool.opened == 1 and aio.connections == 1


@pytest.mark.parametrize("code", [204, 304])
async def test_no_content_statuses(aio: Aio, pool: UpstreamPool, code: int) -> None:
    resp = await pool.request("GET", f"/status/{code}")
    assert resp.status == code and header(resp, "etag") == '"v1"'
    assert await resp.read() == b""
    resp = await pool.request("GET", "/data?n=4")
    assert resp.reused and await resp.read() == pattern(4)
    assert aio.connections == 1


async def test_keep_alive_reuses_one_connection(aio: Aio, pool: UpstreamPool) -> None:
    for i in range(25):
        resp = await pool.request("GET", f"/data?n={i + 1}")
        assert await resp.read() == pattern(i + 1)
        assert resp.reused is (i > 0)
    assert pool.opened == 1 and aio.connections == 1 and len(aio.peers) == 25
    assert pool.idle == 1


async def test_connection_close_from_the_upstream(aio: Aio, pool: UpstreamPool) -> None:
    resp = await pool.request("GET", "/close")
    assert header(resp, "connection") == "close"
    assert await resp.read() == b"bye"
    assert pool.idle == 0
    resp = await pool.request("GET", "/data?n=1")
    assert not resp.reused and await resp.read() == pattern(1)
    assert pool.opened == 2 and aio.connections == 2


async def test_connection_close_from_the_caller_even_if_the_upstream_keeps_it() -> None:
    async with Raw(serve_each(answer(b"a"), answer(b"b"))) as srv, UpstreamPool(srv.url) as p:
        assert await (await p.request("GET", "/", close=True)).read() == b"a"
        assert b"\r\nConnection: close\r\n" in srv.requests[0][1]
        assert p.idle == 0
        resp = await p.request("GET", "/")
        assert not resp.reused and await resp.read() == b"a"
        assert srv.connections == 2


async def test_connection_close_from_the_caller(aio: Aio, pool: UpstreamPool) -> None:
    resp = await pool.request("GET", "/data?n=3", close=True)
    assert await resp.read() == pattern(3)
    assert aio.heads[0].get("Connection") == "close"
    assert (await pool.request("GET", "/data?n=3")).reused is False
    assert aio.connections == 2


async def test_unread_body_is_not_reused_but_released(aio: Aio, pool: UpstreamPool) -> None:
    resp = await pool.request("GET", "/data?n=5000000")
    resp.release()  # most of the body still to come: the connection cannot be reused
    assert pool.connections == 0
    async with await pool.request("GET", "/data?n=10") as resp:
        assert not resp.reused and await resp.read() == pattern(10)
    assert pool.idle == 1


# -- TLS ------------------------------------------------------------------------------------


def self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_upstream_with_sni(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "pms.test")
    seen = Aio()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    def record_sni(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        seen.sni.append(name)

    server_ctx.sni_callback = record_sni
    runner = await start_aio(seen, ssl_context=server_ctx)
    trusting = ssl.create_default_context(cafile=str(cert))
    try:
        async with UpstreamPool(seen.url, ssl=trusting, server_hostname="pms.test") as p:
            for i in range(3):
                resp = await p.request("POST", "/echo", [], pattern(100_000 * (i + 1)))
                got = json.loads(await resp.read())
                assert got["size"] == 100_000 * (i + 1)
            resp = await p.request("GET", "/data?n=3000000&chunked=1")
            assert await resp.read() == pattern(3_000_000)
            assert p.opened == 1 and seen.connections == 1
        assert seen.sni == ["pms.test"]
        # The certificate is checked: not trusted by default, nor for another name.
        async with UpstreamPool(seen.url, server_hostname="pms.test") as p:
            with pytest.raises(UpstreamConnectError, match="certificate verify failed"):
                await p.request("GET", "/data")
        async with UpstreamPool(seen.url, ssl=trusting, server_hostname="other.test") as p:
            with pytest.raises(UpstreamConnectError, match="certificate verify failed"):
                await p.request("GET", "/data")
    finally:
        await runner.cleanup()


# -- pool limits ----------------------------------------------------------------------------


async def test_pool_limit_queues_concurrent_calls(aio: Aio) -> None:
    async with UpstreamPool(aio.url, max_connections=2) as p:

        async def call() -> bytes:
            return await (await p.request("GET", "/slow?delay=0.2")).read()

        t0 = time.monotonic()
        bodies = await asyncio.gather(*(call() for _ in range(6)))
        elapsed = time.monotonic() - t0
        assert bodies == [b"slow"] * 6
        assert aio.most_in_flight == 2 and p.opened == 2 and aio.connections == 2
        assert elapsed >= 0.55  # three waves of two
        assert p.connections == 2 and p.idle == 2


async def test_pool_wait_is_bounded_by_the_connect_timeout(aio: Aio) -> None:
    async with UpstreamPool(aio.url, max_connections=1, connect_timeout=0.3) as p:
        held = await p.request("GET", "/data?n=10")  # not released: holds the only slot
        t0 = time.monotonic()
        with pytest.raises(UpstreamTimeout) as err:
            await p.request("GET", "/data?n=10")
        assert err.value.phase == "pool" and 0.25 < time.monotonic() - t0 < 1.5
        assert await held.read() == pattern(10)  # releases it
        resp = await p.request("GET", "/data?n=2")
        assert resp.reused and await resp.read() == pattern(2)


async def test_max_idle_and_idle_expiry(aio: Aio) -> None:
    async with UpstreamPool(aio.url, max_idle=1, idle_timeout=0.2) as p:
        resps = await asyncio.gather(*(p.request("GET", "/slow?delay=0.05") for _ in range(3)))
        for r in resps:
            await r.read()
        assert p.opened == 3 and p.idle == 1 and p.connections == 1
        await asyncio.sleep(0.6)
        assert p.idle == 0 and p.connections == 0
        assert not (await p.request("GET", "/data?n=1")).reused


# -- timeouts and connect errors ------------------------------------------------------------


async def test_read_timeout_waiting_for_the_head(aio: Aio) -> None:
    async with UpstreamPool(aio.url, read_timeout=0.3) as p:
        t0 = time.monotonic()
        with pytest.raises(UpstreamTimeout) as err:
            await p.request("GET", "/slow?delay=5")
        assert err.value.phase == "read" and isinstance(err.value, TimeoutError)
        assert 0.3 <= time.monotonic() - t0 < 1.5
        assert p.connections == 0


async def test_total_timeout_while_bytes_keep_coming(aio: Aio) -> None:
    async with UpstreamPool(aio.url, read_timeout=1.0, total_timeout=0.5) as p:
        t0 = time.monotonic()
        resp = await p.request("GET", "/trickle?every=0.05&n=100")
        with pytest.raises(UpstreamTimeout) as err:
            await resp.read()
        assert err.value.phase == "total" and 0.45 <= time.monotonic() - t0 < 1.5


async def test_trickle_within_read_timeout_completes(aio: Aio) -> None:
    async with UpstreamPool(aio.url, read_timeout=0.5) as p:
        resp = await p.request("GET", "/trickle?every=0.1&n=10")
        assert await resp.read() == b"." * 10  # 1 s in all, never 0.5 s of silence


async def test_connect_timeout() -> None:
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    port = lsock.getsockname()[1]
    filler = socket.socket()  # fills the backlog: later SYNs go unanswered
    filler.connect(("127.0.0.1", port))
    try:
        async with UpstreamPool(f"http://127.0.0.1:{port}", connect_timeout=0.3) as p:
            t0 = time.monotonic()
            with pytest.raises(UpstreamTimeout) as err:
                await p.request("GET", "/")
            assert err.value.phase == "connect" and 0.25 < time.monotonic() - t0 < 1.5
            assert p.connections == 0
    finally:
        filler.close()
        lsock.close()


async def test_connect_refused_and_retries_for_idempotent_calls() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there now
    async with UpstreamPool(f"http://127.0.0.1:{port}", connect_retries=2, retry_backoff=0.1) as p:
        t0 = time.monotonic()
        with pytest.raises(UpstreamConnectError, match="cannot connect"):
            await p.request("GET", "/")
        assert time.monotonic() - t0 >= 0.3  # waited 0.1 then 0.2 between three attempts
        t0 = time.monotonic()
        with pytest.raises(UpstreamConnectError):
            await p.request("POST", "/", [], b"x")
        assert time.monotonic() - t0 < 0.1  # never repeated
        assert p.connections == 0


# -- the torture server ---------------------------------------------------------------------

Script = Callable[["Raw", asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Raw:
    """A raw asyncio server: ``script(server, reader, writer, n)`` runs for the n-th
    connection (from 1) and writes exactly what it wants."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[tuple[int, bytes, bytes]] = []  # (connection, head, raw body)
        self.closed_by_client = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def __aenter__(self) -> Raw:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            await self.script(self, reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # (cancelled at the end of a test: not an error of the handler)
        finally:
            writer.close()
            self._tasks.discard(task)

    async def request(self, reader: asyncio.StreamReader, n: int) -> tuple[bytes, bytes]:
        """Read one request (head and raw body as on the wire) and note it."""
        head = await reader.readuntil(b"\r\n\r\n")
        lower = head.lower()
        body = b""
        length = re.search(rb"\r\ncontent-length: *(\d+)", lower)
        if length:
            body = await reader.readexactly(int(length.group(1)))
        elif b"\r\ntransfer-encoding: chunked" in lower:
            while True:
                line = await reader.readuntil(b"\r\n")
                size = int(line.split(b";")[0], 16)
                body += line + await reader.readexactly(size + 2)
                if size == 0:
                    break
        self.requests.append((n, head, body))
        return head, body

    async def until_closed(self, reader: asyncio.StreamReader) -> None:
        """Wait for the client to close the connection (FIN or RST), reading what comes."""
        try:
            while await reader.read(65536):
                pass
        except ConnectionResetError:
            pass
        self.closed_by_client.set()


def answer(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def write_slowly(writer: asyncio.StreamWriter, data: bytes, step: int = 1) -> None:
    """``data`` in pieces of ``step`` bytes, each flushed on its own."""
    for i in range(0, len(data), step):
        writer.write(data[i : i + step])
        await writer.drain()
        if i % (5 * step) == 0:
            await asyncio.sleep(0.001)


def serve_each(*answers: bytes, then: str = "keep") -> Script:
    """Answer the connection's requests with ``answers`` in turn, then keep it open (or
    close it)."""

    async def script(
        srv: Raw, reader: asyncio.StreamReader, w: asyncio.StreamWriter, n: int
    ) -> None:
        for data in answers:
            await srv.request(reader, n)
            w.write(data)
            await w.drain()
        if then == "keep":
            await srv.until_closed(reader)

    return script


async def test_head_split_into_tiny_writes() -> None:
    long_value = b"v" * 300
    data = (
        b"HTTP/1.1 200 All Good Here\r\nX-Long: %s\r\nX-Two: a\r\nX-Two: b\r\n"
        b"Content-Length: 11\r\n\r\nhello world" % long_value
    )

    async def script(
        srv: Raw, reader: asyncio.StreamReader, w: asyncio.StreamWriter, n: int
    ) -> None:
        for _ in range(2):
            await srv.request(reader, n)
            await write_slowly(w, data)
        await srv.until_closed(reader)

    async with Raw(script) as srv, UpstreamPool(srv.url) as p:
        for i in range(2):
            resp = await p.request("GET", "/")
            assert (resp.status, resp.reason) == (200, "All Good Here")
            assert resp.headers[:3] == [(b"X-Long", long_value), (b"X-Two", b"a"), (b"X-Two", b"b")]
            assert await resp.read() == b"hello world"
            assert resp.reused is (i == 1)
        assert srv.connections == 1


async def test_close_before_any_answer_on_a_fresh_connection() -> None:
    async def script(
        srv: Raw, reader: asyncio.StreamReader, w: asyncio.StreamWriter, n: int
    ) -> None:
        await srv.request(reader, n)  # and hang up

    async with Raw(script) as srv, UpstreamPool(srv.url) as p:
        with pytest.raises(UpstreamClosed) as err:
            await p.request("GET", "/")
        assert err.value.request_sent and not err.value.response_started
        assert p.retried == 0 and srv.connections == 1  # a fresh connection: no retry


async def test_close_mid_head_is_not_retried_even_for_get() -> None:
    script = serve_each(answer(b"first"), b"HTTP/1.1 200 OK\r\nContent-Le", then="close")
    async with Raw(script) as srv, UpstreamPool(srv.url) as p:
        assert await (await p.request("GET", "/")).read() == b"first"
        with pytest.raises(UpstreamClosed) as err:
            await p.request("GET", "/")
        assert err.value.response_started and err.value.request_sent
        assert p.retried == 0 and srv.connections == 1
        assert p.connections == 0


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ],
    ids=["content-length", "chunked"],
)
async def test_close_mid_body(data: bytes) -> None:
    async with Raw(serve_each(data, then="close")) as srv, UpstreamPool(srv.url) as p:
        resp = await p.request("GET", "/")
        assert resp.status == 200
        with pytest.raises(UpstreamClosed, match="mid-body") as err:
            await resp.read()
        assert err.value.response_started
        assert p.connections == 0


async def test_close_mid_body_while_streaming() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 40
    async with Raw(serve_each(data, then="close")) as srv, UpstreamPool(srv.url) as p:
        resp = await p.request("GET", "/")
        got = b""
        with pytest.raises(UpstreamClosed):
            async for chunk in resp.iter_chunks():
                got += chunk
        assert got == b"x" * 40  # what came is delivered before the error


async def test_trailers_after_chunked_body_and_reuse() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
        b"4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nX-Checksum: abc\r\nX-More: 1\r\n\r\n"
    )

    async def script(
        srv: Raw, reader: asyncio.StreamReader, w: asyncio.StreamWriter, n: int
    ) -> None:
        await srv.request(reader, n)
        await write_slowly(w, chunked, step=3)
        await srv.request(reader, n)
        w.write(answer(b"second"))
        await srv.until_closed(reader)

    async with Raw(script) as srv, UpstreamPool(srv.url) as p:
        resp = await p.request("GET", "/")
        assert await resp.read() == b"wikipedia"
        assert list(resp.trailers) == [(b"X-Checksum", b"abc"), (b"X-More", b"1")]
        assert all(k != b"X-Checksum" for k, _ in resp.headers)
        resp = await p.request("GET", "/")
        assert resp.reused and await resp.read() == b"second" and not resp.trailers
        assert srv.connections == 1


@pytest.mark.parametrize(
    "bad", [b"zz\r\n", b"-1\r\n", b"fffffffffffffffffffff\r\n", b"5\r\nhelloXX0\r\n\r\n"]
)
async def test_bad_chunk_framing(bad: bytes) -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + bad
    async with Raw(serve_each(data)) as srv, UpstreamPool(srv.url) as p:
        resp = await p.request("GET", "/")
        with pytest.raises(UpstreamProtocolError, match="invalid HTTP answer"):
            await resp.read()
        assert p.connections == 0
        await asyncio.wait_for(srv.closed_by_client.wait(), 2)


@pytest.mark.parametrize(
    "data",
    [
        b"SPEAKING NONSENSE \x00\xff\r\n\r\n",
        b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",  # bare LF: strict parsing
    ],
    ids=["garbage", "status", "length", "two-lengths", "bare-lf"],
)
async def test_invalid_heads(data: bytes) -> None:
    async with Raw(serve_each(data)) as srv, UpstreamPool(srv.url) as p:
        with pytest.raises(UpstreamProtocolError):
            await p.request("GET", "/")
        assert p.connections == 0


async def test_head_too_large() -> None:
    data = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"p" * 3000 + b"\r\nContent-Length: 0\r\n\r\n"
    async with Raw(serve_each(data)) as srv, UpstreamPool(srv.url, max_header_bytes=1024) as p:
        with pytest.raises(UpstreamProtocolError, match="larger than 1024"):
            await p.request("GET", "/")


async def test_body_bytes_with_the_head_do_not_count_as_head() -> None:
    body = pattern(200_000)
    async with (
        Raw(serve_each(answer(body))) as srv,
        UpstreamPool(srv.url, max_header_bytes=1024) as p,
    ):
        assert await (await p.request("GET", "/")).read() == body


async def test_slow_body_read_timeout() -> None:
    async def script(
        srv: Raw, reader: asyncio.StreamReader, w: asyncio.StreamWriter, n: int
    ) -> None:
        await srv.request(reader, n)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n012")
        await srv.until_closed(reader)  # and nothing more

    async with Raw(script) as srv, UpstreamPool(srv.url, read_timeout=0.3) as p:
        resp = await p.request("GET", "/")
        t0 = time.monotonic()
        with pytest.raises(UpstreamTimeout) as err:
            await resp.read()
        assert err.value.phase == "read" and 0.25 <= time.monotonic() - t0 < 1.5
        await asyncio.wait_for(srv.closed_by_client.wait(), 2)


async def test_slow_consumer_does_not_trip_the_read_timeout() -> None:
    """Reading paused for backpressure is the caller's doing, not the upstream's silence."""
    body = pattern(2 * MB)
    async with Raw(serve_each(answer(body))) as srv:
        async with UpstreamPool(srv.url, read_timeout=0.3, high_water=64 * 1024) as p:
            resp = await p.request("GET", "/")
            got = b""
            async for chunk in resp.iter_chunks():
                if not got:
                    await asyncio.sleep(1.0)  # paused all this time
                got += chunk
            assert got == body


async def test_interim_answers_are_skipped() -> None:
    async def script(
        srv: Raw, reader: asyncio.StreamReader, w: asyncio.StreamWriter, n: int
    ) -> None:
        await srv.request(reader, n)
        for part in (
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        ):
            w.write(part)
            await w.drain()
            await asyncio.sleep(0.02)
        await srv.request(reader, n)
        w.write(b"HTTP/1.1 102 Processing\r\n\r\n" + answer(b"again"))
        await srv.until_closed(reader)

    async with Raw(script) as srv, UpstreamPool(srv.url) as p:
        resp = await p.request("POST", "/", [(b"Expect", b"100-continue")], b"{}")
        assert (resp.status, resp.reason) == (201, "Created")
        assert header(resp, "link") is None and header(resp, "content-length") == "2"
        assert await resp.read() == b"ok"
        resp = await p.request("GET", "/")
        assert resp.status == 200 and resp.reused and await resp.read() == b"again"


async def test_switching_protocols_is_refused() -> None:
    data = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
    async with Raw(serve_each(data)) as srv, UpstreamPool(srv.url) as p:
        with pytest.raises(UpstreamProtocolError, match=r"switched protocols \(101\)"):
            await p.request("GET", "/")


async def test_idle_connection_closed_by_the_upstream_is_dropped_before_use() -> None:
    async with Raw(serve_each(answer(b"one"), then="close")) as srv, UpstreamPool(srv.url) as p:
        assert await (await p.request("GET", "/")).read() == b"one"
        await asyncio.sleep(0.05)  # the upstream's FIN arrives while the connection is idle
        assert p.idle == 0
        resp = await p.request("POST", "/", [], b"data")  # not idempotent: still fine
        assert not resp.reused and await resp.read() == b"one"
        assert p.retried == 0 and srv.connections == 2


def close_under_second_request() -> Script:
    """The first connection answers once, then reads the next request and hangs up without
    a byte (as when its keep-alive timer and the request cross); later ones answer."""

    async def script(
        srv: Raw, reader: asyncio.StreamReader, w: asyncio.StreamWriter, n: int
    ) -> None:
        await srv.request(reader, n)
        w.write(answer(b"conn%d" % n))
        if n == 1:
            await srv.request(reader, n)
            return
        await srv.until_closed(reader)

    return script


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_stale_connection_retried_for_idempotent_methods(method: str) -> None:
    async with Raw(close_under_second_request()) as srv, UpstreamPool(srv.url) as p:
        assert await (await p.request(method, "/", [], b"x")).read() == b"conn1"
        resp = await p.request(method, "/", [], b"y")
        assert await resp.read() == b"conn2" and not resp.reused
        assert p.retried == 1 and srv.connections == 2
        assert [r[2] for r in srv.requests] == [b"x", b"y", b"y"]  # sent twice: the first lost


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_stale_connection_not_retried_once_the_request_was_sent(method: str) -> None:
    async with Raw(close_under_second_request()) as srv, UpstreamPool(srv.url) as p:
        assert await (await p.request(method, "/", [], b"x")).read() == b"conn1"
        with pytest.raises(UpstreamClosed) as err:
            await p.request(method, "/", [], b"y")
        assert err.value.request_sent and not err.value.response_started
        assert p.retried == 0 and srv.connections == 1


async def test_post_retried_when_it_never_left_a_reused_connection() -> None:
    async with Raw(serve_each(answer(b"a"), answer(b"b"))) as srv, UpstreamPool(srv.url) as p:
        assert await (await p.request("POST", "/", [], b"1")).read() == b"a"
        conn = p._idle[-1]  # closes in this same step, before the loop reports it
        assert conn.transport is not None
        conn.transport.abort()
        resp = await p.request("POST", "/", [], b"2")
        assert await resp.read() == b"a" and not resp.reused
        assert p.retried == 1 and srv.connections == 2
        assert [r[2] for r in srv.requests] == [b"1", b"2"]  # sent exactly once


async def test_stream_body_is_not_replayed() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"only once"

    async with Raw(close_under_second_request()) as srv, UpstreamPool(srv.url) as p:
        assert await (await p.request("PUT", "/", [], b"x")).read() == b"conn1"
        with pytest.raises(UpstreamClosed):
            await p.request("PUT", "/", [], body())
        assert p.retried == 0


@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
async def test_body_read_until_close(version: bytes) -> None:
    async def script(
        srv: Raw, reader: asyncio.StreamReader, w: asyncio.StreamWriter, n: int
    ) -> None:
        await srv.request(reader, n)
        w.write(b"HTTP/%s 200 OK\r\nContent-Type: text/plain\r\n\r\n" % version)
        for i in range(5):
            w.write(b"part%d;" % i)
            await w.drain()
            await asyncio.sleep(0.01)

    async with Raw(script) as srv, UpstreamPool(srv.url) as p:
        resp = await p.request("GET", "/")
        assert resp.content_length is None
        assert await resp.read() == b"part0;part1;part2;part3;part4;"
        resp = await p.request("GET", "/")
        assert not resp.reused and await resp.read() == b"part0;part1;part2;part3;part4;"
        assert srv.connections == 2


async def test_http10_without_keep_alive_is_not_reused() -> None:
    data = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with Raw(serve_each(data, data)) as srv, UpstreamPool(srv.url) as p:
        assert await (await p.request("GET", "/")).read() == b"ok"
        assert p.idle == 0
        assert not (await p.request("GET", "/")).reused


async def test_stray_bytes_after_the_answer_end_reuse() -> None:
    async with Raw(serve_each(answer(b"ok") + b"JUNK", answer(b"ok"))) as srv:
        async with UpstreamPool(srv.url) as p:
            assert await (await p.request("GET", "/")).read() == b"ok"
            resp = await p.request("GET", "/")
            assert not resp.reused and await resp.read() == b"ok"


async def test_stray_bytes_before_release_end_reuse() -> None:
    async def script(
        srv: Raw, reader: asyncio.StreamReader, w: asyncio.StreamWriter, n: int
    ) -> None:
        await srv.request(reader, n)
        w.write(answer(b"ok"))
        await w.drain()
        await asyncio.sleep(0.05)
        w.write(b"JUNK")  # after the answer, in a read of its own
        await srv.request(reader, n)
        w.write(answer(b"ok"))
        await srv.until_closed(reader)

    async with Raw(script) as srv, UpstreamPool(srv.url) as p:
        resp = await p.request("GET", "/")
        await asyncio.sleep(0.2)  # the junk comes while the answer is held
        assert await resp.read() == b"ok"
        resp = await p.request("GET", "/")
        assert not resp.reused and await resp.read() == b"ok"


async def test_bytes_on_an_idle_connection_drop_it() -> None:
    """Some servers write a 408 on a connection they find idle too long."""

    async def script(
        srv: Raw, reader: asyncio.StreamReader, w: asyncio.StreamWriter, n: int
    ) -> None:
        await srv.request(reader, n)
        w.write(answer(b"ok"))
        await w.drain()
        await asyncio.sleep(0.05)
        w.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
        await srv.until_closed(reader)  # but does not close

    async with Raw(script) as srv, UpstreamPool(srv.url) as p:
        assert await (await p.request("GET", "/")).read() == b"ok"
        await asyncio.sleep(0.2)
        assert p.idle == 0 and p.connections == 0
        await asyncio.wait_for(srv.closed_by_client.wait(), 2)
        resp = await p.request("GET", "/")
        assert not resp.reused and resp.status == 200
        assert srv.connections == 2


async def test_request_framing_on_the_wire() -> None:
    async def parts() -> AsyncIterator[bytes]:
        for part in (b"abc", b"", b"defgh"):  # an empty piece must not end the body early
            yield part

    async with Raw(serve_each(answer(), answer(), answer())) as srv, UpstreamPool(srv.url) as p:
        host = srv.url.split("//")[1].encode()
        await (await p.request("POST", "/p?q=1", [(b"X-A", b"1")], parts())).read()
        await (await p.request("POST", "/p", [], parts(), content_length=8)).read()
        await (await p.request("DELETE", "/p")).read()
    (_, head1, body1), (_, head2, body2), (_, head3, body3) = srv.requests
    assert head1 == (
        b"POST /p?q=1 HTTP/1.1\r\nHost: %s\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n" % host
    )
    assert body1 == b"3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n"
    assert head2 == b"POST /p HTTP/1.1\r\nHost: %s\r\nContent-Length: 8\r\n\r\n" % host
    assert body2 == b"abcdefgh"
    assert head3 == b"DELETE /p HTTP/1.1\r\nHost: %s\r\n\r\n" % host and body3 == b""


async def test_declared_length_must_match_the_stream() -> None:
    async with Raw(serve_each(answer())) as srv, UpstreamPool(srv.url) as p:
        with pytest.raises(ValueError, match="ended after 3"):
            await p.request("POST", "/", [], chunks_of(b"abc", 1), content_length=5)
        with pytest.raises(ValueError, match="longer than"):
            await p.request("POST", "/", [], chunks_of(b"abcdef", 2), content_length=5)
        assert p.connections == 0


async def test_early_answer_stops_the_upload() -> None:
    produced: list[int] = []
    finished = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        try:
            for i in range(200):
                produced.append(i)
                yield b"x" * 1000
                await asyncio.sleep(0.01)
        finally:
            finished.set()

    async def script(
        srv: Raw, reader: asyncio.StreamReader, w: asyncio.StreamWriter, n: int
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(3000)
        w.write(b"HTTP/1.1 413 Too Large\r\nContent-Length: 4\r\n\r\nnope")
        await srv.until_closed(reader)  # reads on, never closes: only the answer stops it

    async with Raw(script) as srv, UpstreamPool(srv.url) as p:
        resp = await p.request("POST", "/", [], body())
        assert resp.status == 413 and await resp.read() == b"nope"
        assert finished.is_set() and len(produced) < 100
        assert p.connections == 0


async def test_body_iterator_errors_pass_through() -> None:
    class Refused(Exception):
        pass

    async def body() -> AsyncIterator[bytes]:
        yield b"abc"
        raise Refused

    async def script(
        srv: Raw, reader: asyncio.StreamReader, w: asyncio.StreamWriter, n: int
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await srv.until_closed(reader)  # the body never ends: the client hangs up

    async with Raw(script) as srv, UpstreamPool(srv.url) as p:
        with pytest.raises(Refused):
            await p.request("POST", "/", [], body())
        assert p.connections == 0
        await asyncio.wait_for(srv.closed_by_client.wait(), 2)


async def test_header_injection_is_refused() -> None:
    async with Raw(serve_each(answer())) as srv, UpstreamPool(srv.url) as p:
        with pytest.raises(ValueError, match="CR or LF"):
            await p.request("GET", "/", [(b"X-A", b"1\r\nX-Injected: yes")])
        with pytest.raises(ValueError, match="CR or LF"):
            await p.request("GET", "/", [(b"X-A", b"1"), (b"X-B", b"2\n")])
        with pytest.raises(ValueError, match="request target"):
            await p.request("GET", "/a b")
        with pytest.raises(ValueError, match="HTTP method"):
            await p.request("GE T", "/")
        assert srv.connections == 0


async def test_cancelled_call_closes_its_connection() -> None:
    async def script(
        srv: Raw, reader: asyncio.StreamReader, w: asyncio.StreamWriter, n: int
    ) -> None:
        await srv.request(reader, n)
        await srv.until_closed(reader)  # never answers

    async with Raw(script) as srv, UpstreamPool(srv.url) as p:
        task = asyncio.create_task(p.request("GET", "/"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert p.connections == 0
        await asyncio.wait_for(srv.closed_by_client.wait(), 2)


async def test_cancelled_body_read_closes_the_connection() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10

    async def script(
        srv: Raw, reader: asyncio.StreamReader, w: asyncio.StreamWriter, n: int
    ) -> None:
        await srv.request(reader, n)
        w.write(data)
        await srv.until_closed(reader)  # the rest never comes

    async with Raw(script) as srv, UpstreamPool(srv.url) as p:
        resp = await p.request("GET", "/")
        task = asyncio.create_task(resp.read())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert p.connections == 0
        await asyncio.wait_for(srv.closed_by_client.wait(), 2)


async def test_closing_the_pool_fails_calls_in_flight_and_waiting() -> None:
    async def script(
        srv: Raw, reader: asyncio.StreamReader, w: asyncio.StreamWriter, n: int
    ) -> None:
        await srv.request(reader, n)
        await srv.until_closed(reader)

    async with Raw(script) as srv:
        p = UpstreamPool(srv.url, max_connections=1)
        first = asyncio.create_task(p.request("GET", "/"))
        second = asyncio.create_task(p.request("GET", "/"))
        await asyncio.sleep(0.1)
        await p.close()
        with pytest.raises(UpstreamClosed, match="pool was closed during the call"):
            await first
        with pytest.raises(UpstreamClosed, match="pool is closed"):
            await second
        with pytest.raises(UpstreamClosed):
            await p.request("GET", "/")
        assert p.connections == 0
        await asyncio.wait_for(srv.closed_by_client.wait(), 2)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_all_of_the_above_under_uvloop() -> None:
    """The gateway runs on uvloop, whose transports differ (reads, writelines, pausing):
    this module once more in a child pytest with tests.integration.uvloop_loops."""
    if os.environ.get(UNDER_UVLOOP):
        pytest.skip("this is the run under uvloop")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.integration.uvloop_loops",
            "-p",
            "no:cacheprovider",
            "-q",
            "-x",
            str(Path(__file__).relative_to(root)),
        ],
        cwd=root,
        env={**os.environ, UNDER_UVLOOP: "1"},
        capture_output=True,
        text=True,
        timeout=140,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "1 skipped" in proc.stdout
