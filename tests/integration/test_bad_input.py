"""Bad input against the real gateway (real PostgreSQL, real upstreams on 127.0.0.1):
size limits, oversized headers, slow clients, invalid UTF-8 and non-JSON bodies, header
injection, path traversal, enormous JSON nesting. Every refusal the gateway writes itself
is JSON with a ``code`` and one api_logs row; what aiohttp's parser refuses before the
gateway sees a request is documented (docs/proxy.md, "Bad input") and checked here as well.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.app import create_app
from gateway.auth import keys
from gateway.capture import partitions
from gateway.capture.record import DEFAULT_REDACT_FIELDS, Redactor, describe_body, now_utc
from gateway.mapping import store, textids
from gateway.mapping.store import Actor, NewMapping
from gateway.routes import parse_routes
from tests.conftest import routes_yaml
from tests.fixture_types import (
    AiohttpServer,
    GatewayClient,
    GatewayFactory,
    SettingsFactory,
    WaitRows,
)

READ_TIMEOUT = 5.0  # seconds a raw test client waits for the gateway's answer


async def raw_exchange(port: int | None, raw: bytes, timeout: float = READ_TIMEOUT) -> bytes:
    """Send bytes exactly as given; read one answer (headers + Content-Length bytes), or
    until the gateway closes. b"" when it closed without answering. ``port`` is a started
    server's (``TestClient.port``, None only before it starts)."""
    assert port is not None, "the server is not started"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        data = b""
        async with asyncio.timeout(timeout):
            while b"\r\n\r\n" not in data:
                chunk = await reader.read(65536)
                if not chunk:
                    return data
                data += chunk
            _, headers, body = split_answer(data)
            length = int(headers.get("content-length", "-1"))
            while len(body) < length or length < 0:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                body += chunk
            return data.partition(b"\r\n\r\n")[0] + b"\r\n\r\n" + body
    finally:
        writer.close()


def split_answer(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, body


def json_error(answer: bytes, status: int, code: str) -> dict[str, Any]:
    got, headers, body = split_answer(answer)
    assert got == status, answer[:300]
    assert headers["content-type"].startswith("application/json")
    payload: dict[str, Any] = orjson.loads(body)
    assert payload["code"] == code and payload["message"]
    return payload


def deep_json(levels: int, inner: bytes = b"1") -> bytes:
    return b'{"a":' * levels + inner + b"}" * levels


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


# -- sizes --------------------------------------------------------------------------------


async def test_declared_body_over_the_limit_is_refused_before_it_is_sent(
    gateway_factory: GatewayFactory, wait_rows: WaitRows
) -> None:
    gw = await gateway_factory(max_request_bytes=1000)
    answer = await raw_exchange(
        gw.port,
        b"POST /api/echo/x HTTP/1.1\r\nHost: x\r\nX-Request-Id: big-1\r\n"
        b"Content-Length: 1000000000000\r\nConnection: close\r\n\r\n",  # and no body at all
    )
    json_error(answer, 413, "payload_too_large")
    (row,) = await wait_rows(1)
    assert row["request_id"] == "big-1" and row["error_code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        (b"X-Big: " + b"a" * 40_000 + b"\r\n", "exceed the 32768 byte limit"),
        (b"".join(b"X-H%d: v\r\n" % i for i in range(200)), "at most 100 are accepted"),
    ],
    ids=["large", "many"],
)
async def test_oversized_headers_get_431_json_and_are_logged(
    gateway: GatewayClient, db: asyncpg.Connection, headers: bytes, words: str
) -> None:
    answer = await raw_exchange(
        gateway.port,
        b"GET /api/echo/h HTTP/1.1\r\nHost: x\r\nX-Request-Id: big-h\r\n" + headers + b"\r\n",
    )
    body = json_error(answer, 431, "headers_too_large")
    assert words in body["message"]
    for _ in range(100):
        rows = await db.fetch("SELECT request_id, status, error_code FROM api_logs")
        if rows:
            break
        await asyncio.sleep(0.05)
    assert [tuple(r) for r in rows] == [("big-h", 431, "headers_too_large")]


async def test_headers_beyond_the_parser_limits_are_refused_by_aiohttp(
    gateway: GatewayClient, db: asyncpg.Connection
) -> None:
    """Far beyond the gateway's limits (a 70 KB line) aiohttp's parser answers itself: 400
    text/plain, connection closed, nothing upstream or in api_logs: under this test's stock
    aiohttp server; `gateway serve` answers JSON and writes a row (docs/proxy.md,
    "Bad input"; tests/unit/test_http_server.py)."""
    answer = await raw_exchange(
        gateway.port,
        b"GET /api/echo/h HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
    )
    status, _, _ = split_answer(answer)
    assert status == 400
    ok = await gateway.get("/api/echo/after")  # the gateway keeps serving
    assert ok.status == 200
    await asyncio.sleep(0.3)
    paths = [r["path"] for r in await db.fetch("SELECT path FROM api_logs")]
    assert paths == ["/api/echo/after"]


# -- slow clients -------------------------------------------------------------------------


async def test_client_stalling_inside_its_headers_is_cut_off(
    gateway_factory: GatewayFactory,
) -> None:
    gw = await gateway_factory(client_timeout=0.5)
    started = time.monotonic()
    answer = await raw_exchange(gw.port, b"GET /api/echo/s HTTP/1.1\r\nHost: x\r\n", timeout=5)
    assert answer == b""  # closed without an answer: there is no request to answer yet
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("streamed", [False, True], ids=["buffered", "streamed"])
async def test_client_stalling_inside_its_body_is_answered_408(
    gateway_factory: GatewayFactory, wait_rows: WaitRows, streamed: bool
) -> None:
    """A client that stops sending its body is answered 408 after GATEWAY_CLIENT_TIMEOUT;
    it does not hold its handler (and, when streamed, an upstream connection) until it
    hangs up, which for a slowloris is never."""
    gw = await gateway_factory(
        client_timeout=0.5, stream_threshold_bytes=10 if streamed else 1 << 20
    )
    started = time.monotonic()
    answer = await raw_exchange(
        gw.port,
        b"POST /api/upload HTTP/1.1\r\nHost: x\r\nX-Request-Id: slow-body\r\n"
        b"Content-Length: 100\r\n\r\n" + b"x" * 40,
    )
    assert time.monotonic() - started < 4
    json_error(answer, 408, "request_timeout")
    (row,) = await wait_rows(1)
    assert row["request_id"] == "slow-body"
    assert row["status"] == 408 and row["error_code"] == "request_timeout"


STALLED_BODIES = {
    "buffered": b"Content-Length: 100\r\n\r\n" + b"x" * 40,
    "streamed": b"Content-Length: 100\r\n\r\n" + b"x" * 40,  # above the threshold below
    "chunked": b"Transfer-Encoding: chunked\r\n\r\n28\r\n" + b"x" * 40 + b"\r\n",
}


@pytest.mark.parametrize("kind", list(STALLED_BODIES))
async def test_stalled_body_ends_the_connection_after_the_client_timeout(
    gateway_factory: GatewayFactory, wait_rows: WaitRows, kind: str
) -> None:
    """The 408 and the end of the connection both come after GATEWAY_CLIENT_TIMEOUT: the
    connection is not kept for aiohttp's lingering time (10 s) after the 408 to "drain" a
    body that is not coming, so a client reading to the end waits the timeout, not + 10 s."""
    timeout = 1.0
    gw = await gateway_factory(
        client_timeout=timeout, stream_threshold_bytes=10 if kind == "streamed" else 1 << 20
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    started = time.monotonic()
    try:
        writer.write(b"POST /api/upload HTTP/1.1\r\nHost: x\r\n" + STALLED_BODIES[kind])
        async with asyncio.timeout(4 * timeout):  # bounded: a hanging gateway fails here
            answer = await reader.read()  # to the end of the connection
        elapsed = time.monotonic() - started
    finally:
        writer.close()
    json_error(answer, 408, "request_timeout")
    assert timeout * 0.9 < elapsed < timeout * 1.6, elapsed
    (row,) = await wait_rows(1)
    assert row["status"] == 408 and row["error_code"] == "request_timeout"


@pytest.mark.parametrize("streamed", [False, True], ids=["buffered", "streamed"])
async def test_client_hanging_up_inside_its_body_is_logged_as_499(
    settings_factory: SettingsFactory, upstream: TestServer, wait_rows: WaitRows, streamed: bool
) -> None:
    """Served as in production: aiohttp's run_app does not cancel the handler of a caller
    that hangs up (its TestServer always does, and then the cancellation alone says 499).
    The hang-up then surfaces in the body read, and is a 499 streamed upstream too, not
    the upstream's failure (502 upstream_error, an alert for the wrong team)."""
    url = str(upstream.make_url("")).rstrip("/")
    table = parse_routes(routes_yaml(url), "test-routes.yaml")
    config = settings_factory(stream_threshold_bytes=10 if streamed else 1 << 20)
    runner = web.AppRunner(create_app(config, table), handler_cancellation=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /api/upload HTTP/1.1\r\nHost: x\r\nX-Request-Id: gone-body\r\n"
            b"Content-Length: 100\r\n\r\n" + b"x" * 40
        )
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        await writer.wait_closed()
        (row,) = await wait_rows(1)
    finally:
        await runner.cleanup()
    assert row["request_id"] == "gone-body"
    assert (row["status"], row["error_code"]) == (499, "client_disconnected")


# -- bodies that are not what the route expects -------------------------------------------

TRANSLATED = """
  - name: tr-strict
    path: /tr/strict/{rest...}
    methods: [POST]
    strip_prefix: /tr/strict
    upstream: main
    translate:
      request_body: {/guest_id: guest}
  - name: tr-lenient
    path: /tr/lenient/{rest...}
    methods: [POST]
    strip_prefix: /tr/lenient
    upstream: main
    translate:
      request_body: {/guest_id: guest}
      on_unknown: pass
  - name: tr-deep
    path: /tr/deep/{rest...}
    methods: [GET, POST]
    strip_prefix: /tr/deep
    upstream: deep
    translate:
      request_body: {/guest_id: guest}
      response_body: {/guest_id: guest}
  - name: deep
    path: /deep/{rest...}
    methods: [GET, POST]
    strip_prefix: /deep
    upstream: deep
    public: true
"""
GUEST = str(uuid.uuid4())


async def deep_upstream(request: web.Request) -> web.Response:
    """Answers JSON nested ``levels`` deep (``guest`` puts an internal id at the top)."""
    levels = int(request.query["levels"])
    inner = deep_json(levels)
    if "guest" in request.query:
        inner = b'{"guest_id":"' + GUEST.encode() + b'","deep":' + inner + b"}"
    if request.method == "POST":
        await request.read()
    return web.Response(body=inner, content_type="application/json")


@pytest.fixture
async def partner(db: asyncpg.Connection) -> dict[str, str]:
    tenant = await keys.create_tenant(db, "Hotel Input", "test")
    _, token = await keys.create_key(
        db, tenant.id, "partner", actor="test", external_system="booking_engine"
    )
    new = NewMapping("guest", uuid.UUID(GUEST), "booking_engine", "G-1")
    await store.create(db, tenant.id, new, Actor("test", None))
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def gw(gateway_factory: GatewayFactory, aiohttp_server: AiohttpServer) -> GatewayClient:
    app = web.Application(client_max_size=1 << 24)
    app.router.add_route("*", "/{tail:.*}", deep_upstream)
    server: TestServer = await aiohttp_server(app, host="127.0.0.1")
    opts = f"  deep:\n    url: {str(server.make_url('')).rstrip('/')}\n"
    client: GatewayClient = await gateway_factory(TRANSLATED, opts, capture_max_body_bytes=1 << 20)
    return client


BAD_BODIES = [
    (b"\xff\xfe{\x80}", "application/json"),  # invalid UTF-8
    (b'{"guest_id": "G-1",', "application/json"),  # truncated JSON
    (b"guest_id=G-1", "application/x-www-form-urlencoded"),  # not JSON at all
    (b"\x00\x00\x00", "application/json"),
]


@pytest.mark.parametrize(("body", "ctype"), BAD_BODIES)
async def test_bad_bodies_on_translated_routes_are_refused_or_passed(
    gw: GatewayClient, partner: dict[str, str], wait_rows: WaitRows, body: bytes, ctype: str
) -> None:
    headers = {**partner, "Content-Type": ctype}
    strict = await gw.post("/tr/strict/echo/x", data=body, headers=headers)
    assert strict.status == 400
    assert (await strict.json())["code"] == "malformed_body"
    lenient = await gw.post("/tr/lenient/echo/x", data=body, headers=headers)
    assert lenient.status == 200  # forwarded untranslated, as configured
    plain = await gw.post("/api/echo/x", data=body, headers={"Content-Type": ctype})
    assert plain.status == 200  # untranslated routes just pass bodies through
    rows = await wait_rows(3)
    assert [r["status"] for r in rows] == [400, 200, 200]
    assert rows[0]["error_code"] == "malformed_body"
    assert rows[1]["translated"]["request_body"].startswith("not translated")
    assert all(r["request_body_format"] in ("text", "binary") for r in rows)


# -- enormous nesting ----------------------------------------------------------------------


@pytest.mark.parametrize("levels", [300, 1000, 100_000])
async def test_enormous_nesting_in_bodies_never_fails_capture(
    gw: GatewayClient, wait_rows: WaitRows, levels: int
) -> None:
    """Requests and answers nested up to 100,000 levels pass through a plain route; the
    log keeps them (as JSON when storable, as text otherwise) and never a 500."""
    secret = levels <= 1000  # the 100,000-level body is an array (200 KB, still buffered)
    body = b'{"password":"p","a":' * levels + b"1" + b"}" * levels if secret else deep(levels)
    resp = await gw.post(f"/deep/x?levels={levels}", data=body)
    assert resp.status == 200
    assert len(await resp.read()) == len(deep_json(levels))
    (row,) = await wait_rows(1)
    assert row["status"] == 200 and row["error_code"] is None
    assert row["request_body_format"] == "text"  # too deep for jsonb's encoder: kept as text
    assert secret is ('"password":"[REDACTED]"' in row["request_body"])  # still redacted
    assert '"password":"p"' not in row["request_body"]
    assert row["response_body_format"] == "text"


@pytest.mark.parametrize("levels", [300, 1000, 100_000])
async def test_enormous_nesting_on_translated_routes(
    gw: GatewayClient, partner: dict[str, str], wait_rows: WaitRows, levels: int
) -> None:
    """Bodies with an id to rewrite and nested deeper than orjson writes (254 levels) are
    translated in their text, as deep as JSON is read (1,024 levels; they were a 400 when
    the translation wrote the body from its parsed value, as it still does where the C
    scanner is not built). Deeper ones are not JSON to the gateway: 400 for a request on a
    route that refuses unknown ids, an answer passed on as it is; never a 500."""
    readable = levels < 1024
    written = readable and textids.AVAILABLE  # else the walk: no more than 254 levels out
    body = b'{"guest_id":"G-1","deep":' + deep(levels) + b"}"
    req = await gw.post("/tr/deep/x?levels=1", data=body, headers=partner)
    if written:
        assert req.status == 200 and await req.read() == deep_json(1)
    else:
        assert req.status == 400
        assert (await req.json())["code"] == "malformed_body"
    answer = await gw.get(f"/tr/deep/x?levels={levels}&guest=1", headers=partner)
    data = await answer.read()
    if readable and not written:
        assert answer.status == 502 and orjson.loads(data)["code"] == "upstream_error"
    else:
        assert answer.status == 200
        guest = b"G-1" if written else GUEST.encode()
        assert data == b'{"guest_id":"' + guest + b'","deep":' + deep_json(levels) + b"}"
    rows = sorted(await wait_rows(2), key=lambda r: r["method"], reverse=True)  # POST, GET
    assert [r["status"] for r in rows] == [req.status, answer.status]
    if written:
        sides = ("request", "response")
        counts = [(r["translated"] or {}).get(side) for r, side in zip(rows, sides, strict=True)]
        assert counts == [{"body:/guest_id": 1}] * 2


# -- header injection and path traversal --------------------------------------------------

INJECTIONS = [  # (header lines, what aiohttp's parser answers)
    (b"X-Note: a\r\nX-Injected: 1\r\n", 200),  # a plain second header (control)
    (b"X-Note: a\rX-Injected: 1\r\n", 400),  # bare CR inside a value
    (b"X-Note: a\nX-Injected: 2\r\n", 400),  # bare LF inside a value
    (b"X-Note: a\r\n X-Injected: 3\r\n", 400),  # obsolete line folding
    (b"X-Note: a%0d%0aX-Injected: 4\r\n", 200),  # encoded CR/LF stays text
    (b"X-Note: a\x00X-Injected: 5\r\n", 400),  # NUL
    (b"X-Request-Id: ok\r\nX-Injected: 6\r\n", 200),
]


@pytest.mark.parametrize(("line", "expected"), INJECTIONS)
async def test_header_injection_never_reaches_the_upstream(
    gateway: GatewayClient, db: asyncpg.Connection, line: bytes, expected: int
) -> None:
    answer = await raw_exchange(
        gateway.port,
        b"GET /api/echo/inj HTTP/1.1\r\nHost: x\r\n" + line + b"Connection: close\r\n\r\n",
    )
    status, _, body = split_answer(answer)
    assert status == expected, answer[:200]
    if status == 400:  # refused by aiohttp's parser (docs/proxy.md, "Bad input"): nothing forwarded
        await asyncio.sleep(0.2)
        assert await db.fetchval("SELECT count(*) FROM api_logs") == 0
        return
    seen = orjson.loads(body)["headers"]
    for _name, value in seen:
        assert "\r" not in value and "\n" not in value and "\x00" not in value
    injected = [v for n, v in seen if n.lower() == "x-injected"]
    if b"%0d%0a" in line:
        assert not injected, seen  # a value never turns into a header upstream
    else:
        assert injected  # a real second header is a header


TRAVERSALS = [
    "/api/echo/../../etc/passwd",
    "/api/echo/./x",
    "/api/echo/%2e%2e/%2e%2e/etc/passwd",
    "/api/echo/%2E%2e/x",
    "/api/echo/.%2e/x",
    "/api/echo/%252e%252e/%252e%252e/etc/passwd",  # double-encoded
    "/api/echo/%25252e%25252e/x",  # triple-encoded
    "/api/echo/a%2f..%2f..%2fetc",
    "/api/echo/a%252f..%252fb",
    "/api/echo/..%5c..%5cwindows",  # backslash separators
    "/api/echo/..\\x",
]


@pytest.mark.parametrize("path", TRAVERSALS)
async def test_path_traversal_is_refused(
    gateway: GatewayClient, wait_rows: WaitRows, path: str
) -> None:
    answer = await raw_exchange(
        gateway.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    json_error(answer, 400, "bad_path")
    (row,) = await wait_rows(1)
    assert row["status"] == 400 and row["error_code"] == "bad_path"


@pytest.mark.parametrize(
    "host",
    [b"a b\tc", b"a b", b"exa mple.com", b"a/b", b"a@evil", b"[::1", b"a:b:c", b"\xc3\xbcber"],
)
async def test_invalid_host_is_refused(
    gateway: GatewayClient, wait_rows: WaitRows, host: bytes
) -> None:
    """A Host no host[:port] could be used to reach the upstream as X-Forwarded-Host."""
    answer = await raw_exchange(
        gateway.port,
        b"GET /api/echo/h HTTP/1.1\r\nHost: " + host + b"\r\nX-Request-Id: bad-host\r\n"
        b"Connection: close\r\n\r\n",
    )
    json_error(answer, 400, "bad_host")
    (row,) = await wait_rows(1)
    assert row["request_id"] == "bad-host"
    assert row["status"] == 400 and row["error_code"] == "bad_host"


@pytest.mark.parametrize("host", [b"api.example.com:8080", b"127.0.0.1", b"[::1]:80", b"x_y"])
async def test_valid_hosts_pass(gateway: GatewayClient, host: bytes) -> None:
    answer = await raw_exchange(
        gateway.port,
        b"GET /api/echo/h HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n",
    )
    status, _, body = split_answer(answer)
    assert status == 200, answer[:300]
    forwarded = [v for n, v in orjson.loads(body)["headers"] if n.lower() == "x-forwarded-host"]
    assert forwarded == [host.decode()]


@pytest.mark.parametrize("path", ["/api/echo/file.json", "/api/echo/a..b/c.", "/api/echo/%2e%2ex"])
async def test_dots_that_are_not_segments_pass(gateway: GatewayClient, path: str) -> None:
    answer = await raw_exchange(
        gateway.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    assert split_answer(answer)[0] == 200


# -- capture: any body is storable in real PostgreSQL --------------------------------------


async def test_any_captured_body_is_accepted_by_jsonb(
    db: asyncpg.Connection, tmp_path: Any
) -> None:
    """describe_body's output for arbitrary bytes and JSON, written through the real jsonb
    codec into api_logs (hypothesis draws them; PostgreSQL judges them, one row each)."""
    redactor = Redactor(DEFAULT_REDACT_FIELDS)
    bodies: list[Any] = []
    json_values = st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**63)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda kids: (
            st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4)
        ),
        max_leaves=25,
    )
    raw = (
        st.binary(max_size=300)
        | json_values.map(orjson.dumps)
        | st.sampled_from(
            [deep_json(300), deep_json(2000), b"[" * 100_000, b'"\\u0000"', b'"\\ud800"']
        )
    )

    @settings(
        max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(data=raw, cap=st.integers(0, 400), ctype=st.sampled_from(["", "application/json"]))
    def draw(data: bytes, cap: int, ctype: str) -> None:
        bodies.append(describe_body(data, len(data), cap, redactor, ctype))

    draw()
    await partitions.ensure_partitions(db, {now_utc().date()})
    refused = []
    for body in bodies:
        try:
            await db.execute(
                "INSERT INTO api_logs (id, created_at, request_id, method, path, query, "
                "request_headers, request_body, request_body_format, request_body_size, "
                "request_body_truncated, response_body_format, response_body_size, status, "
                "duration_ms) VALUES (gen_random_uuid(), now(), 'prop', 'POST', '/', '', '[]', "
                "$1, $2, $3, $4, 'empty', 0, 200, 1)",
                body.value,
                body.format,
                body.size,
                body.truncated,
            )
        except (asyncpg.DataError, TypeError) as exc:
            refused.append((body, exc))
    assert not refused, refused[:3]
    assert await db.fetchval("SELECT count(*) FROM api_logs WHERE request_id = 'prop'") == len(
        bodies
    )


# -- the admin API's JSON bodies ----------------------------------------------------------


@pytest.mark.parametrize("levels", [300, 1000, 100_000])
async def test_enormous_nesting_in_admin_bodies_is_a_json_error(
    gateway: GatewayClient, db: asyncpg.Connection, levels: int
) -> None:
    """An event payload nested deeper than the jsonb encoder writes (254 levels) failed
    inside the database call: a 500 instead of a 400. Now a payload nested deeper than
    the documented 64 levels is refused as content (422 naming the field), and one too
    deep to decode at all (msgspec stops at about 1,000 levels) as malformed JSON."""
    tenant = await keys.create_tenant(db, "Hotel Admin Input", "test")
    _, token = await keys.create_key(db, tenant.id, "service", actor="test")
    body = b'{"type": "room.ready", "payload": ' + deep_json(levels) + b"}"
    resp = await gateway.post(
        "/admin/v1/events",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    payload = await resp.json()
    if levels < 1000:
        assert resp.status == 422 and payload["field"] == "payload", payload
    else:
        assert resp.status == 400 and payload["code"] == "malformed_json", payload
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0
