"""Erasure of one guest (POST /admin/v1/erasures, gateway erase): a partner's external id
resolved through integration_mappings, erased from api_logs (path, query, bodies),
webhook event payloads and delivery attempts, in the caller's tenant only; audited
without the values. Real gateway, real webhook receiver, real PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.scrub import ERASED
from tests.conftest import wait_for_rows
from tests.fixture_types import AiohttpServer, GatewayClient, GatewayFactory
from tests.integration.webhook_helpers import (
    FAST_SCHEDULE,
    Receiver,
    make_tenant,
    publish,
    subscribe,
    wait_for,
)

EXTERNAL = "BE-5521-77"  # the booking engine's id of the guest
OTHER_SYSTEM_ID = "SM-88412"  # the channel manager's id of the same guest
INTERNAL = uuid.UUID("c3d4e5f6-1111-4222-8333-444455556666")
EMAIL = "ada.lovelace@example.com"
BYSTANDER = "BE-5521-78"  # another guest: must stay
GUESTS_ROUTE = """
  - name: guests
    path: /api/guests/{rest...}
    methods: [GET, POST, PUT]
    strip_prefix: /api
    upstream: main
"""


async def echo_back(request: web.Request, n: int) -> web.StreamResponse:
    """The subscriber answers with what it received (stored as the attempt's excerpt)."""
    return web.Response(body=await request.read(), content_type="application/json")


@pytest.fixture
async def receiver(aiohttp_server: AiohttpServer) -> Receiver:
    rec = Receiver(behave=echo_back)
    server: TestServer = await aiohttp_server(rec.app(), host="127.0.0.1")
    rec.url = str(server.make_url("/hooks"))
    return rec


@pytest.fixture
async def gw(gateway_factory: GatewayFactory) -> GatewayClient:
    return await gateway_factory(
        extra_routes=GUESTS_ROUTE,
        webhook_allow_private=True,
        webhook_allow_http=True,
        webhook_retry_schedule=FAST_SCHEDULE,
        webhook_poll_interval=0.2,
    )


async def _map(db: asyncpg.Connection, tenant_id: uuid.UUID, system: str, external: str) -> None:
    await db.execute(
        """INSERT INTO integration_mappings (tenant_id, entity_type, internal_id,
               external_system, external_id) VALUES ($1, 'guest', $2, $3, $4)""",
        tenant_id,
        INTERNAL,
        system,
        external,
    )


async def _traffic(gw: GatewayClient, who: dict[str, Any]) -> None:
    """Calls and an event that carry the guest's ids (and a bystander's)."""
    calls = [
        ("GET", f"/api/guests/all/{EXTERNAL}?guest_id={EXTERNAL}&x=1", None),
        ("POST", "/api/guests/all", {"guest_id": EXTERNAL, "email": EMAIL, "nights": 3}),
        (
            "PUT",
            f"/api/guests/all/{INTERNAL}",
            {"id": str(INTERNAL), "note": f"was {OTHER_SYSTEM_ID}"},
        ),
        ("POST", "/api/guests/all", {"guest_id": BYSTANDER, "email": "bob@example.com"}),
    ]
    for method, path, body in calls:
        resp = await gw.request(method, path, json=body, headers=who["partner"])
        assert resp.status == 200


async def _everything(db: asyncpg.Connection, logs_where: str = "route = 'guests'") -> str:
    """All stored text that erasure covers, as one string."""
    rows = await db.fetch(
        f"SELECT path, query, request_body, response_body FROM api_logs WHERE {logs_where}"
    )
    events = await db.fetch("SELECT payload FROM webhook_events")
    attempts = await db.fetch("SELECT response_excerpt, error FROM webhook_attempts")
    return json.dumps(
        [[dict(r) for r in rows], [dict(r) for r in events], [dict(r) for r in attempts]],
        default=str,
    )


async def test_a_partners_external_id_is_erased_from_logs_events_and_attempts(
    gw: GatewayClient, db: asyncpg.Connection, receiver: Receiver
) -> None:
    alpha = await make_tenant(db, "Hotel Alpha")
    beta = await make_tenant(db, "Hotel Beta")
    tenant = alpha["tenant"].id
    await _map(db, tenant, "booking_engine", EXTERNAL)
    await _map(db, tenant, "channel_manager", OTHER_SYSTEM_ID)
    await _traffic(gw, alpha)
    await _traffic(gw, beta)  # the same ids in another tenant: left alone
    await subscribe(gw, alpha["admin"], receiver.url, event_types=["guest.*"])
    payload = {"guest": {"id": EXTERNAL, "internal": str(INTERNAL), "email": EMAIL}, "n": 1}
    await publish(gw, alpha["service"], "guest.updated", payload)
    await publish(gw, alpha["service"], "guest.updated", {"guest": {"id": BYSTANDER}})
    await wait_for(lambda: len(receiver.calls) == 2)
    await wait_for_rows(db, 8, where="route = 'guests'")

    async def attempts() -> bool:
        return int(await db.fetchval("SELECT count(*) FROM webhook_attempts")) == 2

    await wait_for(attempts)
    before = await _everything(db)
    assert EXTERNAL in before and str(INTERNAL) in before and OTHER_SYSTEM_ID in before

    dry = await gw.post(
        "/admin/v1/erasures",
        json={
            "entity_type": "guest",
            "id": EXTERNAL,
            "external_system": "booking_engine",
            "dry_run": True,
        },
        headers=alpha["admin"],
    )
    assert dry.status == 200, await dry.text()
    assert await _everything(db) == before  # a dry run changes nothing
    resp = await gw.post(
        "/admin/v1/erasures",
        json={"entity_type": "guest", "id": EXTERNAL, "external_system": "booking_engine"},
        headers=alpha["admin"],
    )
    result = await resp.json()
    assert resp.status == 200, result
    tables = {t["table"]: t["rows"] for t in result["tables"]}
    assert tables["api_logs"] == 3 and tables["webhook_events"] == 1
    assert tables["webhook_attempts"] == 1
    assert result["identifiers"] == 3  # the id given, the internal UUID, the other system's
    assert (await dry.json())["tables"] == result["tables"]
    for secret in (EXTERNAL, str(INTERNAL), OTHER_SYSTEM_ID):
        assert secret not in json.dumps(result)

    alpha_rows = await db.fetch(
        """SELECT path, query, request_body, response_body FROM api_logs
           WHERE tenant_id = $1 AND route = 'guests' ORDER BY created_at""",
        tenant,
    )
    after = await _everything(db, f"tenant_id = '{tenant}'")
    for secret in (EXTERNAL, str(INTERNAL), OTHER_SYSTEM_ID):
        assert secret not in after, secret
    assert ERASED in after
    assert BYSTANDER in after and "bob@example.com" in after  # another guest stays
    assert alpha_rows[0]["path"] == f"/api/guests/all/{ERASED}"
    assert alpha_rows[0]["query"] == f"guest_id={ERASED}&x=1"
    assert alpha_rows[1]["request_body"]["nights"] == 3  # the rest of the body stays
    beta_rows = await _everything(db, f"tenant_id = '{beta['tenant'].id}'")
    assert EXTERNAL in beta_rows  # another tenant's rows are not touched

    audit = await db.fetchrow(
        "SELECT actor, object_id, after FROM audit_log WHERE action = 'subject.erase'"
    )
    assert audit["object_id"] == result["erasure_id"]
    assert audit["after"]["tables"]["api_logs"] == 3
    for secret in (EXTERNAL, str(INTERNAL), OTHER_SYSTEM_ID):
        assert secret not in json.dumps(audit["after"]) and secret not in audit["object_id"]
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'subject.erase'") == 1


async def test_a_literal_email_is_erased_case_insensitively(
    gw: GatewayClient, db: asyncpg.Connection
) -> None:
    alpha = await make_tenant(db, "Hotel Alpha")
    await _traffic(gw, alpha)
    await wait_for_rows(db, 4, where="route = 'guests'")
    resp = await gw.post(
        "/admin/v1/erasures", json={"value": EMAIL.upper()}, headers=alpha["admin"]
    )
    assert resp.status == 200
    assert {t["table"]: t["rows"] for t in (await resp.json())["tables"]}["api_logs"] == 1
    after = await _everything(db)
    assert EMAIL not in after and EXTERNAL in after  # only the value, not the ids


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "invalid_erasure"),
        ({"value": "a@b"}, "invalid_erasure"),  # too short: would erase unrelated text
        ({"entity_type": "guest"}, "invalid_erasure"),
        ({"entity_type": "guest", "id": "x", "value": "hello@example.com"}, "invalid_erasure"),
        ({"entity_type": "Guest!", "id": "x"}, "invalid_erasure"),
        ({"value": "hello@example.com", "extra": 1}, "invalid_erasure"),
        ({"id": 5}, "invalid_erasure"),
        ({"value": "hello\u0000world"}, "invalid_erasure"),
    ],
)
async def test_bad_requests_get_a_json_error_and_change_nothing(
    gw: GatewayClient, db: asyncpg.Connection, body: dict[str, Any], code: str
) -> None:
    alpha = await make_tenant(db, "Hotel Alpha")
    resp = await gw.post("/admin/v1/erasures", json=body, headers=alpha["admin"])
    answer = await resp.json()
    assert resp.status == 422, answer
    assert answer["code"] == code and answer["message"]
    viewer = await gw.post("/admin/v1/erasures", json={"value": EMAIL}, headers=alpha["viewer"])
    assert viewer.status == 403
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'subject.erase'") == 0


@pytest.mark.slow
def test_the_cli_erases_and_prints_counts(database_url: str, tmp_path: Path) -> None:
    async def seed() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            tid = await conn.fetchval("INSERT INTO tenants (name) VALUES ('Cli') RETURNING id")
            await conn.execute(
                """INSERT INTO webhook_events (tenant_id, event_type, payload)
                   VALUES ($1, 'guest.updated', $2::jsonb)""",
                tid,
                json.dumps({"email": EMAIL, "keep": "me"}),
            )
        finally:
            await conn.close()

    import asyncio

    asyncio.run(seed())
    env = {**os.environ, "GATEWAY_DATABASE_URL": database_url, "GATEWAY_DATA_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "erase", "--tenant", "Cli", "--value", EMAIL],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {t["table"]: t["rows"] for t in out["tables"]}["webhook_events"] == 1
    assert EMAIL not in proc.stdout + proc.stderr

    async def check() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            payload = json.loads(await conn.fetchval("SELECT payload::text FROM webhook_events"))
            assert payload == {"email": ERASED, "keep": "me"}
            actor = await conn.fetchval(
                "SELECT actor FROM audit_log WHERE action = 'subject.erase'"
            )
            assert actor == "cli"
        finally:
            await conn.close()

    asyncio.run(check())
