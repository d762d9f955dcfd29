"""The admin API: OpenAPI agreement, tenant isolation, roles, bad input, log search."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest

from gateway.app import admin_document as document
from gateway.auth import keys
from gateway.settings import Secret
from tests.fixture_types import GatewayClient, GatewayFactory, WaitRows
from tests.integration.fault_helpers import PgProxy, via_proxy

LOGS_SECURE = "/admin/v1/logs?route=secure"  # proxied calls only (admin calls are logged too)


@pytest.fixture
async def tenants(db: asyncpg.Connection) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for t in ("alpha", "beta"):
        tenant = await keys.create_tenant(db, f"Hotel {t}", "test")
        out[t] = tenant
        for role, system in (
            ("admin", None),
            ("viewer", None),
            ("service", None),
            ("partner", "booking_engine"),
        ):
            _, token = await keys.create_key(
                db, tenant.id, role, actor="test", external_system=system
            )
            out[f"{t}_{role}"] = {"Authorization": f"Bearer {token}"}
    return out


def test_openapi_document_matches_served_routes(gateway: GatewayClient) -> None:
    served = set()
    for route in gateway.app.router.routes():
        path = route.resource.canonical if route.resource else ""
        if path.startswith("/admin/v1") and route.method not in ("HEAD", "*"):
            served.add((path, route.method.lower()))
    paths = document()["paths"]
    assert isinstance(paths, dict)
    documented = {
        (path, method) for path, item in paths.items() for method in item if method != "parameters"
    }
    assert served == documented


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("TRACE", "/admin/v1/tenant", "GET, HEAD, PATCH"),
        ("PUT", "/admin/v1/tenant", "GET, HEAD, PATCH"),
        ("DELETE", "/admin/v1/tenant", "GET, HEAD, PATCH"),
        ("PUT", "/admin/v1/keys/00000000-0000-0000-0000-000000000000", "DELETE, GET, HEAD"),
        ("DELETE", "/admin/v1/mappings", "GET, HEAD, POST"),
        ("POST", "/admin/v1/openapi.json", "GET, HEAD"),
    ],
)
async def test_wrong_method_on_an_admin_path_is_405_with_allow(
    gateway: GatewayClient, tenants: dict[str, Any], method: str, path: str, allow: str
) -> None:
    resp = await gateway.request(method, path, headers=tenants["alpha_admin"])
    assert resp.status == 405, await resp.text()
    assert resp.headers["Allow"] == allow
    got = await resp.json()
    assert got["code"] == "method_not_allowed" and allow in got["message"]
    # A path the admin API does not have is still the proxy's 404.
    resp = await gateway.request(method, "/admin/v1/nothing-here", headers=tenants["alpha_admin"])
    assert resp.status == 404


async def test_openapi_is_served(gateway: GatewayClient) -> None:
    resp = await gateway.get("/admin/v1/openapi.json")
    assert resp.status == 200
    assert (await resp.json())["openapi"].startswith("3.")


async def test_create_and_use_a_key_through_the_api(
    gateway: GatewayClient, tenants: dict[str, Any], db: asyncpg.Connection
) -> None:
    resp = await gateway.post(
        "/admin/v1/keys",
        json={"name": "channel manager", "role": "partner", "external_system": "siteminder"},
        headers=tenants["alpha_admin"],
    )
    assert resp.status == 201
    made = await resp.json()
    token = made.pop("token")
    assert made["role"] == "partner" and made["tenant_id"] == str(tenants["alpha"].id)
    assert (await gateway.get("/secure/echo/x", headers={"X-Api-Key": token})).status == 200
    listed = await (await gateway.get("/admin/v1/keys", headers=tenants["alpha_admin"])).json()
    assert made["id"] in {k["id"] for k in listed["items"]}
    assert all("token" not in k for k in listed["items"])
    # Revoke through the API: the proxy refuses it at once.
    resp = await gateway.delete(f"/admin/v1/keys/{made['id']}", headers=tenants["alpha_admin"])
    assert resp.status == 200 and (await resp.json())["revoked_at"]
    assert (await gateway.get("/secure/echo/x", headers={"X-Api-Key": token})).status == 401
    audit = await (await gateway.get("/admin/v1/audit", headers=tenants["alpha_admin"])).json()
    actions = [a["action"] for a in audit["items"]]
    assert actions[:2] == ["key.revoke", "key.create"]
    assert all(token not in orjson.dumps(a).decode() for a in audit["items"])
    # A key cannot revoke itself (the tenant's last admin key would lock it out).
    own = tenants["alpha_admin"]
    mine = own["Authorization"].split()[1]
    me = next(k for k in listed["items"] if mine.startswith(k["token_prefix"]))
    resp = await gateway.delete(f"/admin/v1/keys/{me['id']}", headers=own)
    assert resp.status == 409 and (await resp.json())["code"] == "self_revocation"
    assert (await gateway.get("/admin/v1/tenant", headers=own)).status == 200
    assert audit["items"][0]["actor"].startswith("key:")


async def test_tenant_isolation_on_every_endpoint(
    gateway: GatewayClient, tenants: dict[str, Any], wait_rows: WaitRows
) -> None:
    alpha, beta = tenants["alpha_admin"], tenants["beta_admin"]
    alpha_key = (
        await (await gateway.post("/admin/v1/keys", json={"role": "viewer"}, headers=alpha)).json()
    )["id"]
    await gateway.get("/secure/echo/a", headers=tenants["alpha_partner"])
    (row,) = await wait_rows(1, where="route = 'secure'")  # admin calls have rows too
    log_id = str(row["id"])

    assert (await gateway.get(f"/admin/v1/keys/{alpha_key}", headers=beta)).status == 404
    assert (await gateway.delete(f"/admin/v1/keys/{alpha_key}", headers=beta)).status == 404
    assert (await gateway.get(f"/admin/v1/keys/{alpha_key}", headers=alpha)).status == 200
    beta_keys = await (await gateway.get("/admin/v1/keys", headers=beta)).json()
    assert alpha_key not in {k["id"] for k in beta_keys["items"]}
    assert (await gateway.get(f"/admin/v1/logs/{log_id}", headers=beta)).status == 404
    assert (await gateway.get(f"/admin/v1/logs/{log_id}", headers=alpha)).status == 200
    assert (await (await gateway.get(LOGS_SECURE, headers=beta)).json())["items"] == []
    assert len((await (await gateway.get(LOGS_SECURE, headers=alpha)).json())["items"]) == 1
    beta_audit = await (await gateway.get("/admin/v1/audit", headers=beta)).json()
    assert all(a["object_id"] != alpha_key for a in beta_audit["items"])
    tenant = await (await gateway.get("/admin/v1/tenant", headers=beta)).json()
    assert tenant["id"] == str(tenants["beta"].id)


@pytest.mark.parametrize(
    ("role", "method", "path", "allowed"),
    [
        ("viewer", "GET", "/admin/v1/logs", True),
        ("viewer", "GET", "/admin/v1/keys", False),
        ("viewer", "PATCH", "/admin/v1/tenant", False),
        ("viewer", "GET", "/admin/v1/tenant", True),
        ("service", "GET", "/admin/v1/logs", False),
        ("service", "GET", "/admin/v1/tenant", True),
        ("partner", "GET", "/admin/v1/tenant", False),
        ("partner", "GET", "/admin/v1/logs", False),
        ("admin", "GET", "/admin/v1/audit", True),
        ("viewer", "GET", "/admin/v1/audit", False),
    ],
)
async def test_roles(
    gateway: GatewayClient,
    tenants: dict[str, Any],
    role: str,
    method: str,
    path: str,
    allowed: bool,
) -> None:
    resp = await gateway.request(
        method,
        path,
        headers=tenants[f"alpha_{role}"],
        json={"name": "Hotel alpha"} if method == "PATCH" else None,
    )
    if allowed:
        assert resp.status == 200
    else:
        assert resp.status == 403
        assert (await resp.json())["code"] == "forbidden"


async def test_admin_api_needs_a_key(gateway: GatewayClient) -> None:
    resp = await gateway.get("/admin/v1/keys")
    assert resp.status == 401
    assert (await resp.json())["code"] == "missing_api_key"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/admin/v1/keys", b"{not json", 400, "malformed_json"),
        ("POST", "/admin/v1/keys", b"\xff\xfe", 400, "malformed_json"),
        ("POST", "/admin/v1/keys", b"[1, 2]", 422, "invalid_request"),
        ("POST", "/admin/v1/keys", b'{"role": "admin", "colour": "red"}', 422, "unknown_field"),
        ("POST", "/admin/v1/keys", b'{"name": "x"}', 422, "missing_field"),
        ("POST", "/admin/v1/keys", b'{"role": 5}', 422, "invalid_field"),
        ("POST", "/admin/v1/keys", b'{"role": "root"}', 422, "invalid_field"),
        (
            "POST",
            "/admin/v1/keys",
            b'{"role": "admin", "rate_limit_per_minute": true}',
            422,
            "invalid_field",
        ),
        ("POST", "/admin/v1/keys", b'{"role": "partner"}', 422, "invalid_field"),
        (
            "POST",
            "/admin/v1/keys",
            b'{"role": "x", "name": "' + b"a" * 2_000_000 + b'"}',
            413,
            "payload_too_large",
        ),
        ("GET", "/admin/v1/keys/not-a-uuid", None, 404, "not_found"),
        ("GET", "/admin/v1/logs/00000000-0000-4000-8000-000000000000", None, 404, "not_found"),
        ("GET", "/admin/v1/logs?from=yesterday", None, 400, "bad_time_range"),
        ("GET", "/admin/v1/logs?status=abc", None, 400, "bad_query"),
        ("GET", "/admin/v1/logs?status_class=6xx", None, 400, "bad_query"),
        ("GET", "/admin/v1/logs?key_id=nope", None, 400, "bad_query"),
        ("GET", "/admin/v1/logs?request_body_contains={bad", None, 400, "bad_query"),
        ("GET", "/admin/v1/logs?cursor=%%%", None, 400, "bad_cursor"),
        ("GET", "/admin/v1/audit?cursor=WyJ4Il0", None, 400, "bad_cursor"),
        ("PATCH", "/admin/v1/tenant", b'{"name": "a\\u0000b"}', 422, "invalid_field"),
        ("GET", "/admin/v1/logs?route=a%00b", None, 400, "bad_query"),
        ("GET", "/admin/v1/audit?action=%00", None, 400, "bad_query"),
        ("GET", '/admin/v1/logs?request_body_contains={"a":"\\u0000"}', None, 400, "bad_query"),
        ("PATCH", "/admin/v1/tenant", b'{"name": ""}', 422, "invalid_field"),
    ],
)
async def test_bad_input_is_refused_clearly(
    gateway: GatewayClient,
    tenants: dict[str, Any],
    method: str,
    path: str,
    body: bytes | None,
    status: int,
    code: str,
) -> None:
    headers = {**tenants["alpha_admin"], "Content-Type": "application/json"}
    data: Any = io.BytesIO(body) if body and len(body) > 1_000_000 else body
    resp = await gateway.request(method, path, data=data, headers=headers)
    assert resp.status == status, await resp.text()
    got = await resp.json()
    assert got["code"] == code and got["message"]


async def test_tenant_rename_conflict(gateway: GatewayClient, tenants: dict[str, Any]) -> None:
    resp = await gateway.patch(
        "/admin/v1/tenant", json={"name": "hotel BETA"}, headers=tenants["alpha_admin"]
    )
    assert resp.status == 409
    resp = await gateway.patch(
        "/admin/v1/tenant", json={"name": "Hotel Alpha & Spa"}, headers=tenants["alpha_admin"]
    )
    assert resp.status == 200 and (await resp.json())["name"] == "Hotel Alpha & Spa"
    audit = await (
        await gateway.get("/admin/v1/audit?action=tenant.update", headers=tenants["alpha_admin"])
    ).json()
    (entry,) = audit["items"]
    assert entry["before"]["name"] == "Hotel alpha"
    assert entry["after"]["name"] == "Hotel Alpha & Spa"


async def test_log_search_filters_and_pagination(
    gateway: GatewayClient, tenants: dict[str, Any], wait_rows: WaitRows
) -> None:
    partner = tenants["alpha_partner"]
    for i in range(5):
        await gateway.post(
            f"/secure/echo/r{i}",
            json={"room": i, "kind": "suite" if i % 2 else "std"},
            headers={**partner, "X-Request-Id": f"search-{i}"},
        )
    await gateway.get("/secure/status/404", headers=partner)
    await wait_rows(6)
    viewer = tenants["alpha_viewer"]

    async def search(query: str) -> dict[str, Any]:
        resp = await gateway.get(f"/admin/v1/logs?{query}", headers=viewer)
        assert resp.status == 200, await resp.text()
        found: dict[str, Any] = await resp.json()
        return found

    assert [r["request_id"] for r in (await search("request_id=search-3"))["items"]] == ["search-3"]
    # The window searched is in the answer: at most 31 days ending at 'to'; from >= to is empty.
    wide = await search("from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z&cursor=")
    assert (wide["from"], wide["to"]) == ("2026-01-29T00:00:00+00:00", "2026-03-01T00:00:00+00:00")
    assert (await search("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z"))["items"] == []
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    assert (await search(f"from={now}&to={now}"))["items"] == []
    # Times at the ends of the calendar are windows like any other (they were a 500: the
    # 31 days before 0001-01-03 and 0001-01-01T00:00+05:00 in UTC are before the year 1).
    early = await search("from=2000-01-01T00:00:00Z&to=0001-01-03T00:00:03Z")
    assert (early["from"], early["items"]) == ("2000-01-01T00:00:00+00:00", [])
    early = await search("to=0001-01-01T00:00:00%2B05:00")
    assert (early["from"], early["to"]) == ("0001-01-01T00:00:00+00:00",) * 2
    late = await search("from=9999-12-31T23:00:00-05:00&to=9999-12-31T23:59:59Z")
    assert late["items"] == [] and late["from"].startswith("9999-12-31T23:59:59.999999")
    assert len((await search("status_class=4xx"))["items"]) == 1
    assert len((await search("status=200&method=post"))["items"]) == 5
    assert len((await search("path_prefix=/secure/echo/r"))["items"]) == 5
    assert len((await search("path_prefix=/secure/echo/r_"))["items"]) == 0  # _ is literal
    suites = await search("request_body_contains=" + '{"kind":"suite"}')
    assert sorted(r["request_id"] for r in suites["items"]) == ["search-1", "search-3"]
    assert len((await search("external_system=booking_engine&route=secure"))["items"]) == 6
    seen: list[str] = []
    page = await search("limit=2&path_prefix=/secure/echo")
    while True:
        seen += [r["request_id"] for r in page["items"]]
        if not page["next_cursor"]:
            break
        page = await search(f"limit=2&path_prefix=/secure/echo&cursor={page['next_cursor']}")
    assert seen == [f"search-{i}" for i in (4, 3, 2, 1, 0)]  # newest first, no repeats
    detail = await (
        await gateway.get(
            f"/admin/v1/logs/{(await search('request_id=search-0'))['items'][0]['id']}",
            headers=viewer,
        )
    ).json()
    assert detail["request_body"] == {"room": 0, "kind": "std"}
    assert [v for k, v in detail["request_headers"] if k == "Authorization"] == ["[REDACTED]"]


async def test_admin_api_answers_503_while_the_database_is_down(
    gateway_factory: GatewayFactory, database_url: str, db: asyncpg.Connection
) -> None:
    """The documented 503 (not a 500) when the database cannot be reached."""
    proxy = PgProxy(database_url)
    await proxy.start()
    gw = None
    try:
        gw = await gateway_factory(database_url=Secret(via_proxy(database_url, proxy.port)))
        tenant = await keys.create_tenant(db, "Hotel Down", "test")
        _, token = await keys.create_key(db, tenant.id, "admin", actor="test")
        auth = {"Authorization": f"Bearer {token}"}
        assert (await gw.get("/admin/v1/keys", headers=auth)).status == 200
        proxy.down = True
        proxy.drop_all()
        resp = await gw.get("/admin/v1/keys", headers=auth)
        assert resp.status == 503, await resp.text()
        assert (await resp.json())["code"] in ("database_unavailable", "not_ready")
        paths: Any = document()["paths"]
        assert "503" in paths["/admin/v1/keys"]["get"]["responses"]
    finally:
        # The database back, then the gateway stopped before its proxy: its pool closes
        # its connections cleanly (left to the fixture, they died with the proxy unclosed
        # and a later test saw their ResourceWarning).
        proxy.down = False
        if gw is not None:
            await gw.close()
        await proxy.close()
