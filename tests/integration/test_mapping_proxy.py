"""ID translation in the proxy, against real PostgreSQL and a real upstream (upstream_app):
path, query and nested/array body ids both ways, unknown-id policies, direction,
auto-mapping, one query per request, invalidation by SQL, malformed bodies, api_logs."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway import metrics
from gateway.auth import keys
from gateway.capture import scan as capture_scan
from gateway.mapping import store, textids
from gateway.mapping.flow import Flow, TextIds
from gateway.mapping.store import Actor, Direction, NewMapping
from tests.fixture_types import AiohttpServer, GatewayClient, GatewayFactory, WaitRows
from tests.integration import upstream_app

ROUTES = """
  - name: tr-mirror
    path: /tr/mirror/reservations/{reservation_id}
    methods: [GET, POST, PUT]
    strip_prefix: /tr
    upstream: main
    translate:
      path: {reservation_id: reservation}
      query: {guest: guest}
      request_body: {/guest_id: guest, /items/*/room_id: room}
      response_body: {/body/guest_id: guest, /body/items/*/room_id: room}
  - name: tr-pass
    path: /tp/mirror/{rest...}
    methods: [GET, POST]
    strip_prefix: /tp
    upstream: main
    translate:
      query: {guest: guest}
      request_body: {/guest_id: guest}
      response_body: {/body/guest_id: guest}
      on_unknown: pass
  - name: tr-create
    path: /tr/create
    methods: [POST]
    strip_prefix: /tr
    upstream: main
    translate:
      request_body: {/guest_id: guest}
      response_body: {/id: reservation, /guest_id: guest}
      auto_map: {entity_type: reservation, external_id: /external_id, internal_id: /id}
  - name: tr-shorthand
    path: /tb/create
    methods: [POST]
    strip_prefix: /tb
    upstream: main
    translate:
      body: {/guest_id: guest}
      unknown_status: 404
  - name: tr-upload
    path: /tu/upload
    methods: [POST]
    strip_prefix: /tu
    upstream: main
    translate:
      request_body: {/guest_id: guest}
      on_unknown: pass
  - name: tr-ws
    path: /tw/ws-json/{reservation_id}
    methods: [GET]
    strip_prefix: /tw
    upstream: main
    translate:
      path: {reservation_id: reservation}
      body: {/guest_id: guest}
  - name: tr-chunked
    path: /tr/chunked-json
    methods: [GET]
    strip_prefix: /tr
    upstream: main
    translate:
      response_body: {/reservation/id: reservation}
  - name: tr-text
    path: /tr/text
    methods: [GET]
    strip_prefix: /tr
    upstream: main
    translate:
      response_body: {/id: reservation}
"""

RES, GUEST, R101, R102 = (str(uuid.uuid4()) for _ in range(4))


@pytest.fixture
async def world(db: asyncpg.Connection) -> dict[str, Any]:
    """Tenant alpha with partner keys for two systems; booking_engine mappings."""
    tenant = await keys.create_tenant(db, "Hotel Alpha", "test")
    out: dict[str, Any] = {"tenant": tenant}
    for system in ("booking_engine", "siteminder"):
        _, token = await keys.create_key(
            db, tenant.id, "partner", actor="test", external_system=system
        )
        out[system] = {"Authorization": f"Bearer {token}"}
    for etype, internal, external in (
        ("reservation", RES, "R-1"),
        ("guest", GUEST, "G-1"),
        ("room", R101, "101"),
        ("room", R102, "102"),
    ):
        await add(db, tenant.id, etype, internal, external)
    return out


async def add(
    db: asyncpg.Connection,
    tenant_id: uuid.UUID,
    entity_type: str,
    internal: str,
    external: str,
    direction: Direction = Direction.BIDIRECTIONAL,
    system: str = "booking_engine",
) -> store.Mapping:
    new = NewMapping(entity_type, uuid.UUID(internal), system, external, direction)
    return await store.create(db, tenant_id, new, Actor("test", None))


@pytest.fixture
async def gw(gateway_factory: GatewayFactory) -> GatewayClient:
    client: GatewayClient = await gateway_factory(ROUTES)
    return client


@pytest.fixture(params=["text", "walk"])
def body_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test using it runs twice: body ids found in the JSON text (gateway._idscan),
    and with the scanner declining every body, so the parsed walk does it all. The text
    run checks the scanner did find ids (the test went the way it is named for)."""
    if request.param == "walk":
        monkeypatch.setattr(Flow, "_text", lambda self, body, trie, scope, done: None)
        yield "walk"
        return
    if not textids.AVAILABLE:
        pytest.skip("gateway._idscan is not built (no C compiler at install)")
    found: list[bool] = []
    scan = Flow._text

    def recording(self: Flow, body: bytes, trie: Any, scope: Any, done: Any) -> Any:
        result = scan(self, body, trie, scope, done)
        # ids found: some not mapped (a TextIds), or all mapped (a new body)
        found.append(isinstance(result, TextIds) or (result is not None and result != body))
        return result

    monkeypatch.setattr(Flow, "_text", recording)
    yield "text"
    assert any(found), "no ids found in any text"


def db_lookups() -> float:
    return metrics.REGISTRY.get_sample_value("gateway_mapping_db_lookups_total") or 0.0


@pytest.mark.usefixtures("body_path")
async def test_path_query_and_nested_body_ids_are_translated_both_ways(
    gw: GatewayClient, world: dict[str, Any], wait_rows: WaitRows, db: asyncpg.Connection
) -> None:
    body = {
        "guest_id": "G-1",
        "items": [{"room_id": "101"}, {"room_id": 102}, {"room_id": "101", "x": 1}],
        "note": "R-1",
    }
    resp = await gw.post(
        "/tr/mirror/reservations/R-1?guest=G-1&x=R-1",
        json=body,
        headers=world["booking_engine"],
    )
    assert resp.status == 200, await resp.text()
    got = await resp.json()
    # The upstream saw internal ids in the path and query (echoed back as plain strings).
    assert got["raw_path"] == f"/mirror/reservations/{RES}"
    assert got["query"] == f"guest={GUEST}&x=R-1"
    # It saw internal ids in the body, and its answer came back with external ids again.
    assert got["body"] == {
        "guest_id": "G-1",
        "items": [{"room_id": "101"}, {"room_id": "102"}, {"room_id": "101", "x": 1}],
        "note": "R-1",
    }
    (row,) = await wait_rows(1)
    assert row["request_body"] == body  # what the partner sent
    assert row["response_body"]["body"]["guest_id"] == "G-1"  # what the partner received
    assert row["path"] == "/tr/mirror/reservations/R-1"
    assert row["translated"] == {
        "request": {
            "path:reservation_id": 1,
            "query:guest": 1,
            "body:/guest_id": 1,
            "body:/items/*/room_id": 3,
        },
        "response": {"body:/body/guest_id": 1, "body:/body/items/*/room_id": 3},
    }
    admin_key = await keys.create_key(db, world["tenant"].id, "admin", actor="test")
    detail = await gw.get(
        f"/admin/v1/logs/{row['id']}", headers={"Authorization": f"Bearer {admin_key[1]}"}
    )
    assert (await detail.json())["translated"] == row["translated"]


@pytest.mark.parametrize("secret", [None, "hunter2"])
@pytest.mark.usefixtures("body_path")
async def test_translated_bodies_are_logged_as_the_partner_sent_and_received_them(
    gw: GatewayClient, world: dict[str, Any], wait_rows: WaitRows, secret: str | None
) -> None:
    """Capture's parse of the request is rewritten by translation (or, when it had to be
    redacted, translation parses its own copy); the answer is captured from the value the
    gateway serialised. Either way the row holds external ids and redacted fields only."""
    body: dict[str, Any] = {"guest_id": "G-1", "items": [{"room_id": "101"}]}
    if secret:
        body["password"] = secret
    resp = await gw.post("/tr/mirror/reservations/R-1", json=body, headers=world["booking_engine"])
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["body"] == body  # the upstream got internal ids, and the
    (row,) = await wait_rows(1)  # partner its own again, secret included
    logged = {**body, "password": "[REDACTED]"} if secret else body
    assert row["request_body"] == logged
    assert row["response_body"]["body"] == logged
    assert row["translated"]["request"]["body:/items/*/room_id"] == 1
    assert row["translated"]["response"]["body:/body/items/*/room_id"] == 1


@pytest.mark.usefixtures("body_path")
async def test_upstream_sees_internal_ids(gw: GatewayClient, world: dict[str, Any]) -> None:
    """Through the pass-through route the mirror shows the forwarded body untouched."""
    resp = await gw.post(
        "/tp/mirror/x?guest=G-1", json={"guest_id": "G-1"}, headers=world["booking_engine"]
    )
    got = await resp.json()
    assert got["query"] == f"guest={GUEST}"
    assert got["body"] == {"guest_id": "G-1"}  # GUEST went up, came back as G-1


@pytest.mark.usefixtures("body_path")
async def test_unknown_external_ids_are_refused_naming_field_and_id(
    gw: GatewayClient, world: dict[str, Any], wait_rows: WaitRows
) -> None:
    be = world["booking_engine"]
    resp = await gw.get("/tr/mirror/reservations/NOPE", headers=be)
    assert resp.status == 404
    err = await resp.json()
    assert err["code"] == "mapping_not_found"
    assert err["field"] == "path parameter 'reservation_id'" and err["id"] == "NOPE"
    assert err["entity_type"] == "reservation" and err["request_id"]
    resp = await gw.post(
        "/tr/mirror/reservations/R-1",
        json={"items": [{"room_id": "101"}, {"room_id": "999"}]},
        headers=be,
    )
    assert resp.status == 422
    err = await resp.json()
    assert (err["code"], err["id"]) == ("mapping_not_found", "999")
    assert err["field"] == "body field '/items/*/room_id'"
    resp = await gw.get("/tr/mirror/reservations/R-1?guest=G-404", headers=be)
    assert resp.status == 422 and (await resp.json())["field"] == "query parameter 'guest'"
    # Mappings belong to one external system: siteminder has none for R-1.
    resp = await gw.get("/tr/mirror/reservations/R-1", headers=world["siteminder"])
    assert resp.status == 404
    rows = await wait_rows(4)
    assert [r["error_code"] for r in rows] == ["mapping_not_found"] * 4


@pytest.mark.usefixtures("body_path")
async def test_unknown_ids_pass_through_when_the_route_says_so(
    gw: GatewayClient, world: dict[str, Any]
) -> None:
    resp = await gw.post(
        "/tp/mirror/x?guest=G-404", json={"guest_id": "G-404"}, headers=world["booking_engine"]
    )
    assert resp.status == 200
    got = await resp.json()
    assert got["query"] == "guest=G-404" and got["body"] == {"guest_id": "G-404"}
    # An answer id with no mapping is left as it is.
    stranger = str(uuid.uuid4())
    resp = await gw.post(
        "/tp/mirror/x", json={"guest_id": stranger}, headers=world["booking_engine"]
    )
    assert (await resp.json())["body"] == {"guest_id": stranger}


@pytest.mark.usefixtures("body_path")
async def test_direction_is_respected(
    gw: GatewayClient, world: dict[str, Any], db: asyncpg.Connection
) -> None:
    tid, be = world["tenant"].id, world["booking_engine"]
    inbound, outbound = str(uuid.uuid4()), str(uuid.uuid4())
    await add(db, tid, "guest", inbound, "G-IN", Direction.INBOUND)
    await add(db, tid, "guest", outbound, "G-OUT", Direction.OUTBOUND)
    # Inbound-only: translated on the way in, not on the way back.
    got = await (await gw.post("/tp/mirror/x", json={"guest_id": "G-IN"}, headers=be)).json()
    assert got["body"] == {"guest_id": inbound}
    # Outbound-only: not used on the way in (refused there), used on the way back.
    resp = await gw.get("/tr/mirror/reservations/R-1?guest=G-OUT", headers=be)
    assert resp.status == 422
    got = await (await gw.post("/tp/mirror/x", json={"guest_id": outbound}, headers=be)).json()
    assert got["body"] == {"guest_id": "G-OUT"}


async def test_auto_mapping_on_create(
    gw: GatewayClient, world: dict[str, Any], db: asyncpg.Connection, wait_rows: WaitRows
) -> None:
    be = world["booking_engine"]
    # Unknown before the create (and now negatively cached) ...
    assert (await gw.get("/tr/mirror/reservations/BE-77", headers=be)).status == 404
    resp = await gw.post("/tr/create", json={"external_id": "BE-77", "guest_id": "G-1"}, headers=be)
    assert resp.status == 201
    # ... the answer names the new reservation by the partner's id already ...
    assert await resp.json() == {"id": "BE-77", "guest_id": "G-1"}
    row = await db.fetchrow(
        "SELECT internal_id, origin, direction FROM integration_mappings"
        " WHERE external_id = 'BE-77'"
    )
    assert row["origin"] == "auto" and row["direction"] == "bidirectional"
    actor = await db.fetchval(
        "SELECT actor FROM audit_log WHERE action = 'mapping.create' ORDER BY id DESC LIMIT 1"
    )
    assert actor.startswith("key:")  # attributed to the partner key that created it
    # ... and the next call with the external id resolves at once.
    got = await (await gw.get("/tr/mirror/reservations/BE-77", headers=be)).json()
    assert got["raw_path"] == f"/mirror/reservations/{row['internal_id']}"
    # A second create claiming the same external id is never mapped over the first.
    other = str(uuid.uuid4())
    resp = await gw.post(
        f"/tr/create?id={other}", json={"external_id": "BE-77", "guest_id": "G-1"}, headers=be
    )
    assert resp.status == 201 and (await resp.json())["id"] == other
    count = await db.fetchval(
        "SELECT count(*) FROM integration_mappings WHERE external_id = 'BE-77'"
    )
    assert count == 1
    rows = await wait_rows(4)
    assert rows[1]["translated"]["auto_map"]["result"] == "created"
    assert rows[3]["translated"]["auto_map"]["result"] == "conflict"


@pytest.mark.usefixtures("body_path")
async def test_one_database_query_for_all_misses_of_a_request(
    gw: GatewayClient, world: dict[str, Any], db: asyncpg.Connection
) -> None:
    tid, be = world["tenant"].id, world["booking_engine"]
    rooms = {f"X{i}": str(uuid.uuid4()) for i in range(50)}
    for external, internal in rooms.items():
        await add(db, tid, "room", internal, external)
    body = {"items": [{"room_id": r} for r in rooms]}
    before = db_lookups()
    resp = await gw.post("/tr/mirror/reservations/R-1", json=body, headers=be)
    assert resp.status == 200
    # One query for the 50 rooms + reservation on the way in, one for the way back.
    assert db_lookups() - before == 2
    before = db_lookups()
    resp = await gw.post("/tr/mirror/reservations/R-1", json=body, headers=be)
    assert (await resp.json())["body"] == body
    assert db_lookups() - before == 0  # warm: the cache answered everything


async def test_change_made_by_sql_reaches_the_cache(
    gw: GatewayClient, world: dict[str, Any], db: asyncpg.Connection
) -> None:
    be = world["booking_engine"]
    got = await (await gw.get("/tr/mirror/reservations/R-1", headers=be)).json()
    assert got["raw_path"].endswith(RES)  # now cached
    moved = str(uuid.uuid4())
    await db.execute(
        "UPDATE integration_mappings SET internal_id = $1 WHERE external_id = 'R-1'",
        uuid.UUID(moved),
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.0
    while loop.time() < deadline:
        got = await (await gw.get("/tr/mirror/reservations/R-1", headers=be)).json()
        if got["raw_path"].endswith(moved):
            break
        await asyncio.sleep(0.02)
    assert got["raw_path"].endswith(moved)
    await db.execute("DELETE FROM integration_mappings WHERE external_id = 'R-1'")
    for _ in range(50):
        resp = await gw.get("/tr/mirror/reservations/R-1", headers=be)
        if resp.status == 404:
            break
        await asyncio.sleep(0.02)
    assert resp.status == 404


async def test_malformed_bodies_are_refused_cleanly_or_passed(
    gw: GatewayClient, world: dict[str, Any], wait_rows: WaitRows
) -> None:
    be = {**world["booking_engine"], "Content-Type": "application/json"}
    resp = await gw.post("/tr/mirror/reservations/R-1", data=b'{"guest_id": ', headers=be)
    assert resp.status == 400 and (await resp.json())["code"] == "malformed_body"
    resp = await gw.post("/tp/mirror/x", data=b"\xff\xfe not json", headers=be)
    assert resp.status == 200  # pass-through route: forwarded untranslated
    assert "not_json" in (await resp.json())["body"]
    resp = await gw.post("/tr/mirror/reservations/R-1", data=b'{"note": [1]}', headers=be)
    assert resp.status == 200  # JSON without the declared fields: nothing to translate
    # Upstream answers that are not JSON pass through as they are.
    resp = await gw.get("/tr/text", headers=be)
    assert resp.status == 200 and await resp.text() == "plain ünïcode text"
    rows = await wait_rows(4)
    assert rows[1]["translated"]["request_body"].startswith("not translated")
    assert rows[3]["translated"]["response_body"] == "not translated: answer is not JSON"
    assert all(r["status"] < 500 for r in rows)


async def test_capture_checks_the_syntax_of_bodies_the_scanner_did_not(
    gw: GatewayClient, world: dict[str, Any], wait_rows: WaitRows, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Capture's syntax check (msgspec) runs once a body at most: the translation scanner
    checks a request body it reads and the answer it writes, so capture leaves those out;
    every other body is still checked (an untranslated route, a body the scanner declines),
    and one that is not JSON is logged as text, never as jsonb."""
    if not textids.AVAILABLE:
        pytest.skip("gateway._idscan is not built (no C compiler at install)")
    checked: list[bytes] = []
    valid = capture_scan.valid

    def counting(data: bytes) -> bool:
        checked.append(data)
        return valid(data)

    monkeypatch.setattr(capture_scan, "valid", counting)
    be = {**world["booking_engine"], "Content-Type": "application/json"}
    body = {"guest_id": "G-1", "items": [{"room_id": "101"}, {"room_id": "102"}]}
    resp = await gw.post("/tr/mirror/reservations/R-1", json=body, headers=be)
    assert resp.status == 200 and (await resp.json())["body"] == body
    (row,) = await wait_rows(1)
    assert row["request_body"] == body and row["response_body"]["body"] == body
    assert row["translated"]["request"]["body:/items/*/room_id"] == 2
    assert checked == []  # both bodies went through the scanner
    resp = await gw.post("/api/mirror/x", json=body)  # no translation: capture checks
    assert resp.status == 200
    rows = await wait_rows(2)
    assert rows[1]["request_body"] == body and len(checked) == 2  # the request and answer
    broken = b'{"guest_id": "G-1", "items": [{"room_id": "101"}]'  # unclosed: declined
    resp = await gw.post("/tr/mirror/reservations/R-1", data=broken, headers=be)
    assert resp.status == 400 and (await resp.json())["code"] == "malformed_body"
    rows = await wait_rows(3)
    assert rows[2]["request_body"] == broken.decode()  # logged as the text it was
    assert checked[2:] == [broken]


async def test_chunked_answer_is_read_whole_and_translated(
    gw: GatewayClient, world: dict[str, Any]
) -> None:
    resp = await gw.get(f"/tr/chunked-json?id={RES}", headers=world["booking_engine"])
    assert resp.status == 200
    assert await resp.json() == {"reservation": {"id": "R-1"}}


async def test_public_routes_are_untouched(gw: GatewayClient) -> None:
    resp = await gw.get("/api/echo/R-1")
    assert resp.status == 200


async def test_lookup_failure_is_a_clean_503_never_an_untranslated_forward(
    gw: GatewayClient, world: dict[str, Any], db: asyncpg.Connection, wait_rows: WaitRows
) -> None:
    await db.execute("ALTER TABLE integration_mappings RENAME TO integration_mappings_gone")
    resp = await gw.get("/tr/mirror/reservations/R-1", headers=world["booking_engine"])
    assert resp.status == 503
    assert (await resp.json())["code"] == "mapping_unavailable"
    (row,) = await wait_rows(1)
    assert row["error_code"] == "mapping_unavailable"


async def test_chunked_request_bodies_on_translated_routes(
    gateway_factory: GatewayFactory, world: dict[str, Any], wait_rows: WaitRows
) -> None:
    """A body of unknown length is read whole when it ends within the stream threshold,
    then translated like any other; a longer one is refused on a strict route and streamed
    on, untranslated and intact, on a lenient one."""
    gw: GatewayClient = await gateway_factory(ROUTES, stream_threshold_bytes=1024)

    async def chunks(*parts: bytes) -> Any:
        for part in parts:
            yield part
            await asyncio.sleep(0.01)  # separate writes: really several chunks

    be = {**world["booking_engine"], "Content-Type": "application/json"}
    resp = await gw.post(
        "/tr/mirror/reservations/R-1", data=chunks(b'{"guest_id": ', b'"G-1"}'), headers=be
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["body"] == {"guest_id": "G-1"}  # GUEST went up, G-1 came back
    (row,) = await wait_rows(1)
    assert row["request_body"] == {"guest_id": "G-1"}
    assert row["translated"]["request"] == {"path:reservation_id": 1, "body:/guest_id": 1}

    big = b'{"guest_id": "G-1", "pad": "' + b"x" * 3000 + b'"}'
    resp = await gw.post(
        "/tr/mirror/reservations/R-1", data=chunks(big[:1000], big[1000:]), headers=be
    )
    assert resp.status == 413 and (await resp.json())["code"] == "payload_too_large"
    refused = (await wait_rows(2))[-1]  # logged as far as it was read before the refusal
    assert refused["request_body_size"] == len(big) and refused["request_body_truncated"]

    resp = await gw.post("/tu/upload", data=chunks(b'{"guest_id": ', b'"G-1"}'), headers=be)
    # translated in its text, the partner's space after the colon kept (written anew from
    # the parsed value where the scanner is not built)
    sep = " " if textids.AVAILABLE else ""
    assert (await resp.json())["size"] == len(f'{{"guest_id":{sep}"{GUEST}"}}')

    resp = await gw.post(
        "/tu/upload", data=chunks(big[:700], big[700:2000], big[2000:]), headers=be
    )
    got = await resp.json()  # every byte, in order: what was read ahead goes first
    assert got == {"size": len(big), "sha256": hashlib.sha256(big).hexdigest(), "chunked": True}
    rows = await wait_rows(4)
    assert rows[-1]["translated"]["request_body"] == (
        "not translated: request body too large to translate"
    )
    assert rows[-1]["request_body_size"] == len(big)  # the whole size, read ahead included


async def test_chunked_request_body_over_the_request_limit_on_a_translated_route(
    gateway_factory: GatewayFactory, world: dict[str, Any], wait_rows: WaitRows
) -> None:
    gw: GatewayClient = await gateway_factory(
        ROUTES, stream_threshold_bytes=4096, max_request_bytes=1000
    )

    async def body() -> Any:
        yield b'{"guest_id": "G-1", "pad": "' + b"x" * 1500 + b'"}'

    be = {**world["booking_engine"], "Content-Type": "application/json"}
    resp = await gw.post("/tu/upload", data=body(), headers=be)
    assert resp.status == 413
    assert (await resp.json())["message"] == "request body exceeds the 1000 byte limit"
    (row,) = await wait_rows(1)
    assert row["status"] == 413 and row["error_code"] == "payload_too_large"
    assert row["request_body_truncated"]

    # Over the limit only after the read-ahead, while streaming on (a pass route): the
    # bytes read ahead count towards the limit.
    gw = await gateway_factory(ROUTES, stream_threshold_bytes=1024, max_request_bytes=2500)

    async def parts() -> Any:
        for _ in range(3):
            yield b"x" * 1000
            await asyncio.sleep(0.01)

    resp = await gw.post("/tu/upload", data=parts(), headers=be)
    assert resp.status == 413
    assert (await resp.json())["message"] == "request body exceeds the 2500 byte limit"


async def test_caller_hanging_up_while_sending_its_body_is_logged_as_499(
    gw: GatewayClient, world: dict[str, Any], wait_rows: WaitRows
) -> None:
    """Chunked (read ahead on a translated route) or sized: the row says the caller left,
    not that the gateway failed."""
    auth = world["booking_engine"]["Authorization"]
    for framing in (
        'Transfer-Encoding: chunked\r\n\r\n5\r\n{"gue',
        'Content-Length: 50\r\n\r\n{"gue',
    ):
        _, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(
            (
                "POST /tr/mirror/reservations/R-1 HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: {auth}\r\nContent-Type: application/json\r\n{framing}"
            ).encode()
        )
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        await writer.wait_closed()
    rows = await wait_rows(2)
    assert [(r["status"], r["error_code"]) for r in rows] == [(499, "client_disconnected")] * 2


async def test_websocket_upgrade_and_messages_are_translated(
    gw: GatewayClient, world: dict[str, Any], wait_rows: WaitRows, db: asyncpg.Connection
) -> None:
    be = world["booking_engine"]
    received = upstream_app.WS_RECEIVED
    received.clear()
    async with gw.ws_connect("/tw/ws-json/R-1", headers=be) as ws:
        await ws.send_json({"guest_id": "G-1"})
        got = await ws.receive_json(timeout=5)
        assert got["path"] == f"/ws-json/{RES}"  # the upgrade's path id, translated
        assert json.loads(got["seen"]) == {"guest_id": GUEST}  # what the upstream received
        assert got["guest_id"] == "G-1"  # and its answer in the partner's ids again
        await ws.send_json({"guest_id": "G-404"})  # no mapping, on a strict route
        closing = await ws.receive(timeout=5)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1008
        assert isinstance(closing.extra, str)
        assert "G-404" in closing.extra and "no mapping" in closing.extra
        assert "message field" in closing.extra
    (row,) = await wait_rows(1)
    assert row["status"] == 101 and row["error_code"] == "mapping_not_found"
    assert row["translated"] == {
        "request": {"path:reservation_id": 1},
        "client_messages": {"body:/guest_id": 1},
        "upstream_messages": {"body:/guest_id": 1},
    }
    assert row["response_body"]["websocket"]["close_code"] == 1008
    assert [json.loads(m) for m in received] == [{"guest_id": GUEST}]  # no refused one went up

    async with gw.ws_connect("/tw/ws-json/R-1", headers=be) as ws:
        await ws.send_str("hello")  # not JSON: its ids cannot be checked, so refused
        closing = await ws.receive(timeout=5)
        assert isinstance(closing.extra, str)
        assert closing.data == 1008 and "not JSON" in closing.extra
    assert (await wait_rows(2))[-1]["error_code"] == "malformed_body"

    async with gw.ws_connect("/tw/ws-json/R-1", headers=be) as ws:
        await ws.send_bytes(b'{"guest_id": "G-404"}')  # binary cannot be translated
        closing = await ws.receive(timeout=5)
        assert isinstance(closing.extra, str)
        assert closing.data == 1008 and "binary" in closing.extra
    assert len(received) == 1

    resp = await gw.get(
        "/tw/ws-json/NOPE",
        headers={
            **be,
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
    )
    assert resp.status == 404 and (await resp.json())["code"] == "mapping_not_found"

    async with gw.ws_connect("/tw/ws-json/R-1", headers=be) as ws:
        await db.execute("ALTER TABLE integration_mappings RENAME TO integration_mappings_gone")
        await ws.send_json({"guest_id": "G-2"})  # not cached, and the lookup fails
        closing = await ws.receive(timeout=5)
        assert closing.data == 1013  # try again later; nothing untranslated went up
    assert (await wait_rows(5))[-1]["error_code"] == "mapping_unavailable"
    assert len(received) == 1  # nothing untranslated went up


async def test_websocket_messages_on_translated_routes_are_bounded(
    gateway_factory: GatewayFactory, world: dict[str, Any], wait_rows: WaitRows
) -> None:
    """Translated messages are parsed whole, so they are capped like translated bodies."""
    gw: GatewayClient = await gateway_factory(ROUTES, stream_threshold_bytes=1024)
    async with gw.ws_connect("/tw/ws-json/R-1", headers=world["booking_engine"]) as ws:
        await ws.send_json({"guest_id": "G-1", "pad": "x" * 2000})
        closing = await ws.receive(timeout=5)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1009


async def test_listener_reconnects_and_metrics_are_exposed(
    gw: GatewayClient, world: dict[str, Any], db: asyncpg.Connection
) -> None:
    be = world["booking_engine"]
    got = await (await gw.get("/tr/mirror/reservations/R-1", headers=be)).json()
    assert got["raw_path"].endswith(RES)
    killed = await db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE query LIKE 'LISTEN%integration_mappings%' AND datname = current_database()"
    )
    assert killed == 1
    for _ in range(100):  # reconnects every GATEWAY_DB_RETRY_INTERVAL (0.2 s in tests)
        await asyncio.sleep(0.05)
        up = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE query LIKE 'LISTEN%integration_mappings%' AND datname = current_database()"
        )
        if up:
            break
    got = await (await gw.get("/tr/mirror/reservations/R-1", headers=be)).json()
    assert got["raw_path"].endswith(RES)  # cached again, after the reconnect
    moved = str(uuid.uuid4())
    await db.execute(
        "UPDATE integration_mappings SET internal_id = $1 WHERE external_id = 'R-1'",
        uuid.UUID(moved),
    )
    for _ in range(50):
        got = await (await gw.get("/tr/mirror/reservations/R-1", headers=be)).json()
        if got["raw_path"].endswith(moved):
            break
        await asyncio.sleep(0.02)
    assert got["raw_path"].endswith(moved)
    text = await (await gw.get("/metrics")).text()
    for name in (
        'gateway_mapping_cache_hits_total{way="in"}',
        'gateway_mapping_cache_misses_total{way="in"}',
        "gateway_mapping_cache_evictions_total",
        "gateway_mapping_listener_up 1.0",
    ):
        assert name in text, name


async def test_ids_postgresql_cannot_hold_are_unknown_not_errors(
    gw: GatewayClient, world: dict[str, Any], wait_rows: WaitRows
) -> None:
    be = {**world["booking_engine"], "Content-Type": "application/json"}
    resp = await gw.get("/tr/mirror/reservations/R%00X", headers=be)
    assert resp.status == 404 and (await resp.json())["id"] == "R\ufffdX"
    long_id = b'{"guest_id": "G-1", "items": [{"room_id": "' + b"9" * 300 + b'"}]}'
    resp = await gw.post("/tr/mirror/reservations/R-1", data=long_id, headers=be)
    assert resp.status == 422 and (await resp.json())["id"] == "9" * 256
    surrogate = b'{"guest_id": "G\\ud800"}'  # JSON orjson (and jsonb) refuse
    resp = await gw.post("/tr/mirror/reservations/R-1", data=surrogate, headers=be)
    assert resp.status == 400 and (await resp.json())["code"] == "malformed_body"
    resp = await gw.post("/tp/mirror/x", data=surrogate, headers=be)
    assert resp.status == 200  # pass-through: forwarded as sent
    rows = await wait_rows(4)
    assert [r["status"] for r in rows] == [404, 422, 400, 200]


@pytest.mark.usefixtures("body_path")
async def test_body_shorthand_status_override_and_repeated_query_parameters(
    gw: GatewayClient, world: dict[str, Any]
) -> None:
    be = world["booking_engine"]
    resp = await gw.post("/tb/create", json={"guest_id": "G-1"}, headers=be)
    assert resp.status == 201
    assert (await resp.json())["guest_id"] == "G-1"  # GUEST went up and came back as G-1
    resp = await gw.post("/tb/create", json={"guest_id": "NOPE"}, headers=be)
    assert resp.status == 404 and (await resp.json())["field"] == "body field '/guest_id'"
    resp = await gw.get("/tp/mirror/x?guest=G-1&guest=G-404&a=1&guest=G-1", headers=be)
    assert (await resp.json())["query"] == f"guest={GUEST}&guest=G-404&a=1&guest={GUEST}"


# -- strict routes refuse what they cannot translate ---------------------------------------

STRICT_ROUTES = """
  - name: st-strict
    path: /st/strict/{rest...}
    methods: [GET, POST]
    strip_prefix: /st/strict
    upstream: recording
    translate:
      query: {guest: guest}
      request_body: {/guest_id: guest, /items/*/room_id: room, /rooms/*: room}
  - name: st-pass
    path: /st/pass/{rest...}
    methods: [GET, POST]
    strip_prefix: /st/pass
    upstream: recording
    translate:
      query: {guest: guest}
      request_body: {/guest_id: guest, /items/*/room_id: room, /rooms/*: room}
      on_unknown: pass
"""
NO_IDS: list[tuple[Any, str]] = [
    (["G-1"], "an array"),
    ({"$ne": None}, "an object"),
    (True, "true"),
    (False, "false"),
    (1.5, "a fractional number"),
    ("", "an empty string"),
]


@dataclass
class Recording:
    """A test upstream and what it received: ("request", raw query, body) per request,
    ("message", data) per WebSocket message."""

    server: TestServer
    got: list[Any]


@pytest.fixture
async def recording(aiohttp_server: AiohttpServer) -> Recording:
    """An upstream that records every request and WebSocket message it gets, so a test can
    show that a refused one never arrived."""
    got: list[Any] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for msg in ws:
                got.append(("message", msg.data))
                await ws.send_str(msg.data)
            return ws
        body = await request.read()
        got.append(("request", request.rel_url.raw_query_string, body))
        return web.json_response(
            {"query": request.rel_url.raw_query_string, "body": json.loads(body or b"null")}
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return Recording(await aiohttp_server(app, host="127.0.0.1"), got)


@pytest.fixture
async def strict_gw(gateway_factory: GatewayFactory, recording: Recording) -> GatewayClient:
    opts = f"  recording:\n    url: {str(recording.server.make_url('')).rstrip('/')}\n"
    client: GatewayClient = await gateway_factory(STRICT_ROUTES, opts)
    return client


def _refused_bodies() -> list[tuple[Any, str, str, str]]:
    """(body, field, entity type, found) for each shape a strict route refuses."""
    out: list[tuple[Any, str, str, str]] = [
        ({"guest_id": v}, "body field '/guest_id'", "guest", f) for v, f in NO_IDS
    ]
    out += [
        (
            {"items": [{"room_id": "101"}, {"room_id": v}]},
            "body field '/items/*/room_id'",
            "room",
            f,
        )
        for v, f in NO_IDS
    ]
    out += [({"rooms": ["101", v]}, "body field '/rooms/*'", "room", f) for v, f in NO_IDS]
    out += [  # a value on a pointer's way that it cannot enter
        ({"items": "101"}, "body field '/items/*/room_id'", "room", "a string"),
        ({"items": ["101"]}, "body field '/items/*/room_id'", "room", "a string"),
        ({"items": {"room_id": "101"}}, "body field '/items/*/room_id'", "room", "a string"),
        ([{"guest_id": "G-1"}], "body field '/guest_id'", "guest", "an array"),
    ]
    return out


async def test_a_strict_route_refuses_body_values_that_are_no_id(
    strict_gw: GatewayClient, recording: Recording, world: dict[str, Any], wait_rows: WaitRows
) -> None:
    """ "An untranslated id is never forwarded": an array, an object ({"$ne": null}), a
    boolean, a fractional number or an empty string where an id belongs is refused with
    422, naming the field and entity type, and the upstream never hears of it; a lenient
    route forwards the same bodies with those values untouched. Null is no reference."""
    be = world["booking_engine"]
    cases = _refused_bodies()
    for body, field, entity_type, found in cases:
        resp = await strict_gw.post("/st/strict/x", json=body, headers=be)
        assert resp.status == 422, (body, await resp.text())
        err = await resp.json()
        assert err["code"] == "untranslatable_id" and err["request_id"]
        assert (err["field"], err["entity_type"], err["found"]) == (field, entity_type, found)
        assert err["message"].startswith(field)
        assert recording.got == []
        resp = await strict_gw.post("/st/pass/x", json=body, headers=be)
        assert resp.status == 200
        assert json.loads(recording.got.pop()[2]) == _leniently(body)
    rows = await wait_rows(2 * len(cases))
    assert {(r["status"], r["error_code"]) for r in rows[::2]} == {(422, "untranslatable_id")}
    assert rows[0]["request_body"] == cases[0][0]  # logged as the partner sent it
    # A huge value is never echoed back.
    resp = await strict_gw.post("/st/strict/x", json={"guest_id": ["9" * 100_000]}, headers=be)
    assert resp.status == 422 and len(await resp.read()) < 1000
    # Null passes a strict route: it names nothing.
    body = {"guest_id": None, "items": [{"room_id": None}, None, {"room_id": "101"}], "rooms": None}
    resp = await strict_gw.post("/st/strict/x", json=body, headers=be)
    assert resp.status == 200, await resp.text()
    forwarded = {**body, "items": [{"room_id": None}, None, {"room_id": R101}]}
    assert (await resp.json())["body"] == forwarded
    assert len(recording.got) == 1  # only that one reached the upstream


def _leniently(body: Any) -> Any:
    """What a lenient route forwards of one of _refused_bodies: the ids translated (room
    101 first in items or rooms), every value that is no id as it was."""
    out = copy.deepcopy(body)
    if isinstance(body, dict) and isinstance(body.get("items"), list):
        if body["items"][0] == {"room_id": "101"}:
            out["items"][0]["room_id"] = R101
    if isinstance(body, dict) and "rooms" in body:
        out["rooms"][0] = R101
    return out


async def test_a_strict_route_refuses_empty_and_repeated_query_parameters(
    strict_gw: GatewayClient, recording: Recording, world: dict[str, Any]
) -> None:
    be = world["booking_engine"]
    for query, found in (
        ("guest=", "an empty value"),
        ("a=1&guest", "an empty value"),
        ("guest=G-1&guest=G-1", "a repeated parameter"),
        ("guest=G-1&gu%65st=G-404", "a repeated parameter"),
    ):
        resp = await strict_gw.get(f"/st/strict/x?{query}", headers=be)
        assert resp.status == 422, query
        err = await resp.json()
        assert err["code"] == "untranslatable_id" and err["found"] == found
        assert (err["field"], err["entity_type"]) == ("query parameter 'guest'", "guest")
    assert recording.got == []
    resp = await strict_gw.get("/st/strict/x?guest=G-1&a=", headers=be)  # undeclared: as is
    assert (await resp.json())["query"] == f"guest={GUEST}&a="
    # A lenient route translates each occurrence and forwards empty ones as they are.
    resp = await strict_gw.get("/st/pass/x?guest=&guest=G-1&guest&guest=G-1", headers=be)
    assert (await resp.json())["query"] == f"guest=&guest={GUEST}&guest&guest={GUEST}"


async def test_a_strict_websocket_closes_on_a_message_value_that_is_no_id(
    strict_gw: GatewayClient, recording: Recording, world: dict[str, Any], wait_rows: WaitRows
) -> None:
    be = world["booking_engine"]
    for value, found in NO_IDS:
        async with strict_gw.ws_connect("/st/strict/feed", headers=be) as ws:
            await ws.send_json({"guest_id": None})  # no reference: passes
            assert json.loads(await ws.receive_str(timeout=5)) == {"guest_id": None}
            await ws.send_json({"guest_id": value})
            closing = await ws.receive(timeout=5)
            assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1008
            assert isinstance(closing.extra, str)
            assert closing.extra.startswith(f"message field '/guest_id' holds {found}")
    # Only the null messages reached the upstream.
    assert [json.loads(m) for _, m in recording.got] == [{"guest_id": None}] * len(NO_IDS)
    rows = await wait_rows(len(NO_IDS))
    assert {r["error_code"] for r in rows} == {"untranslatable_id"}
    recording.got.clear()
    async with strict_gw.ws_connect("/st/pass/feed", headers=be) as ws:
        for value, _ in NO_IDS:  # a lenient route passes them untouched
            await ws.send_json({"guest_id": value})
            assert json.loads(await ws.receive_str(timeout=5)) == {"guest_id": value}
    assert len(recording.got) == len(NO_IDS)
