"""Outbound webhooks end to end: real receivers on 127.0.0.1, real PostgreSQL, the real
gateway app with its delivery loop (retry schedule compressed to fractions of a second)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gateway.webhooks.shapes import new_secret
from tests.fixture_types import AiohttpServer, GatewayClient, GatewayFactory, SettingsFactory
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
async def receiver(aiohttp_server: AiohttpServer) -> Receiver:
    rec = Receiver()
    server: TestServer = await aiohttp_server(rec.app(), host="127.0.0.1")
    rec.url = str(server.make_url("/hooks"))
    return rec


@pytest.fixture
async def hooks_gateway(gateway_factory: GatewayFactory) -> GatewayClient:
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
    hooks_gateway: GatewayClient, alpha: dict[str, Any], receiver: Receiver
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


async def test_big_integers_and_deep_payloads_are_stored_and_delivered_intact(
    hooks_gateway: GatewayClient, alpha: dict[str, Any], receiver: Receiver
) -> None:
    """JSON and jsonb hold integers of any size: 2**70 comes back and is delivered as
    written (orjson refuses it and reads it as a float), in a payload nested 60 levels."""
    gw = hooks_gateway
    sub = await subscribe(gw, alpha["admin"], receiver.url, event_types=["ledger.*"])
    deep: Any = {"n": -(2**70)}
    for _ in range(59):
        deep = [deep]
    payload = {"amount": 2**70, "deep": deep}
    published = await publish(gw, alpha["service"], "ledger.posted", payload)
    assert published["event"]["payload"] == payload
    await wait_for(lambda: len(receiver.calls) == 1)
    call = receiver.calls[0]
    assert b'"amount":1180591620717411303424' in call.body
    assert Webhook(sub["secret"]).verify(call.body, call.headers)["data"] == payload
    too_deep = {"deep": [deep]}
    for _ in range(5):
        too_deep = {"deep": [too_deep]}
    resp = await gw.post(
        "/admin/v1/events",
        json={"type": "ledger.posted", "payload": too_deep},
        headers=alpha["service"],
    )
    assert resp.status == 422 and (await resp.json())["field"] == "payload"


async def test_rotation_signs_with_both_secrets_during_grace(
    hooks_gateway: GatewayClient, alpha: dict[str, Any], receiver: Receiver
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
        (
            {"type": "bearer", "token": "tok-0123456789-secret"},
            {"Authorization": "Bearer tok-0123456789-secret"},
        ),
        (
            {"type": "basic", "username": "hotel", "password": "p@ss"},
            {"Authorization": "Basic " + base64.b64encode(b"hotel:p@ss").decode()},
        ),
        (
            {
                "type": "headers",
                "headers": {"X-Partner-Key": "pk-9876543210", "X-Id": "id-4455667"},
            },
            {"X-Partner-Key": "pk-9876543210", "X-Id": "id-4455667"},
        ),
    ],
)
async def test_auth_headers_arrive_and_are_never_shown(
    hooks_gateway: GatewayClient,
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
    hooks_gateway: GatewayClient, alpha: dict[str, Any], receiver: Receiver, db: asyncpg.Connection
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
    pages, cursor = [], None
    while True:
        query = {"limit": "5", **({"cursor": cursor} if cursor else {})}
        resp = await gw.get("/admin/v1/webhooks/deliveries", params=query, headers=admin)
        page = await resp.json()
        pages.append([d["id"] for d in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [5, 5, 2]
    assert len({i for p in pages for i in p}) == 12


async def test_payload_fields_and_template(
    hooks_gateway: GatewayClient, alpha: dict[str, Any], receiver: Receiver
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
    hooks_gateway: GatewayClient, alpha: dict[str, Any], receiver: Receiver
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


async def _deliveries(gw: GatewayClient, headers: dict[str, str], **query: str) -> list[Any]:
    resp = await gw.get("/admin/v1/webhooks/deliveries", params=query, headers=headers)
    assert resp.status == 200
    return list((await resp.json())["items"])


async def _statuses(gw: GatewayClient, headers: dict[str, str]) -> list[str]:
    return sorted(d["status"] for d in await _deliveries(gw, headers))


async def test_dead_after_last_attempt_then_replayed_one_by_one_and_in_bulk(
    hooks_gateway: GatewayClient,
    alpha: dict[str, Any],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = True

    async def answer(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=500 if broken else 200)

    receiver.behave = answer
    gw, admin = hooks_gateway, alpha["admin"]
    sub = await subscribe(gw, admin, receiver.url, retry_policy={"max_attempts": 2})
    for i in range(3):
        await publish(gw, alpha["service"], "invoice.issued", {"n": i})

    async def all_failed() -> bool:
        return await _statuses(gw, admin) == ["failed"] * 3

    await wait_for(all_failed)
    assert len(receiver.calls) == 6
    broken = False
    first = (await _deliveries(gw, admin))[0]
    resp = await gw.post(f"/admin/v1/webhooks/deliveries/{first['id']}/replay", headers=admin)
    assert resp.status == 202 and (await resp.json())["replay_count"] == 1
    await wait_for(lambda: len(receiver.calls) == 7)
    assert receiver.calls[-1].headers["webhook-id"] == first["webhook_id"]
    # A bulk replay takes any window and sends at most MAX_REPLAY a call, oldest first;
    # ``more`` says whether to call again (here one a call, two left).
    monkeypatch.setattr("gateway.webhooks.api.MAX_REPLAY", 1)
    window = {"from": "2000-01-01T00:00:00Z"}
    resp = await gw.post(f"{SUBS}/{sub['id']}/replay", json=window, headers=admin)
    assert resp.status == 202 and await resp.json() == {"replayed": 1, "more": True}
    resp = await gw.post(f"{SUBS}/{sub['id']}/replay", json=window, headers=admin)
    assert resp.status == 202 and await resp.json() == {"replayed": 1, "more": False}
    resp = await gw.post(
        f"{SUBS}/{sub['id']}/replay", json={"from": first["created_at"][:10]}, headers=admin
    )
    assert resp.status == 422  # a time without its offset is not an RFC 3339 date-time
    for edge in ({"from": "0001-01-01T00:00:00+05:00"}, {"from": "9999-12-31T23:00:00-05:00"}):
        resp = await gw.post(f"{SUBS}/{sub['id']}/replay", json=edge, headers=admin)
        assert resp.status == 202 and await resp.json() == {"replayed": 0, "more": False}

    async def all_delivered() -> bool:
        return await _statuses(gw, admin) == ["delivered"] * 3

    await wait_for(all_delivered)
    assert len(receiver.calls) == 9
    # A delivered one may be replayed too; one still in progress may not.
    resp = await gw.post(f"/admin/v1/webhooks/deliveries/{first['id']}/replay", headers=admin)
    assert resp.status == 202
    audit = await (await gw.get("/admin/v1/audit", headers=admin)).json()
    replays = [(a["action"], a["after"]) for a in audit["items"] if "replay" in a["action"]]
    assert replays == [
        ("webhook_delivery.replay", {"replayed": 1}),
        ("webhook_subscription.replay", {"replayed": 0}),
        ("webhook_subscription.replay", {"replayed": 0}),
        ("webhook_subscription.replay", {"replayed": 1}),
        ("webhook_subscription.replay", {"replayed": 1}),
        ("webhook_delivery.replay", {"replayed": 1}),
    ]


async def test_410_gone_disables_the_subscription(
    hooks_gateway: GatewayClient, alpha: dict[str, Any], receiver: Receiver
) -> None:
    async def gone(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=410)

    receiver.behave = gone
    gw, admin = hooks_gateway, alpha["admin"]
    sub = await subscribe(gw, admin, receiver.url)
    await publish(gw, alpha["service"], "guest.deleted", {"id": 1})

    async def disabled() -> bool:
        got = await (await gw.get(f"{SUBS}/{sub['id']}", headers=admin)).json()
        return got["active"] is False

    await wait_for(disabled)
    got = await (await gw.get(f"{SUBS}/{sub['id']}", headers=admin)).json()
    assert "410" in got["disabled_reason"]
    assert await _statuses(gw, admin) == ["failed"]
    # Disabled: new events are not fanned out to it, and replays are refused.
    assert (await publish(gw, alpha["service"], "guest.deleted", {"id": 2}))["deliveries"] == 0
    resp = await gw.post(f"{SUBS}/{sub['id']}/test", headers=admin)
    assert resp.status == 409
    # Re-enabled by an admin: it receives again.
    receiver.behave = None
    resp = await gw.patch(f"{SUBS}/{sub['id']}", json={"active": True}, headers=admin)
    assert (await resp.json())["disabled_reason"] is None
    resp = await gw.post(f"{SUBS}/{sub['id']}/test", headers=admin)
    assert resp.status == 202
    await wait_for(lambda: len(receiver.calls) == 2)
    assert orjson.loads(receiver.calls[-1].body)["type"] == "webhook.test"


async def test_429_retry_after_is_honoured(
    hooks_gateway: GatewayClient, alpha: dict[str, Any], receiver: Receiver
) -> None:
    async def busy(request: web.Request, n: int) -> web.StreamResponse:
        if n == 1:
            return web.Response(status=429, headers={"Retry-After": "1"})
        return web.Response(status=200)

    receiver.behave = busy
    gw = hooks_gateway
    await subscribe(gw, alpha["admin"], receiver.url)
    await publish(gw, alpha["service"], "rate.changed", {"id": 1})
    await wait_for(lambda: len(receiver.calls) == 2, timeout=10)
    gap = receiver.calls[1].at - receiver.calls[0].at
    assert gap >= 0.95, gap  # the schedule alone would have retried after ~0.1 s


async def test_timeouts_and_trickling_bodies_do_not_hang_attempts(
    hooks_gateway: GatewayClient, alpha: dict[str, Any], receiver: Receiver
) -> None:
    async def slow(request: web.Request, n: int) -> web.StreamResponse:
        if n == 1:  # no answer within the timeout
            await asyncio.sleep(3)
            return web.Response(status=200)
        resp = web.StreamResponse(status=200)  # answers, then trickles forever
        await resp.prepare(request)
        for _ in range(100):
            await resp.write(b"x")
            await asyncio.sleep(0.1)
        return resp

    receiver.behave = slow
    gw, admin = hooks_gateway, alpha["admin"]
    await subscribe(gw, admin, receiver.url, retry_policy={"timeout": 0.5})
    started = asyncio.get_running_loop().time()
    await publish(gw, alpha["service"], "door.opened", {"room": 1})

    async def delivered() -> bool:
        return await _statuses(gw, admin) == ["delivered"]

    await wait_for(delivered, timeout=10)
    assert asyncio.get_running_loop().time() - started < 5
    (delivery,) = await _deliveries(gw, admin)
    attempts = (
        await (
            await gw.get(f"/admin/v1/webhooks/deliveries/{delivery['id']}/attempts", headers=admin)
        ).json()
    )["items"]
    assert [a["result"] for a in attempts] == ["timeout", "delivered"]
    assert attempts[1]["response_excerpt"].endswith("[truncated]")


async def test_idempotency_key_publishes_once(
    hooks_gateway: GatewayClient, alpha: dict[str, Any], receiver: Receiver, db: asyncpg.Connection
) -> None:
    gw, service = hooks_gateway, alpha["service"]
    await subscribe(gw, alpha["admin"], receiver.url)
    first = await publish(gw, service, "reservation.created", {"id": 1}, idempotency_key="k-1")
    again = await publish(gw, service, "reservation.created", {"id": 1}, idempotency_key="k-1")
    assert again["event"]["id"] == first["event"]["id"] and again["duplicate"] is True
    resp = await gw.post(
        "/admin/v1/events",
        json={"type": "reservation.created", "payload": {"id": 2}, "idempotency_key": "k-1"},
        headers=service,
    )
    assert resp.status == 409 and (await resp.json())["code"] == "conflict"
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 1
    await wait_for(lambda: len(receiver.calls) == 1)
    await asyncio.sleep(0.3)
    assert len(receiver.calls) == 1


GOOD = {"name": "x", "url": "https://example.com/h", "event_types": ["*"]}


BAD_INPUT: tuple[tuple[dict[str, Any], str, str], ...] = (
    ({"name": None}, "missing_field", "name"),
    ({"url": "ftp://example.com"}, "invalid_url", "url"),
    ({"event_types": []}, "invalid_field", "event"),
    ({"event_types": ["Reservation!"]}, "invalid_field", "event_types"),
    ({"colour": 1}, "unknown_field", "colour"),
    ({"auth": {"type": "x"}}, "invalid_field", "auth.type"),
    ({"auth": {"type": "bearer"}}, "missing_field", "token"),
    (
        {"auth": {"type": "headers", "headers": {"webhook-id": "x"}}},
        "invalid_field",
        "webhook-id",
    ),
    ({"secret": "abc"}, "invalid_field", "whsec_"),
    ({"retry_policy": {"max_attempts": 0}}, "invalid_field", "max_attempts"),
    ({"retry_policy": {"timeout": 1000}}, "invalid_field", "timeout"),
    ({"retry_policy": {"schedule": [1], "backoff": {"initial": 1}}}, "invalid_field", "both"),
    ({"filter": [1]}, "invalid_field", "filter"),
    ({"payload": {"fields": {"a": 1}}}, "invalid_field", "payload.fields"),
    ({"external_system": "Booking Engine"}, "invalid_field", "external_system"),
    ({"url": "https://127.0.0.1/h"}, "invalid_url", "loopback"),
    ({"url": "https://10.1.2.3/h"}, "invalid_url", "private"),
    ({"url": "https://169.254.169.254/latest"}, "invalid_url", "link-local"),
    ({"url": "https://100.100.100.200/"}, "invalid_url", "metadata"),
    ({"url": "https://[::1]/h"}, "invalid_url", "loopback"),
    ({"url": "https://[::ffff:10.0.0.1]/h"}, "invalid_url", "private"),
    ({"url": "https://224.0.0.1/h"}, "invalid_url", "multicast"),
    ({"url": "https://localhost/h"}, "invalid_url", "loopback"),
    ({"url": "https://2130706433/h"}, "invalid_url", "loopback"),  # 127.0.0.1 as a number
    ({"url": "https://0177.0.0.1/h"}, "invalid_url", "loopback"),  # octal
    ({"url": "http://example.com/h"}, "invalid_url", "https"),
    ({"url": "https://user:pw@example.com/h"}, "invalid_url", "credentials"),
    ({"url": "https://example.com/a b"}, "invalid_url", "https://"),  # not the documented form
    ({"secret": ""}, "invalid_field", "secret"),
    ({"secret": "whsec_" + "A" * 30}, "invalid_field", "secret"),  # not 24 to 64 bytes
    ({"active": None, "name": "x"}, "invalid_field", "active"),  # null means nothing here
    ({"auth": {"type": "headers", "headers": {}}}, "invalid_field", "auth.headers"),
    ({"auth": {"type": "basic", "username": "a:b", "password": "p"}}, "invalid_field", "auth"),
    ({"filter": {"a": {"b": ["\u0000"]}}}, "invalid_field", "NUL"),
    ({"retry_policy": {"max_attempts": 2.5}}, "invalid_field", "max_attempts"),
)


async def test_bad_subscription_input_is_refused_clearly(
    gateway: GatewayClient, alpha: dict[str, Any]
) -> None:
    wrong = []
    for change, code, fragment in BAD_INPUT:
        body = {k: v for k, v in {**GOOD, **change}.items() if v is not None or k == "active"}
        resp = await gateway.post(SUBS, json=body, headers=alpha["admin"])
        answer = await resp.json()
        said = f"{answer.get('message')} field={answer.get('field')}"
        if resp.status != 422 or answer["code"] != code or fragment not in said:
            wrong.append((change, resp.status, answer))
    assert not wrong, wrong
    made = await subscribe(gateway, alpha["admin"], "https://example.com/h")
    resp = await gateway.patch(f"{SUBS}/{made['id']}", json={}, headers=alpha["admin"])
    assert resp.status == 422 and (await resp.json())["code"] == "missing_field"
    resp = await gateway.patch(
        f"{SUBS}/{made['id']}", json={"secret": new_secret()}, headers=alpha["admin"]
    )
    assert (await resp.json())["code"] == "unknown_field"  # rotate-secret changes secrets
    for event, code in (
        ({"type": "a.b"}, "missing_field"),
        ({"type": "A B", "payload": {}}, "invalid_field"),
        ({"type": "a.b", "payload": [1]}, "invalid_field"),
        ({"type": "a.b", "payload": {"x": "\u0000"}}, "invalid_field"),
        ({"type": "a.b", "payload": {"k\u0000": 1}}, "invalid_field"),
        ({"type": "a.b", "payload": {"a": [{"b": "\u0000"}]}}, "invalid_field"),  # any depth
        ({"type": "webhook.test", "payload": {}}, "invalid_field"),  # the gateway's own
        ({"type": "a.b", "payload": {}, "idempotency_key": ""}, "invalid_field"),
    ):
        resp = await gateway.post("/admin/v1/events", json=event, headers=alpha["service"])
        assert resp.status == 422 and (await resp.json())["code"] == code, event


LOOPBACK_IN_DISGUISE = (
    "https://127.0.0.1./h",  # trailing dot
    "https://localhost./h",
    "https://Sub.LocalHost./h",
    "https://%31%32%37.0.0.1/h",  # percent-encoded octets
    "https://2130706433/h",  # decimal, hex, octal forms inet_aton and browsers accept
    "https://0x7f.1/h",
    "https://0177.0.0.1/h",
    "https://[2002:7f00:1::]/h",  # 6to4
    "https://[::ffff:127.0.0.1]/h",  # IPv4-mapped
    "https://[::127.0.0.1]/h",  # IPv4-compatible
    "https://[64:ff9b::7f00:1]/h",  # NAT64
    "https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/h",  # Teredo, client 127.0.0.1
)


async def test_disguised_loopback_endpoints_are_refused(
    gateway: GatewayClient, alpha: dict[str, Any]
) -> None:
    """GATEWAY_WEBHOOK_ALLOW_PRIVATE unset: every disguise of 127.0.0.1 is refused when a
    subscription is created or its URL changed, whatever the resolver would make of it."""
    for url in LOOPBACK_IN_DISGUISE:
        resp = await gateway.post(SUBS, json={**GOOD, "url": url}, headers=alpha["admin"])
        answer = await resp.json()
        assert resp.status == 422, (url, answer)
        assert answer["code"] == "invalid_url" and "loopback" in answer["message"], (url, answer)
    made = await subscribe(gateway, alpha["admin"], "https://example.com/h")
    for url in LOOPBACK_IN_DISGUISE:
        resp = await gateway.patch(
            f"{SUBS}/{made['id']}", json={"url": url}, headers=alpha["admin"]
        )
        assert resp.status == 422 and (await resp.json())["code"] == "invalid_url", url
    resp = await gateway.post(
        SUBS, json={**GOOD, "url": "https://256.0.0.1/h"}, headers=alpha["admin"]
    )
    assert resp.status == 422 and "invalid host" in (await resp.json())["message"]


async def test_ssrf_guard_refuses_at_connect_time(
    gateway_factory: GatewayFactory,
    alpha: dict[str, Any],
    receiver: Receiver,
    db: asyncpg.Connection,
) -> None:
    """A subscription whose address became private after it was saved (DNS rebinding, or
    a row written around the API) is refused when connecting, not delivered."""
    gw = await gateway_factory(
        webhook_allow_http=True, webhook_retry_schedule=FAST_SCHEDULE, webhook_poll_interval=0.2
    )
    await subscribe(
        gw, alpha["admin"], "https://example.com/hook", retry_policy={"max_attempts": 1}
    )
    named = receiver.url.replace("127.0.0.1", "localhost")
    await db.execute("UPDATE webhook_subscriptions SET url = $1", receiver.url)
    await publish(gw, alpha["service"], "guest.created", {"id": 1})
    await db.execute("UPDATE webhook_subscriptions SET url = $1", named)
    await publish(gw, alpha["service"], "guest.created", {"id": 2})

    async def failed() -> bool:
        return await _statuses(gw, alpha["admin"]) == ["failed", "failed"]

    await wait_for(failed)
    rows = await db.fetch("SELECT result, error FROM webhook_attempts")
    assert {r["result"] for r in rows} == {"refused"}
    assert receiver.calls == []


async def test_receiver_down_then_up_gets_every_event_once(
    gateway_factory: GatewayFactory,
    alpha: dict[str, Any],
    aiohttp_server: AiohttpServer,
) -> None:
    from tests.integration.fault_helpers import free_port

    gw = await gateway_factory(
        webhook_allow_private=True,
        webhook_allow_http=True,
        webhook_retry_schedule=(0.0, 0.2, 0.3, 0.5),
        webhook_poll_interval=0.2,
    )
    port = free_port()
    await subscribe(
        gw, alpha["admin"], f"http://127.0.0.1:{port}/hooks", retry_policy={"max_attempts": 50}
    )
    sent = [await publish(gw, alpha["service"], "room.ready", {"n": i}) for i in range(30)]
    await asyncio.sleep(1.5)  # several refused attempts each
    rec = Receiver()
    await aiohttp_server(rec.app(), host="127.0.0.1", port=port)
    await wait_for(lambda: len(rec.calls) >= 30, timeout=15)
    await asyncio.sleep(0.5)
    expected = {"msg_" + s["event"]["id"].replace("-", "") for s in sent}
    assert sorted(rec.ids()) == sorted(expected)  # every one, none twice


async def test_outbox_rows_inserted_by_services_are_delivered(
    hooks_gateway: GatewayClient, alpha: dict[str, Any], receiver: Receiver, db: asyncpg.Connection
) -> None:
    """An internal service writes its data and the event in one transaction."""
    await subscribe(hooks_gateway, alpha["admin"], receiver.url, event_types=["folio.*"])
    tenant_id = alpha["tenant"].id
    async with db.transaction():
        await db.execute("CREATE TEMP TABLE folios (id int)")  # stands in for service data
        await db.execute("INSERT INTO folios VALUES (1)")
        await db.execute(
            "INSERT INTO webhook_events (tenant_id, event_type, payload) VALUES ($1, $2, $3)",
            tenant_id,
            "folio.closed",
            {"folio": 1},
        )
        await asyncio.sleep(0.5)
        assert receiver.calls == []  # nothing leaves before the commit
    await wait_for(lambda: len(receiver.calls) == 1)
    assert orjson.loads(receiver.calls[0].body)["data"] == {"folio": 1}
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(
            "INSERT INTO webhook_events (tenant_id, event_type, payload) VALUES ($1, $2, $3)",
            tenant_id,
            "Not A Type",
            {},
        )


async def test_route_emits_an_event_from_the_proxied_answer(
    gateway_factory: GatewayFactory, alpha: dict[str, Any], receiver: Receiver
) -> None:
    extra = """
  - name: make-reservation
    path: /reservations
    methods: [POST]
    upstream: main
    emit:
      - event: reservation.created
        status: [200]
"""
    gw = await gateway_factory(
        extra_routes=extra,
        webhook_allow_private=True,
        webhook_allow_http=True,
        webhook_poll_interval=0.2,
    )
    await subscribe(gw, alpha["admin"], receiver.url, event_types=["reservation.created"])
    resp = await gw.post("/reservations", data=b'{"guest": "Ada"}', headers=alpha["partner"])
    assert resp.status == 200
    answer = await resp.json()
    await wait_for(lambda: len(receiver.calls) == 1)
    body = orjson.loads(receiver.calls[0].body)
    assert body["type"] == "reservation.created"
    assert body["data"]["body_b64"] == answer["body_b64"]  # the upstream's answer, as sent


async def test_concurrency_limit_per_subscription(
    hooks_gateway: GatewayClient, alpha: dict[str, Any], receiver: Receiver
) -> None:
    async def slow(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(0.2)
        return web.Response(status=200)

    receiver.behave = slow
    gw = hooks_gateway
    await subscribe(gw, alpha["admin"], receiver.url, max_concurrency=2)
    for i in range(8):
        await publish(gw, alpha["service"], "room.ready", {"n": i})
    await wait_for(lambda: len(receiver.calls) == 8, timeout=15)
    assert receiver.max_in_flight == 2


async def test_subscription_failing_for_the_configured_period_is_disabled(
    gateway_factory: GatewayFactory, alpha: dict[str, Any], receiver: Receiver
) -> None:
    async def broken(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=502)

    receiver.behave = broken
    gw = await gateway_factory(
        webhook_allow_private=True,
        webhook_allow_http=True,
        webhook_retry_schedule=(0.0, 0.2),
        webhook_poll_interval=0.1,
        webhook_disable_after=1.0,
    )
    sub = await subscribe(gw, alpha["admin"], receiver.url, retry_policy={"max_attempts": 50})
    await publish(gw, alpha["service"], "room.ready", {"n": 1})

    async def disabled() -> bool:
        got = await (await gw.get(f"{SUBS}/{sub['id']}", headers=alpha["admin"])).json()
        return got["active"] is False

    await wait_for(disabled, timeout=10)
    got = await (await gw.get(f"{SUBS}/{sub['id']}", headers=alpha["admin"])).json()
    assert got["disabled_reason"].startswith("every attempt failed since")
    calls = len(receiver.calls)
    await asyncio.sleep(0.6)
    assert len(receiver.calls) == calls  # nothing more is attempted


async def test_webhook_endpoints_are_tenant_scoped_and_role_checked(
    hooks_gateway: GatewayClient, alpha: dict[str, Any], db: asyncpg.Connection, receiver: Receiver
) -> None:
    gw = hooks_gateway
    beta = await make_tenant(db, "Hotel Beta")
    sub = await subscribe(gw, alpha["admin"], receiver.url)
    await publish(gw, alpha["service"], "guest.created", {"id": 1})
    (delivery,) = await _deliveries(gw, alpha["admin"])
    for path in (f"{SUBS}/{sub['id']}", f"/admin/v1/webhooks/deliveries/{delivery['id']}"):
        assert (await gw.get(path, headers=beta["admin"])).status == 404
    assert (await gw.delete(f"{SUBS}/{sub['id']}", headers=beta["admin"])).status == 404
    assert await _deliveries(gw, beta["admin"]) == []
    assert (await (await gw.get(SUBS, headers=beta["admin"])).json())["items"] == []
    # Roles: service publishes but does not manage; viewer reads; partner does neither.
    body = {"name": "x", "url": receiver.url, "event_types": ["*"]}
    assert (await gw.post(SUBS, json=body, headers=alpha["service"])).status == 403
    assert (await gw.post(SUBS, json=body, headers=alpha["viewer"])).status == 403
    assert (await gw.get(SUBS, headers=alpha["viewer"])).status == 200
    event = {"type": "a.b", "payload": {}}
    assert (await gw.post("/admin/v1/events", json=event, headers=alpha["viewer"])).status == 403
    assert (await gw.post("/admin/v1/events", json=event, headers=alpha["partner"])).status == 403


async def test_delete_cancels_pending_and_is_audited(
    hooks_gateway: GatewayClient, alpha: dict[str, Any], receiver: Receiver
) -> None:
    async def broken(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=500)

    receiver.behave = broken
    gw, admin = hooks_gateway, alpha["admin"]
    sub = await subscribe(
        gw, admin, receiver.url, retry_policy={"max_attempts": 5, "schedule": [0, 60]}
    )
    await publish(gw, alpha["service"], "guest.created", {"id": 1})
    await wait_for(lambda: len(receiver.calls) == 1)
    resp = await gw.patch(f"{SUBS}/{sub['id']}", json={"name": "renamed"}, headers=admin)
    assert (await resp.json())["name"] == "renamed"
    assert (await gw.delete(f"{SUBS}/{sub['id']}", headers=admin)).status == 200
    assert (await gw.get(f"{SUBS}/{sub['id']}", headers=admin)).status == 404
    assert await _statuses(gw, admin) == ["cancelled"]
    audit = await (await gw.get("/admin/v1/audit", headers=admin)).json()
    actions = [a["action"] for a in audit["items"] if a["object_type"] == "webhook_subscription"]
    assert actions == [
        "webhook_subscription.delete",
        "webhook_subscription.update",
        "webhook_subscription.create",
    ]
    assert sub["secret"] not in orjson.dumps(audit).decode()


async def test_webhook_metrics_are_exposed(
    hooks_gateway: GatewayClient, alpha: dict[str, Any], receiver: Receiver
) -> None:
    gw = hooks_gateway
    await subscribe(gw, alpha["admin"], receiver.url)
    await publish(gw, alpha["service"], "guest.created", {"id": 1})
    await wait_for(lambda: len(receiver.calls) == 1)
    await asyncio.sleep(0.5)  # a stats round
    text = await (await gw.get("/metrics")).text()
    for name in (
        'gateway_webhook_deliveries_total{result="delivered"}',
        'gateway_webhook_attempts_total{result="delivered"}',
        "gateway_webhook_attempt_duration_seconds_bucket",
        "gateway_webhook_delivery_lag_seconds_bucket",
        "gateway_webhook_pending_deliveries",
        "gateway_webhook_oldest_pending_age_seconds",
        "gateway_webhook_disabled_subscriptions",
    ):
        assert name in text, name


async def test_shutdown_hands_back_attempts_that_do_not_finish(
    gateway_factory: GatewayFactory,
    alpha: dict[str, Any],
    receiver: Receiver,
    db: asyncpg.Connection,
) -> None:
    async def hang(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.Response(status=200)

    receiver.behave = hang
    gw = await gateway_factory(
        webhook_allow_private=True,
        webhook_allow_http=True,
        webhook_poll_interval=0.2,
        shutdown_timeout=0.5,
    )
    await subscribe(gw, alpha["admin"], receiver.url, retry_policy={"timeout": 30})
    for i in range(3):
        await publish(gw, alpha["service"], "room.ready", {"n": i})
    await wait_for(lambda: receiver.in_flight == 3)
    await gw.close()  # runs the app's cleanup: the delivery loop gets 0.5 s, then releases
    rows = await db.fetch("SELECT status, lease_owner, attempt_count FROM webhook_deliveries")
    assert [(r["status"], r["lease_owner"], r["attempt_count"]) for r in rows] == [
        ("pending", None, 0)
    ] * 3
    results = await db.fetch("SELECT result FROM webhook_attempts")
    assert [r["result"] for r in results] == ["released"] * 3


async def test_external_system_subscriptions_go_through_the_translate_and_report_hooks(
    database_url: str,
    settings_factory: SettingsFactory,
    alpha: dict[str, Any],
    receiver: Receiver,
    db: asyncpg.Connection,
) -> None:
    """The id translation and sync report hooks: the dispatcher calls them for
    subscriptions that name an external system, and only then."""
    from cryptography.fernet import Fernet

    from gateway.crypto import SecretBox
    from gateway.webhooks import store
    from gateway.webhooks.delivery import Dispatcher, loop_pool, webhook_session
    from gateway.webhooks.shapes import new_secret
    from gateway.webhooks.ssrf import AddressPolicy

    box = SecretBox([Fernet.generate_key()])
    ids = {"r-internal-1": "BE-778"}  # stands in for integration_mappings
    reported: list[tuple[str, bool]] = []

    async def translate(
        payload: Any, *, tenant_id: Any, external_system: str, event_type: str
    ) -> Any:
        assert tenant_id == alpha["tenant"].id and event_type == "reservation.created"
        return {**payload, "id": ids[payload["id"]], "system": external_system}

    async def report(**kw: Any) -> None:
        reported.append((kw["external_system"], kw["delivered"]))

    actor = store.Actor("test", None)
    for system in ("booking_engine", None):
        values = {
            "name": f"to {system}",
            "url": receiver.url,
            "event_types": ["*"],
            "secret": box.encrypt(new_secret()),
            "auth_type": "none",
            "external_system": system,
        }
        await store.create_subscription(db, alpha["tenant"].id, values, actor)
    await store.publish_event(db, alpha["tenant"].id, "reservation.created", {"id": "r-internal-1"})
    settings = settings_factory(webhook_poll_interval=0.1)
    policy = AddressPolicy(allow_private=True)
    pool = await loop_pool(database_url)
    session = webhook_session(policy)
    dispatcher = Dispatcher(
        pool, session, box, settings, policy, translate=translate, report=report
    )
    dispatcher.start()
    try:
        await wait_for(lambda: len(receiver.calls) == 2 and len(reported) == 1)
    finally:
        await dispatcher.close(1.0)
        await session.close()
        await pool.close()
    datas = sorted((orjson.loads(c.body)["data"] for c in receiver.calls), key=len)
    assert datas == [{"id": "r-internal-1"}, {"id": "BE-778", "system": "booking_engine"}]
    assert reported == [("booking_engine", True)]


async def test_secrets_rotate_re_encrypts_webhook_secrets(
    db: asyncpg.Connection, alpha: dict[str, Any]
) -> None:
    from cryptography.fernet import Fernet

    from gateway.crypto import SecretBox, rotate_all
    from gateway.errors import SecretError
    from gateway.webhooks import store

    old, new = Fernet.generate_key(), Fernet.generate_key()
    box = SecretBox([old])
    values = {
        "name": "r",
        "url": "https://example.com/h",
        "event_types": ["*"],
        "secret": box.encrypt("whsec_x"),
        "auth_type": "bearer",
        "auth_secret": box.encrypt('{"token": "t"}'),
    }
    await store.create_subscription(db, alpha["tenant"].id, values, store.Actor("test", None))
    assert await rotate_all(db, SecretBox([new, old])) == 2  # secret + auth_secret
    row = await db.fetchrow("SELECT secret, auth_secret FROM webhook_subscriptions")
    only_new = SecretBox([new])
    assert only_new.decrypt(row["secret"]) == "whsec_x"
    assert only_new.decrypt(row["auth_secret"]) == '{"token": "t"}'
    with pytest.raises(SecretError):
        box.decrypt(row["secret"])


async def test_old_finished_deliveries_are_pruned(
    hooks_gateway: GatewayClient, alpha: dict[str, Any], receiver: Receiver, db: asyncpg.Connection
) -> None:
    from gateway.webhooks import store

    gw, admin = hooks_gateway, alpha["admin"]
    await subscribe(gw, admin, receiver.url)
    for i in range(3):
        await publish(gw, alpha["service"], "guest.created", {"n": i})

    async def delivered() -> bool:
        return await _statuses(gw, admin) == ["delivered"] * 3

    await wait_for(delivered)
    age = "interval '40 days'"
    await db.execute(f"UPDATE webhook_events SET created_at = created_at - {age}")
    await db.execute(
        f"""UPDATE webhook_deliveries SET updated_at = updated_at - {age}
            WHERE event_id IN (SELECT id FROM webhook_events WHERE payload->>'n' IN ('0', '1'))"""
    )
    # An old delivery that is still pending is never pruned (nor its event).
    await db.execute(
        """UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now() + '1 day'
           WHERE event_id IN (SELECT id FROM webhook_events WHERE payload->>'n' = '1')"""
    )
    assert await store.prune(db, 30, 10_000) == (1, 1)
    left = await db.fetch(
        """SELECT e.payload->>'n' AS n, d.status FROM webhook_events e
           JOIN webhook_deliveries d ON d.event_id = e.id ORDER BY n"""
    )
    assert [(r["n"], r["status"]) for r in left] == [("1", "pending"), ("2", "delivered")]
    assert await db.fetchval("SELECT count(*) FROM webhook_attempts") == 2
