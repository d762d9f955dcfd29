"""What only a gateway in the request path can do, wired for real: each subscriber gets
payloads in its own ids (integration_mappings, through the cache), and every delivery
attempt to a subscription tied to an external system updates data_sync_status."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gateway.mapping import store as mappings
from gateway.mapping.payload import id_slots
from gateway.mapping.store import Actor, Direction, NewMapping
from tests.integration.webhook_helpers import (
    FAST_SCHEDULE,
    Receiver,
    make_tenant,
    publish,
    subscribe,
    wait_for,
)


@pytest.fixture
async def receiver(aiohttp_server: Callable[..., Any]) -> Receiver:
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
async def gw(gateway_factory: Callable[..., Any]) -> TestClient:
    client: TestClient = await gateway_factory(
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
    gw: TestClient, receiver: Receiver, db: asyncpg.Connection
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
    gw: TestClient, db: asyncpg.Connection
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
