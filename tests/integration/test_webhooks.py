"""Outbound webhooks end to end: real receivers on 127.0.0.1, real PostgreSQL, the real
gateway app with its delivery loop (retry schedule compressed to fractions of a second)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.integration.webhook_helpers import (
    FAST_SCHEDULE,
    Receiver,
    make_tenant,
    publish,
    subscribe,
    wait_for,
)

SUBS = "/admin/v1/webhooks/subscriptions"


@pytest.fixture
async def receiver(aiohttp_server: Callable[..., Any]) -> Receiver:
    rec = Receiver()
    server: TestServer = await aiohttp_server(rec.app(), host="127.0.0.1")
    rec.url = str(server.make_url("/hooks"))
    return rec


@pytest.fixture
async def hooks_gateway(gateway_factory: Callable[..., Any]) -> TestClient:
    return await gateway_factory(
        webhook_allow_private=True,
        webhook_allow_http=True,
        webhook_retry_schedule=FAST_SCHEDULE,
        webhook_poll_interval=0.2,
        webhook_lease_margin=1.0,
        webhook_stats_interval=0.2,
    )


@pytest.fixture
async def alpha(db: asyncpg.Connection) -> dict[str, Any]:
    return await make_tenant(db, "Hotel Alpha")


async def test_event_is_delivered_signed_with_standard_webhooks_headers(
    hooks_gateway: TestClient, alpha: dict[str, Any], receiver: Receiver
) -> None:
    gw = hooks_gateway
    sub = await subscribe(gw, alpha["admin"], receiver.url, event_types=["reservation.*"])
    assert sub["secret"].startswith("whsec_")
    published = await publish(gw, alpha["service"], "reservation.created", {"id": "r1"})
    assert published["deliveries"] == 1 and published["duplicate"] is False
    await wait_for(lambda: len(receiver.calls) == 1)
    call = receiver.calls[0]
    body = Webhook(sub["secret"]).verify(call.body, call.headers)
    assert body["type"] == "reservation.created" and body["data"] == {"id": "r1"}
    assert call.headers["webhook-id"] == "msg_" + published["event"]["id"].replace("-", "")
    assert call.headers["User-Agent"].startswith("IntegrationHub-Gateway")
    assert call.headers["Content-Type"] == "application/json"

    async def delivered() -> bool:
        resp = await gw.get("/admin/v1/webhooks/deliveries", headers=alpha["viewer"])
        items = (await resp.json())["items"]
        return len(items) == 1 and items[0]["status"] == "delivered"

    await wait_for(delivered)
    listed = await (await gw.get("/admin/v1/webhooks/deliveries", headers=alpha["admin"])).json()
    delivery = listed["items"][0]
    assert delivery["webhook_id"] == call.headers["webhook-id"] and delivery["delivered_at"]
    attempts = await (
        await gw.get(
            f"/admin/v1/webhooks/deliveries/{delivery['id']}/attempts", headers=alpha["admin"]
        )
    ).json()
    (attempt,) = attempts["items"]
    assert attempt["status_code"] == 200 and attempt["result"] == "delivered"
    assert attempt["response_excerpt"] == '{"ok": true}'
    # The secret never comes back after creation.
    again = await (await gw.get(f"{SUBS}/{sub['id']}", headers=alpha["admin"])).json()
    assert "secret" not in again
    assert sub["secret"] not in (await (await gw.get(SUBS, headers=alpha["admin"])).text())


async def test_rotation_signs_with_both_secrets_during_grace(
    hooks_gateway: TestClient, alpha: dict[str, Any], receiver: Receiver
) -> None:
    gw = hooks_gateway
    sub = await subscribe(gw, alpha["admin"], receiver.url)
    old = sub["secret"]
    rotated = await (
        await gw.post(f"{SUBS}/{sub['id']}/rotate-secret", json={}, headers=alpha["admin"])
    ).json()
    new = rotated["secret"]
    assert new != old and rotated["previous_secret_expires_at"]
    await publish(gw, alpha["service"], "guest.updated", {"n": 1})
    await wait_for(lambda: len(receiver.calls) == 1)
    call = receiver.calls[0]
    assert len(call.headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(call.body, call.headers)  # a receiver not yet switched
    Webhook(new).verify(call.body, call.headers)  # a receiver already switched
    # Rotating with no grace: only the newest secret signs.
    newest = (
        await (
            await gw.post(
                f"{SUBS}/{sub['id']}/rotate-secret",
                json={"grace_seconds": 0},
                headers=alpha["admin"],
            )
        ).json()
    )["secret"]
    await publish(gw, alpha["service"], "guest.updated", {"n": 2})
    await wait_for(lambda: len(receiver.calls) == 2)
    call = receiver.calls[1]
    Webhook(newest).verify(call.body, call.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(call.body, call.headers)


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ({"type": "bearer", "token": "tok-123"}, {"Authorization": "Bearer tok-123"}),
        (
            {"type": "basic", "username": "hotel", "password": "p@ss"},
            {"Authorization": "Basic " + base64.b64encode(b"hotel:p@ss").decode()},
        ),
        (
            {"type": "headers", "headers": {"X-Partner-Key": "k1", "X-Tenant": "alpha"}},
            {"X-Partner-Key": "k1", "X-Tenant": "alpha"},
        ),
    ],
)
async def test_auth_headers_arrive_and_are_never_shown(
    hooks_gateway: TestClient,
    alpha: dict[str, Any],
    receiver: Receiver,
    db: asyncpg.Connection,
    auth: dict[str, Any],
    expected: dict[str, str],
) -> None:
    gw = hooks_gateway
    sub = await subscribe(gw, alpha["admin"], receiver.url, auth=auth)
    await publish(gw, alpha["service"], "room.cleaned", {"room": "101"})
    await wait_for(lambda: len(receiver.calls) == 1)
    for name, value in expected.items():
        assert receiver.calls[0].headers[name] == value
    shown = orjson.dumps(sub).decode()
    stored = await db.fetchrow(
        "SELECT auth_secret, secret FROM webhook_subscriptions WHERE id = $1::uuid", sub["id"]
    )
    audit = await db.fetch("SELECT before, after FROM audit_log")
    for value in expected.values():
        secret_part = value.split(" ")[-1]
        assert secret_part not in shown
        assert secret_part not in stored["auth_secret"]
        assert all(secret_part not in orjson.dumps(dict(a)).decode() for a in audit)
    assert sub["secret"] not in stored["secret"]  # encrypted at rest


async def test_wildcards_and_filters_choose_subscriptions(
    hooks_gateway: TestClient, alpha: dict[str, Any], receiver: Receiver, db: asyncpg.Connection
) -> None:
    gw, admin = hooks_gateway, alpha["admin"]
    every = await subscribe(gw, admin, receiver.url + "/every", event_types=["*"])
    reservations = await subscribe(gw, admin, receiver.url + "/res", event_types=["reservation.*"])
    exact = await subscribe(gw, admin, receiver.url + "/guest", event_types=["guest.created"])
    filtered = await subscribe(
        gw,
        admin,
        receiver.url + "/h1",
        event_types=["reservation.*"],
        filter={"hotel": "h1", "status": "confirmed"},
    )
    events = [
        ("reservation.created", {"hotel": "h1", "status": "confirmed", "id": 1}),
        ("reservation.created", {"hotel": "h2", "status": "confirmed", "id": 2}),
        ("reservation.room.assigned", {"hotel": "h1", "status": "confirmed", "id": 3}),
        ("guest.created", {"id": 4}),
        ("guest.updated", {"id": 5}),
        ("reservations.created", {"id": 6}),  # not 'reservation.*'
    ]
    for event_type, payload in events:
        await publish(gw, alpha["service"], event_type, payload)
    rows = await db.fetch(
        """SELECT d.subscription_id::text AS sub, (e.payload->>'id')::int AS id
           FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id"""
    )
    got: dict[str, set[int]] = {}
    for r in rows:
        got.setdefault(r["sub"], set()).add(r["id"])
    assert got[every["id"]] == {1, 2, 3, 4, 5, 6}
    assert got[reservations["id"]] == {1, 2, 3}
    assert got[exact["id"]] == {4}
    assert got[filtered["id"]] == {1, 3}
    await wait_for(lambda: len(receiver.calls) == 6 + 3 + 1 + 2)


async def test_payload_fields_and_template(
    hooks_gateway: TestClient, alpha: dict[str, Any], receiver: Receiver
) -> None:
    gw, admin = hooks_gateway, alpha["admin"]
    await subscribe(
        gw,
        admin,
        receiver.url + "/fields",
        payload={"fields": {"booking": "reservation.id", "guest": "guest.name", "none": "x.y"}},
    )
    await subscribe(
        gw,
        admin,
        receiver.url + "/template",
        payload={
            "template": {"kind": "{{type}}", "ref": "{{data.reservation.id}}", "v": 2},
            "fields": {"id": "reservation.id"},
        },
    )
    payload = {"reservation": {"id": 77, "nights": 3}, "guest": {"name": "Ada"}}
    await publish(gw, alpha["service"], "reservation.created", payload)
    await wait_for(lambda: len(receiver.calls) == 2)
    by_path = {
        c.headers["webhook-id"] + str(i): orjson.loads(c.body) for i, c in enumerate(receiver.calls)
    }
    bodies = list(by_path.values())
    fields_body = next(b for b in bodies if "data" in b)
    template_body = next(b for b in bodies if "kind" in b)
    assert fields_body["data"] == {"booking": 77, "guest": "Ada"}
    # The template sees data after field selection: data.reservation.id is gone → null.
    assert template_body == {"kind": "reservation.created", "ref": None, "v": 2}


async def test_failed_attempts_are_retried_with_the_same_webhook_id(
    hooks_gateway: TestClient, alpha: dict[str, Any], receiver: Receiver
) -> None:
    async def flaky(request: web.Request, n: int) -> web.StreamResponse:
        if n <= 2:
            return web.Response(status=500, text="x" * 10_000)
        return web.Response(status=204)

    receiver.behave = flaky
    gw = hooks_gateway
    await subscribe(gw, alpha["admin"], receiver.url)
    await publish(gw, alpha["service"], "reservation.cancelled", {"id": "r9"})
    await wait_for(lambda: len(receiver.calls) == 3)
    assert len(set(receiver.ids())) == 1

    async def attempts() -> list[dict[str, Any]]:
        items = (
            await (await gw.get("/admin/v1/webhooks/deliveries", headers=alpha["admin"])).json()
        )["items"]
        if items[0]["status"] != "delivered":
            return []
        url = f"/admin/v1/webhooks/deliveries/{items[0]['id']}/attempts"
        return list((await (await gw.get(url, headers=alpha["admin"])).json())["items"])

    await wait_for(lambda: _nonempty(attempts()))
    found = await attempts()
    assert [a["status_code"] for a in found] == [500, 500, 204]
    assert [a["attempt_number"] for a in found] == [1, 2, 3]
    assert found[0]["response_excerpt"].endswith("[truncated]")
    assert len(found[0]["response_excerpt"]) < 2100


async def _nonempty(coro: Any) -> bool:
    return bool(await coro)
