"""What only a gateway in the request path can do, wired for real: each subscriber gets
payloads in its own ids (integration_mappings, through the cache), and every delivery
attempt to a subscription tied to an external system updates data_sync_status."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gateway.mapping import store as mappings
from gateway.mapping.payload import id_slots
from gateway.mapping.store import Actor, Direction, NewMapping
from tests.fixture_types import AiohttpServer, GatewayClient, GatewayFactory
from tests.integration.webhook_helpers import (
    FAST_SCHEDULE,
    Receiver,
    make_tenant,
    publish,
    subscribe,
    wait_for,
)


@pytest.fixture
async def receiver(aiohttp_server: AiohttpServer) -> Receiver:
    rec = Receiver()
    server: TestServer = await aiohttp_server(rec.app(), host="127.0.0.1")
    rec.url = str(server.make_url("/hooks"))
    return rec


ROUTES = """
  - name: guest-update
    path: /em/guests/{rest...}
    methods: [POST]
    strip_prefix: /em/guests
    upstream: main
    translate:
      request_body: {/guest_id: guest}
      response_body: {/body/guest_id: guest}
    emit:
      - event: guest.updated
"""


@pytest.fixture
async def gw(gateway_factory: GatewayFactory) -> GatewayClient:
    client: GatewayClient = await gateway_factory(
        ROUTES,
        webhook_allow_private=True,
        webhook_allow_http=True,
        webhook_retry_schedule=FAST_SCHEDULE,
        webhook_poll_interval=0.2,
    )
    return client


def test_id_fields_follow_the_documented_convention() -> None:
    r, g, room, other = (str(uuid.uuid4()) for _ in range(4))
    payload = {
        "id": r,
        "guest_id": g,
        "guest": {"id": g, "name": "Ada"},
        "rooms": [{"id": room}, {"id": "101"}],
        "note": other,  # a UUID in a field that names no entity: left alone
        "stay": {"nights": 3},
    }
    found = {(et, value) for _, _, et, value in id_slots(payload, "reservation.created")}
    assert found == {("reservation", r), ("guest", g), ("room", room)}


async def test_each_subscriber_gets_its_own_ids_and_deliveries_update_sync_status(
    gw: GatewayClient, receiver: Receiver, db: asyncpg.Connection
) -> None:
    alpha = await make_tenant(db, "Hotel Alpha")
    tenant = alpha["tenant"].id
    res, guest = uuid.uuid4(), uuid.uuid4()
    actor = Actor("test", None)
    for etype, internal, external, direction in (
        ("reservation", res, "BE-RES-1", Direction.BIDIRECTIONAL),
        ("guest", guest, "BE-G-9", Direction.OUTBOUND),
    ):
        new = NewMapping(etype, internal, "booking_engine", external, direction)
        await mappings.create(db, tenant, new, actor)
    be = await subscribe(gw, alpha["admin"], receiver.url, external_system="booking_engine")
    plain = await subscribe(gw, alpha["admin"], receiver.url)
    payload = {"id": str(res), "guest_id": str(guest), "status": "confirmed"}
    await publish(gw, alpha["service"], "reservation.created", payload)
    await wait_for(lambda: len(receiver.calls) == 2)
    views = {}
    for call in receiver.calls:  # which subscription a call is for: whose secret signed it
        for name, sub in (("be", be), ("pms", plain)):
            try:
                views[name] = Webhook(sub["secret"]).verify(call.body, call.headers)["data"]
            except WebhookVerificationError:
                continue
    assert views["be"] == {"id": "BE-RES-1", "guest_id": "BE-G-9", "status": "confirmed"}
    assert views["pms"] == payload, "a subscription without a system gets internal ids"

    async def synced() -> bool:
        row = await db.fetchrow("SELECT * FROM data_sync_status")
        return row is not None and row["status"] == "succeeded"

    await wait_for(synced)
    row = await db.fetchrow("SELECT * FROM data_sync_status")
    assert (row["entity_type"], row["entity_id"], row["external_system"], row["direction"]) == (
        "reservation",
        res,
        "booking_engine",
        "outbound",
    )
    assert await db.fetchval("SELECT count(*) FROM data_sync_status") == 1


async def test_events_from_translated_routes_carry_internal_ids(
    gw: GatewayClient, db: asyncpg.Connection
) -> None:
    alpha = await make_tenant(db, "Hotel Alpha")
    guest = uuid.uuid4()
    new = NewMapping("guest", guest, "booking_engine", "BE-G-9")
    await mappings.create(db, alpha["tenant"].id, new, Actor("test", None))
    resp = await gw.post(
        "/em/guests/mirror/x", json={"guest_id": "BE-G-9"}, headers=alpha["partner"]
    )
    assert resp.status == 200
    assert (await resp.json())["body"] == {"guest_id": "BE-G-9"}, "the partner sees its ids"
    event = await db.fetchrow("SELECT event_type, payload FROM webhook_events")
    assert event["event_type"] == "guest.updated"
    assert event["payload"]["body"] == {"guest_id": str(guest)}, "events hold internal ids"


async def test_hanging_and_huge_receivers_do_not_hold_up_the_others(
    gw: GatewayClient, db: asyncpg.Connection, aiohttp_server: AiohttpServer
) -> None:
    """One receiver hangs, one answers a 5 MB body, one is healthy: the healthy one gets
    every event at once, the huge answer is capped in the attempt, the hung one times out."""
    from aiohttp import web

    async def hang(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.Response(status=200)

    async def huge(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=200, body=b"z" * (5 * 1024 * 1024))

    receivers = {}
    for name, behave in (("hung", hang), ("huge", huge), ("fast", None)):
        rec = Receiver(behave=behave)
        server: TestServer = await aiohttp_server(rec.app(), host="127.0.0.1")
        rec.url = str(server.make_url("/hooks"))
        receivers[name] = rec
    alpha = await make_tenant(db, "Hotel Alpha")
    policy = {"timeout": 1.0, "max_attempts": 1}
    for rec in receivers.values():
        await subscribe(gw, alpha["admin"], rec.url, retry_policy=policy, max_concurrency=1)
    started = asyncio.get_running_loop().time()
    for i in range(5):
        await publish(gw, alpha["service"], "door.opened", {"room": i})
    await wait_for(lambda: len(receivers["fast"].calls) == 5, timeout=10)
    assert asyncio.get_running_loop().time() - started < 3, "the fast receiver waited"
    await wait_for(lambda: len(receivers["huge"].calls) == 5, timeout=10)

    async def settled() -> bool:
        n = await db.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE status IN ('delivered', 'failed')"
        )
        return bool(n == 15)

    await wait_for(settled, timeout=20)
    rows = await db.fetch(
        """SELECT a.result, length(a.response_excerpt) AS excerpt
           FROM webhook_attempts a"""
    )
    results = sorted(r["result"] for r in rows)
    assert results.count("timeout") == 5 and results.count("delivered") == 10
    assert max(r["excerpt"] or 0 for r in rows) <= 2048 + len(" [truncated]")
