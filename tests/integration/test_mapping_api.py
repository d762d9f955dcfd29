"""The mapping admin API: CRUD, conflicts naming the row, filters and keyset pagination,
credentials encrypted, audit, roles, tenant isolation, bulk import (CSV, JSON lines,
idempotent, conflicts, 100,000 rows)."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson
import pytest

from gateway.auth import keys
from tests.fixture_types import GatewayClient

BASE = "/admin/v1/mappings"


@pytest.fixture
async def tenants(db: asyncpg.Connection) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for t in ("alpha", "beta"):
        tenant = await keys.create_tenant(db, f"Hotel {t}", "test")
        out[t] = tenant
        for role in ("admin", "viewer", "service"):
            _, token = await keys.create_key(db, tenant.id, role, actor="test")
            out[f"{t}_{role}"] = {"Authorization": f"Bearer {token}"}
    return out


def new(external: str, internal: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "entity_type": "reservation",
        "internal_id": internal or str(uuid.uuid4()),
        "external_system": "booking_engine",
        "external_id": external,
        **extra,
    }


async def test_create_read_update_delete_with_audit(
    gateway: GatewayClient, tenants: dict[str, Any], db: asyncpg.Connection
) -> None:
    admin = tenants["alpha_admin"]
    body = new("R-1", configuration={"endpoint": "https://x", "credentials": {"pw": "s3cr3t!"}})
    resp = await gateway.post(BASE, json=body, headers=admin)
    assert resp.status == 201, await resp.text()
    made = await resp.json()
    assert made["configuration"] == {"endpoint": "https://x", "credentials": "[ENCRYPTED]"}
    assert made["direction"] == "bidirectional" and made["origin"] == "api"
    stored = await db.fetchrow("SELECT configuration, credentials FROM integration_mappings")
    assert "s3cr3t" not in orjson.dumps(dict(stored)).decode()
    mid = made["id"]
    got = await (await gateway.get(f"{BASE}/{mid}", headers=tenants["alpha_viewer"])).json()
    assert got == made
    resp = await gateway.patch(
        f"{BASE}/{mid}", json={"external_id": "R-1b", "direction": "inbound"}, headers=admin
    )
    assert resp.status == 200
    changed = await resp.json()
    assert (changed["external_id"], changed["direction"]) == ("R-1b", "inbound")
    assert changed["configuration"]["credentials"] == "[ENCRYPTED]"
    # Sending back what was shown keeps the stored credentials; null removes them.
    token = await db.fetchval("SELECT credentials FROM integration_mappings")
    shown = {"configuration": changed["configuration"]}
    resp = await gateway.patch(f"{BASE}/{mid}", json=shown, headers=admin)
    assert await db.fetchval("SELECT credentials FROM integration_mappings") == token
    cleared = {"configuration": {"endpoint": "https://y", "credentials": None}}
    resp = await gateway.patch(f"{BASE}/{mid}", json=cleared, headers=admin)
    assert (await resp.json())["configuration"] == {"endpoint": "https://y"}
    resp = await gateway.delete(f"{BASE}/{mid}", headers=admin)
    assert resp.status == 200 and (await resp.json())["deleted_at"]
    assert (await gateway.delete(f"{BASE}/{mid}", headers=admin)).status == 404
    assert (await gateway.patch(f"{BASE}/{mid}", json={}, headers=admin)).status == 404
    # The external id is free again once the mapping is soft-deleted.
    assert (await gateway.post(BASE, json=new("R-1b"), headers=admin)).status == 201
    audit = await (await gateway.get("/admin/v1/audit", headers=admin)).json()
    actions = [a["action"] for a in audit["items"]]
    assert actions[:4] == ["mapping.create", "mapping.delete", "mapping.update", "mapping.update"]
    assert "s3cr3t" not in orjson.dumps(audit).decode()


async def test_conflicts_name_the_row_holding_the_id(
    gateway: GatewayClient, tenants: dict[str, Any]
) -> None:
    admin = tenants["alpha_admin"]
    internal = str(uuid.uuid4())
    first = await (await gateway.post(BASE, json=new("R-1", internal), headers=admin)).json()
    resp = await gateway.post(BASE, json=new("R-1"), headers=admin)  # same external id
    assert resp.status == 409
    err = await resp.json()
    assert err["code"] == "mapping_conflict" and err["conflicting"]["id"] == first["id"]
    resp = await gateway.post(BASE, json=new("R-2", internal), headers=admin)  # same internal
    assert resp.status == 409 and (await resp.json())["conflicting"]["id"] == first["id"]
    # Another system or entity type may use the same ids.
    other = new("R-1", internal, external_system="siteminder")
    assert (await gateway.post(BASE, json=other, headers=admin)).status == 201
    second = await (await gateway.post(BASE, json=new("R-3"), headers=admin)).json()
    resp = await gateway.patch(f"{BASE}/{second['id']}", json={"external_id": "R-1"}, headers=admin)
    assert resp.status == 409 and (await resp.json())["conflicting"]["id"] == first["id"]


async def test_list_filters_and_keyset_pagination(
    gateway: GatewayClient, tenants: dict[str, Any]
) -> None:
    admin = tenants["alpha_admin"]
    for i in range(5):
        await gateway.post(BASE, json=new(f"R-{i}"), headers=admin)
    await gateway.post(BASE, json=new("G-1", entity_type="guest"), headers=admin)
    seen: list[str] = []
    url = f"{BASE}?entity_type=reservation&limit=2"
    while url:
        page = await (await gateway.get(url, headers=tenants["alpha_service"])).json()
        seen += [m["external_id"] for m in page["items"]]
        cursor = page["next_cursor"]
        url = f"{BASE}?entity_type=reservation&limit=2&cursor={cursor}" if cursor else ""
    assert sorted(seen) == [f"R-{i}" for i in range(5)]
    one = await (await gateway.get(f"{BASE}?external_id=G-1", headers=admin)).json()
    assert [m["entity_type"] for m in one["items"]] == ["guest"]
    assert (await gateway.get(f"{BASE}?cursor=nope", headers=admin)).status == 400
    assert (await gateway.get(f"{BASE}?internal_id=x", headers=admin)).status == 400
    assert (await gateway.get(f"{BASE}?include_deleted=maybe", headers=admin)).status == 400


async def test_roles_tenants_and_bad_input(gateway: GatewayClient, tenants: dict[str, Any]) -> None:
    admin, viewer = tenants["alpha_admin"], tenants["alpha_viewer"]
    made = await (await gateway.post(BASE, json=new("R-1"), headers=admin)).json()
    assert (await gateway.post(BASE, json=new("R-2"), headers=viewer)).status == 403
    assert (
        await gateway.post(BASE, json=new("R-2"), headers=tenants["alpha_service"])
    ).status == 201
    beta = tenants["beta_admin"]
    assert (await gateway.get(f"{BASE}/{made['id']}", headers=beta)).status == 404
    assert (await gateway.delete(f"{BASE}/{made['id']}", headers=beta)).status == 404
    assert (await (await gateway.get(BASE, headers=beta)).json())["items"] == []
    for bad, code in (
        ({**new("R-9"), "entity_type": "Bad Type"}, "invalid_field"),
        ({**new("R-9"), "internal_id": "nope"}, "invalid_field"),
        ({**new("R-9"), "direction": "sideways"}, "invalid_field"),
        ({**new("R-9"), "external_id": ""}, "invalid_field"),
        ({**new("R-9"), "extra": 1}, "unknown_field"),
        ({"entity_type": "room"}, "missing_field"),
    ):
        resp = await gateway.post(BASE, json=bad, headers=admin)
        assert resp.status == 422 and (await resp.json())["code"] == code, bad


def csv_body(rows: Sequence[tuple[str, ...]], header: str = "") -> bytes:
    head = header or "entity_type,internal_id,external_system,external_id,direction"
    return ("\n".join([head, *(",".join(r) for r in rows)]) + "\n").encode()


async def test_bulk_import_csv_and_json_lines_is_idempotent_and_reports_conflicts(
    gateway: GatewayClient, tenants: dict[str, Any]
) -> None:
    admin = tenants["alpha_admin"]
    held = await (await gateway.post(BASE, json=new("R-HELD"), headers=admin)).json()
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    rows = [
        ("reservation", a, "booking_engine", "R-A", ""),
        ("reservation", b, "booking_engine", "R-B", "inbound"),
        ("reservation", a, "booking_engine", "R-A", ""),  # exact repeat: unchanged
        ("reservation", c, "booking_engine", "R-A", ""),  # R-A claimed twice in the file
        ("reservation", c, "booking_engine", "R-HELD", ""),  # held by another mapping
        ("reservation", "not-a-uuid", "booking_engine", "R-X", ""),
    ]
    headers = {**admin, "Content-Type": "text/csv"}
    resp = await gateway.post(f"{BASE}/import", data=csv_body(rows), headers=headers)
    assert resp.status == 200, await resp.text()
    report = await resp.json()
    assert {
        k: report[k] for k in ("received", "created", "unchanged", "conflicting", "invalid")
    } == {
        "received": 6,
        "created": 2,
        "unchanged": 1,
        "conflicting": 2,
        "invalid": 1,
    }
    by_line = {c["line"]: c for c in report["conflicts"]}
    assert by_line[5]["conflicting"]["line"] == 2  # the earlier line of the same file
    assert by_line[6]["conflicting"]["mapping_id"] == held["id"]
    assert report["errors"] == [{"line": 7, "message": "internal_id must be a UUID"}]
    # Again, as JSON lines: nothing new, nothing overwritten.
    lines = b"\n".join(
        orjson.dumps(
            {"entity_type": r[0], "internal_id": r[1], "external_system": r[2], "external_id": r[3]}
        )
        for r in rows[:2]
    )
    resp = await gateway.post(
        f"{BASE}/import", data=lines, headers={**admin, "Content-Type": "application/x-ndjson"}
    )
    again = await resp.json()
    assert (again["created"], again["unchanged"], again["conflicting"]) == (0, 2, 0)
    listed = await (await gateway.get(f"{BASE}?external_id=R-B", headers=admin)).json()
    assert listed["items"][0]["direction"] == "inbound" and listed["items"][0]["origin"] == "import"
    bad = await gateway.post(
        f"{BASE}/import", data=b"a,b\n1,2\n", headers={**admin, "Content-Type": "text/csv"}
    )
    assert bad.status == 422 and (await bad.json())["code"] == "invalid_import"
    plain = await gateway.post(f"{BASE}/import", data=b"x", headers=admin)
    assert plain.status == 400 and (await plain.json())["code"] == "unsupported_media_type"
    audit = await (await gateway.get("/admin/v1/audit?action=mapping.import", headers=admin)).json()
    assert len(audit["items"]) == 2 and audit["items"][1]["after"]["created"] == 2


@pytest.mark.slow
async def test_bulk_import_of_100000_mappings(
    gateway: GatewayClient, tenants: dict[str, Any], db: asyncpg.Connection
) -> None:
    admin = {**tenants["alpha_admin"], "Content-Type": "text/csv"}
    rows = [("room", str(uuid.uuid4()), "booking_engine", f"ROOM-{i}", "") for i in range(100_000)]
    data = csv_body(rows)
    t0 = time.perf_counter()
    resp = await gateway.post(f"{BASE}/import", data=io.BytesIO(data), headers=admin)
    first = time.perf_counter() - t0
    assert resp.status == 200, await resp.text()
    report = await resp.json()
    assert (report["created"], report["conflicting"], report["invalid"]) == (100_000, 0, 0)
    assert await db.fetchval("SELECT count(*) FROM integration_mappings") == 100_000
    t0 = time.perf_counter()
    resp = await gateway.post(f"{BASE}/import", data=io.BytesIO(data), headers=admin)
    again = await resp.json()
    assert (again["created"], again["unchanged"]) == (0, 100_000)
    print(f"100k import: {first:.1f} s first, {time.perf_counter() - t0:.1f} s again")
