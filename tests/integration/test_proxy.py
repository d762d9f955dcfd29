"""The proxy end to end: real gateway app, real upstream, real PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.routes import parse_routes
from tests.conftest import routes_yaml
from tests.fixture_types import (
    AiohttpClient,
    AiohttpServer,
    GatewayClient,
    GatewayFactory,
    SettingsFactory,
    WaitRows,
)
from tests.integration.upstream_app import pattern


def header_values(pairs: list[list[str]], name: str) -> list[str]:
    return [v for k, v in pairs if k.lower() == name.lower()]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_methods_query_headers_and_body_round_trip(
    gateway: GatewayClient, method: str
) -> None:
    body = b'{"room": 101}' if method in ("POST", "PUT", "PATCH") else None
    resp = await gateway.request(
        method,
        "/api/echo/rooms/101?a=1&b=%20x&a=2",
        data=body,
        headers={"X-Custom": "v1", "Content-Type": "application/json"},
    )
    assert resp.status == 200
    got = await resp.json()
    assert got["method"] == method
    assert got["raw_path"] == "/echo/rooms/101?a=1&b=%20x&a=2"
    assert header_values(got["headers"], "X-Custom") == ["v1"]
    assert base64.b64decode(got["body_b64"]) == (body or b"")
    assert resp.headers["X-Upstream"] == "echo"


async def test_forwarding_headers_and_request_id(gateway: GatewayClient) -> None:
    resp = await gateway.get(
        "/api/echo/x",
        headers={
            "X-Request-Id": "partner-req-42",
            "Connection": "keep-alive, X-Drop-Me",
            "X-Drop-Me": "1",
            "X-Forwarded-For": "6.6.6.6",
            "Proxy-Authorization": "Basic Zm9v",
        },
    )
    got = await resp.json()
    hdrs = got["headers"]
    assert resp.headers["X-Request-Id"] == "partner-req-42"
    assert header_values(hdrs, "X-Request-Id") == ["partner-req-42"]
    # An untrusted caller cannot forge its address.
    assert header_values(hdrs, "X-Forwarded-For") == ["127.0.0.1"]
    assert header_values(hdrs, "X-Forwarded-Proto") == ["http"]
    assert header_values(hdrs, "X-Forwarded-Host") == [f"127.0.0.1:{gateway.port}"]
    assert header_values(hdrs, "X-Drop-Me") == []  # named in Connection: hop-by-hop
    assert header_values(hdrs, "Proxy-Authorization") == []


async def test_invalid_request_id_is_replaced(gateway: GatewayClient) -> None:
    resp = await gateway.get("/api/echo/x", headers={"X-Request-Id": "bad id\twith spaces"})
    rid = resp.headers["X-Request-Id"]
    assert rid != "bad id\twith spaces"
    assert uuid.UUID(hex=rid)


async def test_trusted_proxy_chain(
    gateway_factory: GatewayFactory, db: asyncpg.Connection, wait_rows: WaitRows
) -> None:
    import ipaddress

    gw = await gateway_factory(trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    resp = await gw.get("/api/echo/x", headers={"X-Forwarded-For": "203.0.113.7"})
    got = await resp.json()
    assert header_values(got["headers"], "X-Forwarded-For") == ["203.0.113.7, 127.0.0.1"]
    rows = await wait_rows(1)
    assert str(rows[0]["client_ip"]) == "203.0.113.7"


async def test_binary_bodies_both_ways(gateway: GatewayClient) -> None:
    payload = pattern(5000)
    resp = await gateway.post("/api/upload", data=payload)
    assert (await resp.json())["sha256"] == hashlib.sha256(payload).hexdigest()
    resp = await gateway.get("/api/bytes?n=3000")
    assert await resp.read() == pattern(3000)


async def test_large_bodies_are_streamed(
    gateway_factory: GatewayFactory, wait_rows: WaitRows
) -> None:
    gw = await gateway_factory(stream_threshold_bytes=64 * 1024, capture_max_body_bytes=1024)
    size = 8 * 1024 * 1024

    async def gen() -> Any:
        for i in range(0, size, 1 << 20):
            yield pattern(size)[i : i + (1 << 20)]

    resp = await gw.post("/api/upload", data=gen())
    got = await resp.json()
    assert got["size"] == size
    assert got["sha256"] == hashlib.sha256(pattern(size)).hexdigest()
    resp = await gw.get(f"/api/bytes?n={size}&chunked=1")
    assert resp.headers.get("Transfer-Encoding") == "chunked"
    data = await resp.read()
    assert data == pattern(size)
    rows = await wait_rows(2)
    up, down = rows
    assert (up["request_body_size"], up["request_body_truncated"]) == (size, True)
    assert up["request_body_format"] == "binary"
    assert len(base64.b64decode(up["request_body"]["base64"])) == 1024
    assert (down["response_body_size"], down["response_body_truncated"]) == (size, True)


async def test_sse_is_passed_through_as_it_arrives(gateway: GatewayClient) -> None:
    resp = await gateway.get("/api/sse")
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    first = await resp.content.readuntil(b"\n\n")
    assert first.startswith(b"id: 0\n")
    rest = await resp.read()
    assert rest.count(b"event: room.status") == 2


async def test_websocket_pass_through(gateway: GatewayClient, wait_rows: WaitRows) -> None:
    async with gateway.ws_connect("/api/ws", protocols=("pms.v1",)) as ws:
        assert ws.protocol == "pms.v1"
        await ws.send_str("hello")
        assert (await ws.receive()).data == "echo:hello"
        await ws.send_bytes(b"\x01\x02\x03")
        assert (await ws.receive()).data == b"\x03\x02\x01"
        await ws.send_str("close")
        msg = await ws.receive()
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    rows = await wait_rows(1)
    assert rows[0]["status"] == 101
    summary = rows[0]["response_body"]["websocket"]
    assert summary["client_frames"] == 3
    assert summary["upstream_frames"] == 2
    assert summary["upstream_close_code"] == 4001


async def test_head_and_no_body_statuses(gateway: GatewayClient) -> None:
    resp = await gateway.head("/api/bytes?n=777")
    assert resp.status == 200
    assert resp.headers["Content-Length"] == "777"
    resp = await gateway.get("/api/status/204")
    assert resp.status == 204
    assert await resp.read() == b""


async def test_repeated_response_headers_survive(
    gateway: GatewayClient, wait_rows: WaitRows
) -> None:
    resp = await gateway.get("/api/json")
    assert resp.status == 201
    assert resp.headers.getall("Set-Cookie") == ["a=1", "b=2"]
    rows = await wait_rows(1)
    assert header_values(rows[0]["response_headers"], "Set-Cookie") == ["[REDACTED]", "[REDACTED]"]


async def test_upstream_status_passes_through(gateway: GatewayClient) -> None:
    resp = await gateway.get("/api/status/503")
    assert resp.status == 503
    assert await resp.json() == {"status": 503}


async def test_gzip_passes_through_compressed(gateway: GatewayClient, wait_rows: WaitRows) -> None:
    import gzip

    plain = b'{"guest": "Ada", "password": "hunter2"}'
    compressed = gzip.compress(plain)
    resp = await gateway.post(
        "/api/upload",
        data=compressed,
        headers={"Content-Encoding": "gzip"},
        compress=False,
    )
    # The upstream decoded what the gateway passed through untouched.
    assert (await resp.json())["sha256"] == hashlib.sha256(plain).hexdigest()
    rows = await wait_rows(1)
    # The log shows the decoded JSON (redacted); the upstream got the bytes untouched.
    assert rows[0]["request_body"] == {"guest": "Ada", "password": "[REDACTED]"}


async def test_error_answers_are_json_and_logged(
    gateway: GatewayClient, wait_rows: WaitRows
) -> None:
    cases = [
        ("GET", "/nowhere", 404, "route_not_found"),
        ("POST", "/ro/readonly", 405, "method_not_allowed"),
        ("GET", "/api/dead", 502, "upstream_unavailable"),
        ("GET", "/api/slow?delay=5", 504, "upstream_timeout"),
    ]
    for method, path, status, code in cases:
        resp = await gateway.request(method, path)
        assert resp.status == status, path
        body = await resp.json()
        assert body["code"] == code
        assert body["message"]
        assert body["request_id"] == resp.headers["X-Request-Id"]
        if status == 405:
            assert resp.headers["Allow"] == "GET"
    rows = await wait_rows(len(cases))
    assert sorted((r["status"], r["error_code"]) for r in rows) == sorted(
        (s, c) for _, _, s, c in cases
    )
    for r in rows:
        assert r["response_body"]["code"] == r["error_code"]
        assert r["error_message"]


async def raw_request(port: int | None, raw: bytes) -> bytes:
    """Send bytes exactly as given (clients normalise paths such as /a/%2e%2e/b) to a
    started server's port (``TestClient.port``, None only before it starts)."""
    assert port is not None, "the server is not started"
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    return data


@pytest.mark.parametrize(
    "path", ["/api/echo/a/%2e%2e/b", "/api/echo/a/../../b", "/api/echo/%2E%2E"]
)
async def test_dot_segments_are_refused(
    gateway: GatewayClient, wait_rows: WaitRows, path: str
) -> None:
    answer = await raw_request(
        gateway.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert orjson.loads(body)["code"] == "bad_path"
    (row,) = await wait_rows(1)
    assert row["status"] == 400 and row["error_code"] == "bad_path"


async def test_logged_row_fields(gateway: GatewayClient, wait_rows: WaitRows) -> None:
    resp = await gateway.post(
        "/api/echo/reservations?hotel=7",
        data=orjson.dumps({"guest": "Ada", "guest_passport": "X123", "card": {"cvv": "123"}}),
        headers={
            "Content-Type": "application/json",
            "User-Agent": "booking-engine/2.1",
            "Authorization": "Bearer sk_live_abc",
            "X-Partner-Signature": "sig",
            "X-Request-Id": "req-fields-1",
        },
    )
    assert resp.status == 200
    (row,) = await wait_rows(1)
    assert row["route"] == "echo"
    assert row["upstream"] == "main"
    assert row["method"] == "POST"
    assert row["path"] == "/api/echo/reservations"
    assert row["query"] == "hotel=7"
    assert row["request_id"] == "req-fields-1"
    assert row["status"] == 200
    assert row["user_agent"] == "booking-engine/2.1"
    assert str(row["client_ip"]) == "127.0.0.1"
    assert row["duration_ms"] > 0
    assert 0 < row["upstream_ms"] <= row["duration_ms"]
    assert row["request_body_format"] == "json"
    assert row["request_body"] == {
        "guest": "Ada",
        "guest_passport": "[REDACTED]",
        "card": {"cvv": "[REDACTED]"},
    }
    assert row["response_body_format"] == "json"
    assert row["response_body"]["method"] == "POST"
    assert header_values(row["request_headers"], "Authorization") == ["[REDACTED]"]
    assert header_values(row["request_headers"], "X-Partner-Signature") == ["[REDACTED]"]
    assert header_values(row["request_headers"], "User-Agent") == ["booking-engine/2.1"]
    assert row["tenant_id"] is None and row["api_key_id"] is None
    assert row["id"].version == 7
    # UUIDv7: the id's time part is created_at, so an id alone finds its day partition.
    assert row["id"].int >> 80 == int(row["created_at"].timestamp() * 1000)


async def test_response_redaction_and_truncation(
    gateway: GatewayClient, wait_rows: WaitRows
) -> None:
    await gateway.get("/api/json")
    await gateway.post(
        "/api/small/echo/x",
        data=b'{"password": "hunter2", "room": 1234567890}',
        headers={"Content-Type": "application/json"},
    )
    await gateway.post("/api/small/echo/y", data="ünïcödé text that is long enough to cut")
    await gateway.post("/api/echo/z", data=b"\xff\xfe\x00binary")
    rows = await wait_rows(4)
    by_path = {r["path"]: r for r in rows}
    js = by_path["/api/json"]["response_body"]
    assert js["token"] == "[REDACTED]"
    assert js["reservation"]["card_number"] == "[REDACTED]"
    assert js["items"] == [{"password": "[REDACTED]"}]
    small = by_path["/api/small/echo/x"]
    assert small["request_body_truncated"] is True
    assert small["request_body_format"] == "text"
    assert small["request_body_size"] == 43
    assert "hunter2" not in small["request_body"]
    text = by_path["/api/small/echo/y"]
    assert text["request_body_truncated"] is True
    assert len(text["request_body"].encode()) <= 16  # never a split character
    binary = by_path["/api/echo/z"]
    assert binary["request_body_format"] == "binary"
    assert base64.b64decode(binary["request_body"]["base64"]) == b"\xff\xfe\x00binary"


async def test_client_hanging_up_is_logged_as_499(
    gateway: GatewayClient, wait_rows: WaitRows
) -> None:
    import asyncio

    _reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(b"GET /api/slow?delay=0.4 HTTP/1.1\r\nHost: x\r\nX-Request-Id: gone-1\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.close()
    (row,) = await wait_rows(1, timeout=5)
    assert row["request_id"] == "gone-1"
    assert row["status"] == 499 and row["error_code"] == "client_disconnected"


async def test_gateway_endpoints(gateway: GatewayClient) -> None:
    assert (await (await gateway.get("/healthz")).json()) == {"status": "ok"}
    ready = await gateway.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["status"] == "ready"
    await gateway.get("/api/echo/m")
    text = await (await gateway.get("/metrics")).text()
    assert 'gateway_requests_total{method="GET",route="echo",status_class="2xx"}' in text
    assert "gateway_request_duration_seconds_bucket" in text


async def test_streamed_body_keeps_its_content_length(
    settings_factory: SettingsFactory,
    aiohttp_server: AiohttpServer,
    aiohttp_client: AiohttpClient,
) -> None:
    """A body above the stream threshold reaches the upstream with the Content-Length its
    caller sent, not chunked: an upstream that requires a length (411) takes it."""
    seen: list[tuple[str | None, str | None, int]] = []

    async def strict(request: web.Request) -> web.Response:
        body = await request.read()
        length, coding = (
            request.headers.get("Content-Length"),
            request.headers.get("Transfer-Encoding"),
        )
        seen.append((length, coding, len(body)))
        if length is None:
            return web.json_response({"error": "length required"}, status=411)
        return web.json_response({"sha256": hashlib.sha256(body).hexdigest()})

    up = web.Application()
    up.router.add_post("/{tail:.*}", strict)
    server = await aiohttp_server(up, host="127.0.0.1")
    url = str(server.make_url("")).rstrip("/")
    table = parse_routes(routes_yaml(url), "test-routes.yaml")
    gw = await aiohttp_client(create_app(settings_factory(stream_threshold_bytes=1024), table))
    payload = pattern(100_000)
    resp = await gw.post("/api/echo/up", data=payload)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["sha256"] == hashlib.sha256(payload).hexdigest()
    assert seen.pop() == (str(len(payload)), None, len(payload))

    async def gen() -> Any:  # no length given: streamed on chunked, as the caller sent it
        yield payload

    resp = await gw.post("/api/echo/up", data=gen())
    assert resp.status == 411 and seen[-1] == (None, "chunked", len(payload))


async def test_request_over_limit_is_refused(
    gateway_factory: GatewayFactory, wait_rows: WaitRows
) -> None:
    gw = await gateway_factory(max_request_bytes=1000)
    resp = await gw.post("/api/upload", data=b"x" * 5000)
    assert resp.status == 413
    assert (await resp.json())["code"] == "payload_too_large"
    (row,) = await wait_rows(1)
    assert row["status"] == 413


async def test_streamed_request_over_limit_is_refused(
    gateway_factory: GatewayFactory, wait_rows: WaitRows
) -> None:
    gw = await gateway_factory(max_request_bytes=200_000, stream_threshold_bytes=10_000)

    async def gen() -> Any:  # chunked: no Content-Length to refuse up front
        for _ in range(10):
            yield b"x" * 50_000

    resp = await gw.post("/api/upload", data=gen())
    assert resp.status == 413
    assert (await resp.json())["code"] == "payload_too_large"
    (row,) = await wait_rows(1)
    assert row["status"] == 413 and row["error_code"] == "payload_too_large"


async def test_retries_idempotent_requests_on_connection_failure(
    gateway_factory: GatewayFactory,
    unused_tcp_port_factory: Callable[[], int],
    wait_rows: WaitRows,
) -> None:
    """A GET to an upstream that comes up during the retry window succeeds."""
    import asyncio

    from aiohttp import web

    from tests.integration.upstream_app import make_upstream_app

    port = unused_tcp_port_factory()
    extra = """
  - name: flaky
    path: /flaky/{rest...}
    methods: [GET, POST]
    strip_prefix: /flaky
    upstream: flaky
    public: true
"""
    opts = f"""  flaky:
    url: http://127.0.0.1:{port}
    retries: 4
    retry_backoff: 0.2
"""
    gw = await gateway_factory(extra_routes=extra, upstream_opts=opts)
    runner = web.AppRunner(make_upstream_app())
    await runner.setup()

    async def start_later() -> None:
        await asyncio.sleep(0.3)
        await web.TCPSite(runner, "127.0.0.1", port).start()

    starter = asyncio.create_task(start_later())
    try:
        resp = await gw.get("/flaky/echo/r")
        assert resp.status == 200
        # POST is not idempotent: a refused connection is answered at once.
        await runner.cleanup()
        resp = await gw.post("/flaky/echo/r", data=b"{}")
        assert resp.status == 502
    finally:
        await starter
        await runner.cleanup()


async def test_no_default_headers_are_added_upstream(gateway: GatewayClient) -> None:
    """aiohttp's client adds Accept, Accept-Encoding, User-Agent (and Content-Type for
    bodies) when a request lacks them; a transparent proxy must not."""
    skip = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
    resp = await gateway.post("/api/echo/bare", data=b"raw", skip_auto_headers=skip)
    assert resp.status == 200
    seen = {name.lower() for name, _ in (await resp.json())["headers"]}
    assert not seen & {h.lower() for h in skip}, seen
    resp = await gateway.get(
        "/api/echo/with", headers={"User-Agent": "pms-partner/1.0", "Accept": "text/csv"}
    )
    got = dict((await resp.json())["headers"])
    assert got["User-Agent"] == "pms-partner/1.0" and got["Accept"] == "text/csv"
