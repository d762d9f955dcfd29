"""Upstream faults against the real gateway: slower than the read timeout (504), resetting
connections, hanging up without an answer, malformed HTTP and a body cut short (502).
Each is a JSON error with a stable code and one api_logs row carrying that code.
The faulty upstreams are raw asyncio servers on 127.0.0.1 that the test starts and stops.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.fixture_types import GatewayClient, GatewayFactory, WaitRows

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_head(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the request, then close with SO_LINGER 0: the peer gets a TCP RST."""
    await _read_head(reader)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_head(reader)
    writer.close()


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_head(reader)
    writer.write(b"SPEAKING NONSENSE \x00\xff\r\n\r\n<html>not http</html>")
    await writer.drain()
    writer.close()


async def bad_status_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_head(reader)
    writer.write(b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok")
    await writer.drain()
    writer.close()


async def bad_header(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nok")
    await writer.drain()
    writer.close()


async def short_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Promises 1000 bytes, sends 10, hangs up."""
    await _read_head(reader)
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    writer.write(b'{"a": "012')
    await writer.drain()
    writer.close()


async def too_slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Headers never come within the gateway's read timeout (1.5 s in the test routes)."""
    await _read_head(reader)
    await asyncio.sleep(4)
    writer.close()


async def trickle_after_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Headers at once, then the body stops for longer than the read timeout."""
    await _read_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
    await writer.drain()
    await asyncio.sleep(4)
    writer.close()


class FaultyUpstream:
    """One raw TCP server; ``behaviour`` decides what each connection gets."""

    def __init__(self) -> None:
        self.behaviour: Behaviour = garbage
        self.server: asyncio.Server | None = None
        self.port = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self.behaviour(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.tasks.discard(task)
            writer.transport.abort()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for task in list(self.tasks):  # connections still sleeping (too_slow, ...)
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.server.wait_closed()


@pytest.fixture
async def faulty() -> AsyncIterator[FaultyUpstream]:
    up = FaultyUpstream()
    await up.start()
    yield up
    await up.close()


@pytest.fixture
async def gw(gateway_factory: GatewayFactory, faulty: FaultyUpstream) -> GatewayClient:
    extra = """
  - name: faulty
    path: /faulty/{rest...}
    methods: [GET, POST]
    strip_prefix: /faulty
    upstream: faulty
    public: true
"""
    opts = f"""  faulty:
    url: http://127.0.0.1:{faulty.port}
    connect_timeout: 1
    read_timeout: 1.0
"""
    client: GatewayClient = await gateway_factory(extra_routes=extra, upstream_opts=opts)
    return client


CASES = [
    (too_slow, 504, "upstream_timeout"),
    (trickle_after_headers, 504, "upstream_timeout"),
    (reset, 502, "upstream_error"),
    (hang_up, 502, "upstream_error"),
    (garbage, 502, "upstream_error"),
    (bad_status_line, 502, "upstream_error"),
    (bad_header, 502, "upstream_error"),
    (short_body, 502, "upstream_error"),
]


@pytest.mark.parametrize(("behaviour", "status", "code"), CASES, ids=[c[0].__name__ for c in CASES])
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_upstream_faults_are_clean_json_errors_and_logged(
    gw: GatewayClient,
    faulty: FaultyUpstream,
    wait_rows: WaitRows,
    behaviour: Behaviour,
    status: int,
    code: str,
    method: str,
) -> None:
    faulty.behaviour = behaviour
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await gw.request(method, "/faulty/x", data=b'{"n": 1}' if method == "POST" else None)
    elapsed = loop.time() - started
    body = await resp.json()
    assert resp.status == status, body
    assert body["code"] == code and body["message"] and body["request_id"]
    assert "Traceback" not in body["message"]
    assert elapsed < 3.5  # the read timeout (1 s), not the upstream, decides
    (row,) = await wait_rows(1)
    assert row["status"] == status and row["error_code"] == code
    assert row["route"] == "faulty" and row["upstream"] == "faulty"
    assert row["error_message"]
    ok = await gw.get("/api/echo/still-fine")  # other upstreams are unaffected
    assert ok.status == 200
