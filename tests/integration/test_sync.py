"""data_sync_status end to end: reports, batch, versions, conflicts, the change feed under
concurrent writers, rows from proxied traffic, and the sync metrics."""

from __future__ import annotations

import asyncio
import io
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest

from gateway import metrics
from gateway.app import POOL
from gateway.sync import store
from gateway.sync.model import Direction, EntityKey, Report, Side, Status
from gateway.sync.recorder import refresh_stats
from tests.fixture_types import GatewayClient, GatewayFactory
from tests.integration.webhook_helpers import make_tenant

SYNC_ROUTES = """
  - name: sync-reservation
    path: /sync/reservations/{id}
    methods: [PUT]
    strip_prefix: /sync
    upstream: main
    sync: {entity_type: reservation, entity: "path:id", direction: inbound}
  - name: sync-guest
    path: /sync/guests
    methods: [POST]
    strip_prefix: /sync
    upstream: main
    sync: {entity_type: guest, entity: "request:/guest/id", direction: inbound}
  - name: sync-translated
    path: /synctr/reservations/{id}
    methods: [PUT]
    strip_prefix: /synctr
    upstream: main
    translate: {path: {id: reservation}}
    sync: {entity_type: reservation, entity: "path:id", direction: bidirectional}
  - name: sync-translated-request
    path: /synctr/mirror/guests
    methods: [POST]
    strip_prefix: /synctr
    upstream: main
    translate: {request_body: {/guest/id: guest}}
    sync: {entity_type: guest, entity: "request:/guest/id", direction: inbound}
  - name: sync-translated-response
    path: /synctr/mirror/answers
    methods: [POST]
    strip_prefix: /synctr
    upstream: main
    translate: {request_body: {/guest/id: guest}, response_body: {/body/guest/id: guest}}
    sync: {entity_type: guest, entity: "response:/body/guest/id", direction: outbound}
  - name: sync-dead
    path: /sync-dead/rooms/{id}
    methods: [PUT]
    upstream: dead
    sync: {entity_type: room, entity: "path:id", direction: outbound}
"""


@pytest.fixture
async def callers(db: asyncpg.Connection) -> dict[str, Any]:
    """Tenants alpha and beta, each with admin, viewer, service and partner keys."""
    out: dict[str, Any] = {}
    for t in ("alpha", "beta"):
        made = await make_tenant(db, f"Hotel {t}")
        out[t] = made.pop("tenant")
        out.update({f"{t}_{role}": headers for role, headers in made.items()})
    return out


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> GatewayClient:
    return await gateway_factory(SYNC_ROUTES)


def report(entity_id: uuid.UUID | str, status: str = "succeeded", **extra: Any) -> dict[str, Any]:
    return {
        "entity_type": "reservation",
        "entity_id": str(entity_id),
        "external_system": "booking_engine",
        "direction": "outbound",
        "status": status,
        **extra,
    }


async def post(gw: GatewayClient, path: str, body: Any, headers: dict[str, str]) -> Any:
    data = io.BytesIO(orjson.dumps(body))  # large batches: aiohttp warns on big raw bytes
    headers = {**headers, "Content-Type": "application/json"}
    resp = await gw.post(f"/admin/v1/sync{path}", data=data, headers=headers)
    return resp.status, await resp.json()


async def test_report_and_read_with_roles_and_tenants(
    gateway: GatewayClient, callers: dict[str, Any]
) -> None:
    rid = uuid.uuid4()
    status, body = await post(
        gateway,
        "/reports",
        report(rid, "failed", error="503 from partner"),
        callers["alpha_service"],
    )
    assert status == 200 and body["outcome"] == "created"
    row = body["status"]
    assert row["status"] == "failed" and row["retry_count"] == 1 and row["next_retry_at"]
    sync_id = row["id"]
    # A partner reports for its own system (external side by default), not for another.
    partner_report = report(rid, "succeeded")
    status, body = await post(gateway, "/reports", partner_report, callers["alpha_partner"])
    assert status == 200 and body["status"]["status"] == "succeeded"
    other = {**partner_report, "external_system": "salesforce"}
    status, body = await post(gateway, "/reports", other, callers["alpha_partner"])
    assert status == 422 and body["code"] == "invalid_field"
    # Viewers read, do not report; another tenant sees nothing.
    status, _ = await post(gateway, "/reports", report(rid), callers["alpha_viewer"])
    assert status == 403
    got = await gateway.get(f"/admin/v1/sync/status/{sync_id}", headers=callers["alpha_viewer"])
    assert got.status == 200 and (await got.json())["entity_id"] == str(rid)
    beta = await gateway.get(f"/admin/v1/sync/status/{sync_id}", headers=callers["beta_admin"])
    assert beta.status == 404
    listed = await gateway.get(
        "/admin/v1/sync/status", params={"entity_id": str(rid)}, headers=callers["beta_admin"]
    )
    assert (await listed.json())["items"] == []
    status, _ = await post(gateway, f"/status/{sync_id}/retry", None, callers["alpha_partner"])
    assert status == 403


async def test_stale_versions_conflicts_and_resolution(
    gateway: GatewayClient, callers: dict[str, Any], db: asyncpg.Connection
) -> None:
    rid = uuid.uuid4()
    svc, partner = callers["alpha_service"], callers["alpha_partner"]
    status, body = await post(gateway, "/reports", report(rid, version=5), svc)
    assert status == 200 and body["status"]["version"] == 5
    status, body = await post(gateway, "/reports", report(rid, version=4), svc)
    assert status == 409 and body["code"] == "stale_version"
    # The PMS changed it (v6) and, before that synced, the partner changed it too (v8).
    status, body = await post(gateway, "/reports", report(rid, "pending", version=6), svc)
    assert status == 200 and body["status"]["pending_side"] == "internal"
    status, body = await post(gateway, "/reports", report(rid, "pending", version=8), partner)
    assert status == 409 and body["code"] == "sync_conflict"
    listed = await gateway.get("/admin/v1/sync/status", params={"status": "conflict"}, headers=svc)
    (row,) = (await listed.json())["items"]
    assert row["conflict"] == {"internal": 6, "external": 8}
    status, body = await post(gateway, f"/status/{row['id']}/resolve", {"side": "sideways"}, svc)
    assert status == 422
    status, body = await post(gateway, f"/status/{row['id']}/resolve", {"side": "external"}, svc)
    assert status == 200
    assert (body["status"], body["pending_side"], body["pending_version"]) == (
        "pending",
        "external",
        8,
    )
    status, body = await post(gateway, f"/status/{row['id']}/resolve", {"side": "external"}, svc)
    assert status == 409 and body["code"] == "invalid_state"
    status, body = await post(gateway, "/reports", report(rid, version=8, side="external"), svc)
    assert status == 200 and body["status"]["status"] == "succeeded"
    assert body["status"]["version"] == 8
    actions = [r["action"] for r in await db.fetch("SELECT action FROM audit_log ORDER BY id")]
    assert "sync.resolve" in actions


async def test_batch_of_ten_thousand_entities_in_one_call(
    gateway: GatewayClient, callers: dict[str, Any], db: asyncpg.Connection
) -> None:
    ids = [uuid.uuid4() for _ in range(10_000)]
    batch = {"reports": [report(i, version=1) for i in ids]}
    status, body = await post(gateway, "/reports/batch", batch, callers["alpha_service"])
    assert status == 200, body
    assert body["received"] == 10_000 and body["outcomes"]["created"] == 10_000
    assert await db.fetchval("SELECT count(*) FROM data_sync_status") == 10_000
    # Repeated: nothing changes; older versions for a few are refused, the rest applied.
    again = {"reports": [report(i, version=0 if n < 3 else 2) for n, i in enumerate(ids)]}
    status, body = await post(gateway, "/reports/batch", again, callers["alpha_service"])
    assert body["outcomes"]["stale"] == 3 and body["outcomes"]["updated"] == 9_997
    assert [r["index"] for r in body["refused"]] == [0, 1, 2]
    summary = await gateway.get("/admin/v1/sync/summary", headers=callers["alpha_viewer"])
    (item,) = (await summary.json())["items"]
    assert item["external_system"] == "booking_engine" and item["succeeded"] == 10_000


async def test_bad_input_is_refused_clearly(
    gateway: GatewayClient, callers: dict[str, Any]
) -> None:
    svc = callers["alpha_service"]
    resp = await gateway.post(
        "/admin/v1/sync/reports",
        data=b"{nope",
        headers={**svc, "Content-Type": "application/json"},
    )
    assert resp.status == 400 and (await resp.json())["code"] == "malformed_json"
    for bad, code in (
        ({**report(uuid.uuid4()), "colour": "red"}, "unknown_field"),
        ({**report(uuid.uuid4()), "entity_id": "R-1"}, "invalid_field"),
        ({**report(uuid.uuid4()), "status": "conflict"}, "invalid_field"),
        ({**report(uuid.uuid4()), "version": 2**63}, "invalid_field"),
        ({**report(uuid.uuid4()), "version": "7"}, "invalid_field"),
        ({**report(uuid.uuid4()), "entity_type": "Bad Type"}, "invalid_field"),
        ({k: v for k, v in report(uuid.uuid4()).items() if k != "direction"}, "missing_field"),
    ):
        status, body = await post(gateway, "/reports", bad, svc)
        assert (status, body["code"]) == (422, code), (bad, body)
    status, body = await post(gateway, "/reports/batch", {"reports": [report("1")]}, svc)
    assert status == 422 and body["field"] == "reports[0].entity_id", body
    assert "reports[0].entity_id" in body["message"]
    status, body = await post(gateway, "/reports/batch", {"reports": []}, svc)
    assert status == 422
    for params in ({"cursor": "garbage"}, {"status": "weird"}, {"entity_id": "x"}):
        resp = await gateway.get("/admin/v1/sync/status", params=params, headers=svc)
        assert resp.status == 400, params
    resp = await gateway.get("/admin/v1/sync/changes", headers=svc)
    assert resp.status == 400 and "external_system" in (await resp.json())["message"]
    resp = await gateway.get("/admin/v1/sync/status/not-a-uuid", headers=svc)
    assert resp.status == 404


async def _feed(gw: GatewayClient, headers: dict[str, str], cursor: str | None) -> Any:
    params = {"external_system": "booking_engine", "limit": "7"}
    if cursor:
        params["cursor"] = cursor
    resp = await gw.get("/admin/v1/sync/changes", params=params, headers=headers)
    assert resp.status == 200
    return await resp.json()


def _apply(
    tenant: uuid.UUID, entity: uuid.UUID, status: Status = Status.SUCCEEDED
) -> tuple[uuid.UUID, list[Report]]:
    key = EntityKey("reservation", entity, "booking_engine", Direction.OUTBOUND)
    return tenant, [Report(key, status, Side.INTERNAL)]


async def test_change_feed_waits_for_a_transaction_that_commits_late(
    gateway: GatewayClient, callers: dict[str, Any], database_url: str
) -> None:
    """A change of an older transaction committing after a newer one is not skipped."""
    tenant = callers["alpha"].id
    early, late = uuid.uuid4(), uuid.uuid4()
    first = await _feed(gateway, callers["alpha_partner"], None)
    assert first["items"] == [] and first["next_cursor"] is None
    slow = await asyncpg.connect(database_url)
    fast = await asyncpg.connect(database_url)
    try:
        tx = slow.transaction()
        await tx.start()
        await slow.fetchval("SELECT pg_current_xact_id()")  # the older transaction id
        await store.apply_reports(slow, *_apply(tenant, early), datetime.now(UTC))
        await store.apply_reports(fast, *_apply(tenant, late), datetime.now(UTC))
        page = await _feed(gateway, callers["alpha_partner"], None)
        assert page["items"] == [], "the newer change must wait for the older transaction"
        await tx.commit()
    finally:
        await slow.close()
        await fast.close()
    page = await _feed(gateway, callers["alpha_partner"], None)
    assert [i["entity_id"] for i in page["items"]] == [str(early), str(late)]
    after = await _feed(gateway, callers["alpha_partner"], page["next_cursor"])
    assert after["items"] == [] and after["next_cursor"] == page["next_cursor"]


async def test_change_feed_under_concurrent_writers_never_skips_or_repeats(
    gateway: GatewayClient, callers: dict[str, Any], database_url: str, db: asyncpg.Connection
) -> None:
    tenant = callers["alpha"].id
    entities = [uuid.uuid4() for _ in range(40)]
    rng = random.Random(7)
    stop = asyncio.Event()

    async def writer() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            for _ in range(25):
                async with conn.transaction():
                    picked = sorted(rng.sample(entities, 3))  # one lock order, like store
                    for e in picked:
                        status = rng.choice([Status.SUCCEEDED, Status.FAILED, Status.PENDING])
                        await store.apply_reports(
                            conn, *_apply(tenant, e, status), datetime.now(UTC)
                        )
                    await asyncio.sleep(rng.random() * 0.02)  # hold the transaction open
        finally:
            await conn.close()

    seen: list[tuple[str, str]] = []
    cursor: str | None = None

    async def reader() -> None:
        nonlocal cursor
        while True:
            done = stop.is_set()
            page = await _feed(gateway, callers["alpha_partner"], cursor)
            seen.extend((i["id"], i["change"]) for i in page["items"])
            cursor = page["next_cursor"] or cursor
            if done and not page["items"]:
                return
            await asyncio.sleep(0.005)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer() for _ in range(4)))
    stop.set()
    await asyncio.wait_for(reading, 30)
    assert len(seen) == len(set(seen)), "a change was returned twice"
    final = {
        (str(r["id"]), r["change"])
        for r in await db.fetch("SELECT id, change_xid::text AS change FROM data_sync_status")
    }
    assert final <= set(seen), "the latest change of some entity was never returned"


async def test_proxied_calls_record_sync_status(
    gateway: GatewayClient, callers: dict[str, Any], db: asyncpg.Connection
) -> None:
    partner = callers["alpha_partner"]
    rid, gid, room = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    resp = await gateway.put(f"/sync/reservations/{rid}", json={"x": 1}, headers=partner)
    assert resp.status == 200
    resp = await gateway.post("/sync/guests", json={"guest": {"id": str(gid)}}, headers=partner)
    assert resp.status == 200
    for _ in range(2):
        resp = await gateway.put(f"/sync-dead/rooms/{room}", headers=partner)
        assert resp.status == 502
    # Not internal ids and refused calls say nothing about sync.
    assert (await gateway.put("/sync/reservations/BE-77", headers=partner)).status == 200
    assert (await gateway.put(f"/sync/reservations/{uuid.uuid4()}")).status == 401
    rows = await _wait_settled(db)
    by_type = {r["entity_type"]: r for r in rows}
    assert by_type["reservation"]["entity_id"] == rid
    assert by_type["reservation"]["status"] == "succeeded"
    assert by_type["reservation"]["direction"] == "inbound"
    assert by_type["guest"]["entity_id"] == gid
    dead = by_type["room"]
    assert (dead["status"], dead["retry_count"], dead["direction"]) == ("failed", 2, "outbound")
    assert "refused the connection" in dead["error_message"]
    assert await db.fetchval("SELECT count(*) FROM data_sync_status") == 3


async def _wait_settled(db: asyncpg.Connection) -> list[asyncpg.Record]:
    """The recorder writes in the background: wait until all three entities are there."""
    for _ in range(200):
        rows = await db.fetch("SELECT * FROM data_sync_status ORDER BY entity_type")
        if len(rows) == 3 and any(r["retry_count"] == 2 for r in rows):
            return list(rows)
        await asyncio.sleep(0.05)
    return list(rows)


def _value(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


async def test_sync_metrics_after_known_scenarios(
    gateway: GatewayClient, callers: dict[str, Any], db: asyncpg.Connection
) -> None:
    svc = callers["alpha_service"]
    ok, failing = uuid.uuid4(), uuid.uuid4()
    conflicts_before = _value("gateway_sync_conflicts_total", external_system="booking_engine")
    await post(gateway, "/reports", report(ok), svc)
    await post(gateway, "/reports", report(failing, "failed", error="x"), svc)
    c = uuid.uuid4()
    await post(gateway, "/reports", report(c, "pending", version=2), svc)
    await post(gateway, "/reports", report(c, "pending", version=3), callers["alpha_partner"])
    # Known ages: the failure started two hours ago, the last success was ten minutes ago.
    await db.execute(
        "UPDATE data_sync_status SET unsynced_since = now() - interval '2 hours' "
        "WHERE entity_id = $1",
        failing,
    )
    await db.execute(
        "UPDATE data_sync_status SET last_success_at = now() - interval '10 minutes' "
        "WHERE entity_id = $1",
        ok,
    )
    pool = gateway.app[POOL]
    assert await refresh_stats(pool)
    lag = _value("gateway_sync_lag_seconds", external_system="booking_engine")
    assert lag is not None and 7190 < lag < 7300
    since = _value("gateway_sync_since_last_success_seconds", external_system="booking_engine")
    assert since is not None and 590 < since < 700
    for status, n in (("succeeded", 1), ("failed", 1), ("conflict", 1)):
        assert _value("gateway_sync_entities", external_system="booking_engine", status=status) == n
    after = _value("gateway_sync_conflicts_total", external_system="booking_engine")
    assert (after or 0) - (conflicts_before or 0) == 1
    # Another process holding the stats lock: this one stands back and clears its gauges.
    async with db.transaction():
        await db.execute("SELECT pg_advisory_xact_lock($1)", store.STATS_LOCK_KEY)
        assert not await refresh_stats(pool)
    assert _value("gateway_sync_lag_seconds", external_system="booking_engine") is None


async def test_translated_routes_record_the_internal_id(
    gateway: GatewayClient, callers: dict[str, Any], db: asyncpg.Connection
) -> None:
    from gateway.mapping import store as mappings
    from gateway.mapping.store import Actor, NewMapping

    internal = uuid.uuid4()
    new = NewMapping("reservation", internal, "booking_engine", "BE-5521")
    await mappings.create(db, callers["alpha"].id, new, Actor("test", None))
    resp = await gateway.put("/synctr/reservations/BE-5521", headers=callers["alpha_partner"])
    assert resp.status == 200
    assert (await resp.json())["path"] == f"/reservations/{internal}"
    for _ in range(200):
        row = await db.fetchrow("SELECT * FROM data_sync_status")
        if row is not None:
            break
        await asyncio.sleep(0.05)
    assert row is not None and row["entity_id"] == internal
    assert (row["direction"], row["status"]) == ("bidirectional", "succeeded")


@pytest.mark.parametrize(
    ("path", "direction"),
    [("/synctr/mirror/guests", "inbound"), ("/synctr/mirror/answers", "outbound")],
)
async def test_translated_body_pointers_record_the_internal_id(
    gateway: GatewayClient,
    callers: dict[str, Any],
    db: asyncpg.Connection,
    path: str,
    direction: str,
) -> None:
    """Sync pointers into bodies read the forwarded request and the upstream's own answer
    (internal ids), as path parameters do; the partner still sends and gets its own ids."""
    from gateway.mapping import store as mappings
    from gateway.mapping.store import Actor, NewMapping

    internal = uuid.uuid4()
    new = NewMapping("guest", internal, "booking_engine", "G-5521")
    await mappings.create(db, callers["alpha"].id, new, Actor("test", None))
    sent = {"guest": {"id": "G-5521", "name": "Ada"}}
    resp = await gateway.post(path, json=sent, headers=callers["alpha_partner"])
    assert resp.status == 200
    answer = (await resp.json())["body"]
    assert answer["guest"]["id"] == ("G-5521" if direction == "outbound" else str(internal))
    for _ in range(200):
        row = await db.fetchrow("SELECT * FROM data_sync_status")
        if row is not None:
            break
        await asyncio.sleep(0.05)
    assert row is not None and row["entity_id"] == internal
    assert (row["entity_type"], row["direction"]) == ("guest", direction)


async def test_change_feed_reports_mapping_changes(
    gateway: GatewayClient, callers: dict[str, Any], db: asyncpg.Connection
) -> None:
    from gateway.mapping import store as mappings
    from gateway.mapping.store import Actor, NewMapping

    partner = callers["alpha_partner"]
    internal = uuid.uuid4()
    made = await mappings.create(
        db,
        callers["alpha"].id,
        NewMapping("guest", internal, "booking_engine", "G-77"),
        Actor("test", None),
    )
    await store.apply_reports(db, *_apply(callers["alpha"].id, uuid.uuid4()), datetime.now(UTC))
    page = await _feed(gateway, partner, None)
    kinds = [(i["kind"], i["entity_id"]) for i in page["items"]]
    assert kinds[0] == ("mapping", str(internal)) and kinds[1][0] == "sync_status"
    assert page["items"][0]["external_id"] == "G-77" and not page["items"][0]["deleted"]
    assert "credentials" not in page["items"][0] and "configuration" not in page["items"][0]
    resp = await gateway.delete(f"/admin/v1/mappings/{made.id}", headers=callers["alpha_admin"])
    assert resp.status in (200, 204)
    later = await _feed(gateway, partner, page["next_cursor"])
    assert [(i["kind"], i["deleted"]) for i in later["items"]] == [("mapping", True)]
    # Another system's mappings are not in this system's feed.
    other = NewMapping("guest", uuid.uuid4(), "salesforce", "SF-1")
    await mappings.create(db, callers["alpha"].id, other, Actor("test", None))
    assert (await _feed(gateway, partner, later["next_cursor"]))["items"] == []
