"""The gateway's own protocol handler (gateway/proxy/server.py), served as ``gateway serve``
serves it: requests aiohttp's parser refuses get the gateway's JSON 400 (never echoing
their bytes), an api_logs row and one rate-limited warning without secrets or traceback;
CONNECT and ``OPTIONS *`` are refused with JSON and a row; admin API calls are logged
(route ``admin``, bodies omitted); a call cut off at shutdown is 503 ``shutting_down``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from gateway.app import PROXY, create_app
from gateway.auth import keys
from gateway.proxy.calllog import ADMIN_ROUTE
from gateway.proxy.server import LOG_LINES_PER_SECOND, GatewayRunner
from gateway.routes import parse_routes
from gateway.web.http import LOGGED
from tests.conftest import routes_yaml
from tests.fixture_types import SettingsFactory
from tests.integration.fault_helpers import GatewayProcess
from tests.integration.test_bad_input import json_error, raw_exchange, split_answer
from tests.integration.test_faults_under_load import gateway_env

SECRET = "gwk_" + "S3cr3tT0ken" * 4  # a live-looking token: must reach no log, answer or row
ROW_COLUMNS = (
    "method, path, query, status, error_code, host(client_ip) AS client_ip, route, "
    "request_headers::text AS h, "
    "tenant_id, api_key_id, request_body_format, response_body_format, request_body, "
    "response_body"
)


def req(head: bytes, rid: str) -> bytes:
    """A request line, an X-Request-Id, then ``head`` (more header lines), then the end."""
    line, _, rest = head.partition(b"\r\n")
    return line + b"\r\nX-Request-Id: " + rid.encode() + b"\r\n" + rest + b"\r\n\r\n"


S = SECRET.encode()
# (id, request bytes; the request line first, other lines after the X-Request-Id)
MALFORMED = [
    ("lowercase-method", b"get /api/echo/m HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + S),
    ("unknown-method", b"FROB /api/echo/m HTTP/1.1\r\nHost: x\r\nX-Api-Key: " + S),
    ("bad-version", b"GET /api/echo/m?api_key=" + S + b" HTTP/9.9\r\nHost: x"),
    ("bad-protocol", b"GET /api/echo/m?api_key=" + S + b" HTXP/1.1\r\nHost: x"),
    ("space-in-target", b"GET /api/echo/a b HTTP/1.1\r\nHost: x\r\nX-Api-Key: " + S),
    ("invalid-utf8", b"GET /api/echo/\xff\xfe HTTP/1.1\r\nHost: x\r\nX-Api-Key: " + S),
    ("no-colon", b"GET /api/echo/m HTTP/1.1\r\nHost: x\r\nAuthorization Bearer " + S),
    ("missing-host", b"GET /api/echo/m HTTP/1.1\r\nX-Api-Key: " + S),
    ("duplicate-host", b"GET /api/echo/m HTTP/1.1\r\nHost: a\r\nHost: b\r\nX-Api-Key: " + S),
    (
        "cl-and-te",
        b"POST /api/echo/m HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\nX-Api-Key: " + S,
    ),
    (
        "two-content-lengths",
        b"POST /api/echo/m HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6",
    ),
    (
        "control-byte",
        b"GET /api/echo/m HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + S + b"\x01",
    ),
    ("nul", b"GET /api/echo/m HTTP/1.1\r\nHost: x\r\nX-Api-Key: " + S + b"\x00x"),
    ("obs-fold", b"GET /api/echo/m HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer\r\n " + S),
]


@pytest.fixture
async def served(
    settings_factory: SettingsFactory, upstream: TestServer
) -> AsyncIterator[tuple[int, web.Application, GatewayRunner]]:
    """The real app served through GatewayRunner on 127.0.0.1, as ``gateway serve`` does."""
    url = str(upstream.make_url("")).rstrip("/")
    table = parse_routes(routes_yaml(url), "test-routes.yaml")
    app = create_app(settings_factory(shutdown_timeout=0.5), table)
    runner = GatewayRunner(app, proxy_key=PROXY, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield port, app, runner
    await runner.cleanup()  # idempotent after a test's own cleanup


async def row_of(db: asyncpg.Connection, where: str, *args: Any) -> asyncpg.Record:
    for _ in range(100):
        row = await db.fetchrow(f"SELECT {ROW_COLUMNS} FROM api_logs WHERE {where}", *args)
        if row is not None:
            return row
        await asyncio.sleep(0.05)
    raise AssertionError(f"no api_logs row where {where} {args}")


def assert_clean_log(caplog: pytest.LogCaptureFixture) -> None:
    """No secret, no traceback, nothing from aiohttp's own error logging."""
    for record in caplog.records:
        assert SECRET not in record.getMessage(), record.getMessage()
        assert record.exc_info is None, record.getMessage()
        assert record.name != "aiohttp.server", record.getMessage()


@pytest.mark.parametrize(("kind", "raw"), MALFORMED, ids=[k for k, _ in MALFORMED])
async def test_parser_rejects_are_json_logged_and_leak_nothing(
    served: tuple[int, web.Application, GatewayRunner],
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    raw: bytes,
) -> None:
    port = served[0]
    caplog.set_level(logging.DEBUG)
    answer = await raw_exchange(port, req(raw, f"bad-{kind}"))
    payload = json_error(answer, 400, "bad_request")
    assert payload["request_id"] == f"bad-{kind}"
    _, _, body = split_answer(answer)
    assert SECRET.encode() not in answer and b"\xff" not in body and b"HTTP/9.9" not in body
    row = await row_of(db, "request_id = $1", f"bad-{kind}")
    assert (row["status"], row["error_code"], row["client_ip"]) == (400, "bad_request", "127.0.0.1")
    assert row["path"].startswith("/api/echo/") and row["method"]
    assert SECRET not in row["h"] and SECRET not in row["query"]
    assert_clean_log(caplog)
    warnings = [r for r in caplog.records if r.name == "gateway.http"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "api_key" not in warnings[0].getMessage()  # no query in the line
    ok = await raw_exchange(port, b"GET /api/echo/after HTTP/1.1\r\nHost: x\r\n\r\n")
    assert split_answer(ok)[0] == 200  # and the gateway keeps serving


async def test_connect_and_asterisk_options_are_refused_with_a_row(
    served: tuple[int, web.Application, GatewayRunner], db: asyncpg.Connection
) -> None:
    port = served[0]
    connect = (
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nX-Request-Id: c1\r\n\r\n"
    )
    json_error(await raw_exchange(port, connect), 405, "method_not_allowed")
    star = b"OPTIONS * HTTP/1.1\r\nHost: x\r\nX-Request-Id: o1\r\n\r\n"
    json_error(await raw_exchange(port, star), 400, "bad_request")
    c1 = await row_of(db, "request_id = 'c1'")
    assert (c1["method"], c1["status"], c1["error_code"]) == ("CONNECT", 405, "method_not_allowed")
    o1 = await row_of(db, "request_id = 'o1'")
    assert (o1["method"], o1["path"], o1["status"]) == ("OPTIONS", "*", 400)


async def test_a_flood_of_bad_requests_is_a_few_log_lines_and_every_row(
    served: tuple[int, web.Application, GatewayRunner],
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = served[0]
    caplog.set_level(logging.INFO)
    bad = b"GET /api/echo/f HTTP/1.1\r\nHost: x\r\nX-Api-Key: " + S + b"\x00\r\n\r\n"
    for start in range(0, 200, 20):  # 20 connections at a time
        await asyncio.gather(*(raw_exchange(port, bad) for _ in range(20)))
        del start
    await asyncio.sleep(1.2)  # the suppressed count is logged once the second is over
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.http"]
    refused = [m for m in lines if m.startswith("malformed HTTP request refused")]
    counted = [int(m.split()[0]) for m in lines if "not logged" in m]
    assert len(refused) <= 3 * LOG_LINES_PER_SECOND, lines
    assert len(refused) + sum(counted) == 200, lines
    assert_clean_log(caplog)
    for _ in range(100):
        if await db.fetchval("SELECT count(*) FROM api_logs WHERE path = '/api/echo/f'") == 200:
            break
        await asyncio.sleep(0.05)
    assert await db.fetchval("SELECT count(*) FROM api_logs WHERE path = '/api/echo/f'") == 200


async def test_admin_calls_are_logged_without_bodies(
    served: tuple[int, web.Application, GatewayRunner], db: asyncpg.Connection
) -> None:
    port, app, _ = served
    admin_paths = [
        r
        for r in app.router.routes()
        if r.resource is not None and r.resource.canonical.startswith("/admin/")
    ]
    assert admin_paths and all(r.handler in LOGGED for r in admin_paths)
    tenant = await keys.create_tenant(db, "Hotel Admin", "test")
    key, token = await keys.create_key(db, tenant.id, "admin", actor="test")
    base = f"http://127.0.0.1:{port}/admin/v1"
    async with ClientSession() as http:
        async with http.get(base + "/keys", headers={"X-Request-Id": "adm-401"}) as r:
            assert r.status == 401
        auth = {"Authorization": f"Bearer {token}", "X-Request-Id": "adm-200"}
        async with http.get(base + "/keys", headers=auth) as r:
            assert r.status == 200
        made = {**auth, "X-Request-Id": "adm-201"}
        async with http.post(base + "/keys", json={"role": "viewer"}, headers=made) as r:
            assert r.status == 201
            new_token = (await r.json())["token"]
    refused = await row_of(db, "request_id = 'adm-401'")
    assert (refused["route"], refused["status"], refused["tenant_id"]) == (ADMIN_ROUTE, 401, None)
    assert refused["error_code"] == "missing_api_key"
    ok = await row_of(db, "request_id = 'adm-200'")
    assert (ok["route"], ok["status"]) == (ADMIN_ROUTE, 200)
    assert (ok["tenant_id"], ok["api_key_id"]) == (tenant.id, key.id)
    assert token not in ok["h"] and "[REDACTED]" in ok["h"]
    created = await row_of(db, "request_id = 'adm-201'")
    assert (created["request_body_format"], created["response_body_format"]) == ("omitted",) * 2
    assert created["request_body"] is None and created["response_body"] is None
    dump = orjson.dumps([dict(r) for r in await db.fetch("SELECT * FROM api_logs")], default=str)
    assert new_token.encode() not in dump and token.encode() not in dump


async def test_a_call_cut_off_at_shutdown_is_503_shutting_down(
    served: tuple[int, web.Application, GatewayRunner], db: asyncpg.Connection
) -> None:
    port, _, runner = served
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /api/slow?delay=5 HTTP/1.1\r\nHost: x\r\nX-Request-Id: cut-1\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.3)  # the call is at the upstream (read timeout 1.5 s)
    await runner.cleanup()  # shutdown_timeout 0.5 s, then the handler is cancelled
    writer.close()
    row = await row_of(db, "request_id = 'cut-1'")
    assert (row["status"], row["error_code"]) == (503, "shutting_down")


@pytest.mark.slow
async def test_gateway_process_log_has_no_token_no_traceback_and_few_lines(
    database_url: str, upstream: TestServer, tmp_path: Path, db: asyncpg.Connection
) -> None:
    """``python -m gateway serve``: every malformed kind, then a flood; SIGTERM cuts a slow
    call (503 shutting_down) and the process exits 0 through the gateway's own runner."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(routes_yaml(str(upstream.make_url("")).rstrip("/")))
    env = gateway_env(database_url, tmp_path / "d", GATEWAY_SHUTDOWN_TIMEOUT="0.5")
    gw = GatewayProcess(tmp_path, routes, env)
    try:
        await gw.start()
        for kind, raw in MALFORMED:
            json_error(await raw_exchange(gw.port, req(raw, f"p-{kind}")), 400, "bad_request")
        flood = req(MALFORMED[-1][1], "flood")
        for _ in range(10):
            await asyncio.gather(*(raw_exchange(gw.port, flood) for _ in range(20)))
        _, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"GET /api/slow?delay=8 HTTP/1.1\r\nHost: x\r\nX-Request-Id: p-cut\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.3)  # at the upstream (read timeout 1.5 s): cut at 0.5 s
        gw.signal(signal.SIGTERM)
        assert await gw.wait(20) == 0, gw.output()[-2000:]
        writer.close()
    finally:
        gw.kill()
    output = gw.output()
    assert SECRET not in output and "Traceback" not in output, output[-3000:]
    refused = len(re.findall(r"malformed HTTP request refused", output))
    assert refused <= 4 * LOG_LINES_PER_SECOND, refused  # 214 bad requests, a few lines
    rows = await db.fetchval("SELECT count(*) FROM api_logs WHERE error_code = 'bad_request'")
    assert rows == len(MALFORMED) + 200
    cut = await db.fetchrow("SELECT status, error_code FROM api_logs WHERE request_id = 'p-cut'")
    assert tuple(cut) == (503, "shutting_down")


async def test_proxied_calls_skip_the_application_and_its_own_paths_do_not(
    served: tuple[int, web.Application, GatewayRunner], db: asyncpg.Connection
) -> None:
    """Proxied calls go from the server straight to the proxy's handler (no router, match
    info, middleware); the admin API, health and metrics, and a request with ``Expect``
    (the application answers 100-continue), take the application's way. Either way the
    answer is the same as before."""
    port, _, runner = served
    server = runner.server
    assert server is not None
    through_app: list[str] = []
    app_handle = server._app_handle  # type: ignore[attr-defined]

    def counting(request: web.BaseRequest) -> Any:
        through_app.append(request.raw_path)
        return app_handle(request)

    server._app_handle = counting  # type: ignore[attr-defined]
    proxied = await raw_exchange(port, req(b"GET /api/echo/direct HTTP/1.1\r\nHost: x", "d-1"))
    assert split_answer(proxied)[0] == 200
    assert (await row_of(db, "request_id = $1", "d-1"))["status"] == 200
    assert through_app == []
    for path, status in (
        ("/healthz", 200),
        ("/admin/v1/tenant", 401),
        ("/%61dmin/v1/tenant", 401),  # the router reads it decoded: still the admin API
        ("/admin/v1/logs/not-a-uuid", 401),
    ):
        answer = await raw_exchange(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert split_answer(answer)[0] == status, (path, answer[:200])
        assert through_app[-1] == path
    body = b'{"a": 1}'
    expect = await raw_exchange(
        port,
        b"POST /api/echo/e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: 8\r\n\r\n" + body,
    )
    assert expect.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200"), expect[:200]
    assert through_app[-1] == "/api/echo/e"
    assert len(through_app) == 5


@pytest.mark.parametrize(
    ("request_line", "extra", "connection", "stays_open"),
    [
        (b"GET /api/echo/k HTTP/1.1", b"", None, True),
        (b"GET /api/echo/k HTTP/1.1", b"Connection: close\r\n", b"close", False),
        (b"GET /api/echo/k HTTP/1.0", b"", None, False),
        (b"GET /api/echo/k HTTP/1.0", b"Connection: keep-alive\r\n", b"keep-alive", True),
    ],
)
async def test_buffered_answers_keep_http_framing_and_keep_alive(
    served: tuple[int, web.Application, GatewayRunner],
    request_line: bytes,
    extra: bytes,
    connection: bytes | None,
    stays_open: bool,
) -> None:
    """Buffered answers are written as bytes (gateway/proxy/answer.py): the status line
    in the caller's HTTP version, Content-Length, Connection as aiohttp would set it, and
    the connection kept or closed accordingly."""
    reader, writer = await asyncio.open_connection("127.0.0.1", served[0])
    try:
        writer.write(request_line + b"\r\nHost: x\r\n" + extra + b"\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        version = request_line.rsplit(b" ", 1)[1]
        assert head.startswith(version + b" 200 OK\r\n"), head
        fields = {
            k.lower(): v for k, _, v in (ln.partition(b": ") for ln in head.split(b"\r\n")[1:])
        }
        body = await asyncio.wait_for(reader.readexactly(int(fields[b"content-length"])), 10)
        assert orjson.loads(body)["path"].endswith("/echo/k")
        assert fields.get(b"connection") == connection
        assert b"x-request-id" in fields and b"date" in fields
        rest = await asyncio.wait_for(reader.read(1), 2 if not stays_open else 0.5)
        assert rest == b"" and not stays_open, "the connection should have stayed open"
    except TimeoutError:
        assert stays_open, "the gateway kept a connection open that should have closed"
    finally:
        writer.close()
