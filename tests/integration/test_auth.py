"""Partner keys on proxied routes: 401/403/429, identity headers, attribution, metrics."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.auth import keys
from gateway.auth.keys import hash_token
from tests.fixture_types import GatewayClient, WaitRows


def header_values(pairs: list[list[str]], name: str) -> list[str]:
    return [v for k, v in pairs if k.lower() == name.lower()]


@pytest.fixture
async def world(db: asyncpg.Connection) -> dict[str, Any]:
    a = await keys.create_tenant(db, "Hotel Alpha", "test")
    b = await keys.create_tenant(db, "Hotel Beta", "test")
    out: dict[str, Any] = {"a": a, "b": b}
    specs = {
        "booking": (a, "partner", "booking_engine", None),
        "crm": (a, "partner", "salesforce", None),
        "viewer": (a, "viewer", None, None),
        "beta_booking": (b, "partner", "booking_engine", None),
        "expired": (a, "partner", "booking_engine", timedelta(seconds=-1)),
        "revoked": (a, "partner", "booking_engine", None),
    }
    for name, (tenant, role, system, expires) in specs.items():
        key, token = await keys.create_key(
            db, tenant.id, role, actor="test", external_system=system, expires_in=expires
        )
        out[name] = (key, token)
    await keys.revoke_key(db, a.id, out["revoked"][0].id, actor="test")
    return out


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_partner_key_reaches_the_upstream_with_identity_headers(
    gateway: GatewayClient, world: dict[str, Any], wait_rows: WaitRows
) -> None:
    key, token = world["booking"]
    resp = await gateway.get(
        "/secure/echo/r1",
        headers={**bearer(token), "X-Gateway-Tenant-Id": "spoofed", "X-Request-Id": "auth-ok"},
    )
    assert resp.status == 200
    hdrs = (await resp.json())["headers"]
    assert header_values(hdrs, "X-Gateway-Tenant-Id") == [str(world["a"].id)]
    assert header_values(hdrs, "X-Gateway-External-System") == ["booking_engine"]
    assert header_values(hdrs, "X-Gateway-Key-Id") == [str(key.id)]
    assert header_values(hdrs, "X-Request-Id") == ["auth-ok"]
    assert header_values(hdrs, "Authorization") == []  # the partner's key stays here
    (row,) = await wait_rows(1)
    assert row["tenant_id"] == world["a"].id and row["api_key_id"] == key.id
    assert row["external_system"] == "booking_engine"
    assert header_values(row["request_headers"], "Authorization") == ["[REDACTED]"]


async def test_x_api_key_header_works_and_is_not_forwarded(
    gateway: GatewayClient, world: dict[str, Any]
) -> None:
    resp = await gateway.get("/secure/echo/r2", headers={"X-Api-Key": world["crm"][1]})
    assert resp.status == 200
    hdrs = (await resp.json())["headers"]
    assert header_values(hdrs, "X-Api-Key") == []
    assert header_values(hdrs, "X-Gateway-External-System") == ["salesforce"]


@pytest.mark.parametrize(
    ("headers", "status", "code", "reason"),
    [
        ({}, 401, "missing_api_key", "missing_key"),
        ({"Authorization": "Bearer not-a-key"}, 401, "invalid_api_key", "unknown_key"),
        ({"Authorization": "Bearer gwk_" + "A" * 43}, 401, "invalid_api_key", "unknown_key"),
        ("revoked", 401, "revoked_api_key", "revoked_key"),
        ("expired", 401, "expired_api_key", "expired_key"),
        ("viewer", 403, "forbidden", "forbidden"),
    ],
)
async def test_refusals(
    gateway: GatewayClient,
    world: dict[str, Any],
    wait_rows: WaitRows,
    headers: Any,
    status: int,
    code: str,
    reason: str,
) -> None:
    from gateway import metrics

    if isinstance(headers, str):
        headers = bearer(world[headers][1])
    before = metrics.AUTH_FAILURES.labels(reason)._value.get()
    resp = await gateway.get("/secure/echo/x", headers=headers)
    assert resp.status == status
    body = await resp.json()
    assert body["code"] == code and body["message"]
    if status == 401:
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert metrics.AUTH_FAILURES.labels(reason)._value.get() == before + 1
    (row,) = await wait_rows(1)
    assert row["status"] == status and row["error_code"] == code


async def test_route_limits_external_systems(gateway: GatewayClient, world: dict[str, Any]) -> None:
    resp = await gateway.get("/limited/echo/x", headers=bearer(world["crm"][1]))
    assert resp.status == 403
    assert "salesforce" in (await resp.json())["message"]


async def test_rate_limit_answers_429_with_retry_after(
    gateway: GatewayClient, world: dict[str, Any]
) -> None:
    from gateway import metrics

    before = metrics.RATE_LIMITED.labels("limited")._value.get()
    token = world["booking"][1]
    statuses = [
        (await gateway.get("/limited/echo/x", headers=bearer(token))).status for _ in range(3)
    ]
    assert statuses == [200, 200, 200]
    resp = await gateway.get("/limited/echo/x", headers=bearer(token))
    assert resp.status == 429
    assert (await resp.json())["code"] == "rate_limited"
    assert 1 <= int(resp.headers["Retry-After"]) <= 20  # 3 per minute: one every 20 s
    assert metrics.RATE_LIMITED.labels("limited")._value.get() == before + 1
    # Another key of the same tenant has its own bucket.
    other = await gateway.get("/limited/echo/x", headers=bearer(world["beta_booking"][1]))
    assert other.status == 200


async def test_public_routes_need_no_key(gateway: GatewayClient) -> None:
    assert (await gateway.get("/api/echo/open")).status == 200


async def test_tokens_are_stored_only_as_hashes(
    gateway: GatewayClient, world: dict[str, Any], db: asyncpg.Connection, wait_rows: WaitRows
) -> None:
    token = world["booking"][1]
    await gateway.get("/secure/echo/x", headers={"X-Api-Key": token})
    await wait_rows(1)
    for table in ("api_keys", "api_logs", "audit_log"):
        dump = await db.fetchval(f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} t")
        assert token not in dump, table
    stored = await db.fetchval(
        "SELECT token_hash FROM api_keys WHERE id = $1", world["booking"][0].id
    )
    assert stored == hash_token(token)


async def test_revocation_through_this_process_is_immediate(
    gateway: GatewayClient, world: dict[str, Any], db: asyncpg.Connection
) -> None:
    from gateway.app import AUTH

    key, token = world["crm"]
    assert (await gateway.get("/secure/echo/x", headers=bearer(token))).status == 200
    await keys.revoke_key(db, world["a"].id, key.id, actor="test")
    gateway.app[AUTH].forget(key.id)
    assert (await gateway.get("/secure/echo/x", headers=bearer(token))).status == 401


def test_cli_bootstraps_a_tenant_and_a_key(database_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "GATEWAY_DATABASE_URL": database_url, "GATEWAY_DATA_DIR": str(tmp_path)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert cli("tenants", "create", "Hotel CLI").returncode == 0
    assert "exists already" in cli("tenants", "create", "hotel cli").stderr
    made = cli(
        "keys",
        "create",
        "--tenant",
        "Hotel CLI",
        "--role",
        "partner",
        "--external-system",
        "quickbooks",
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.split("token: ")[1].split()[0]
    assert token.startswith("gwk_")
    bad = cli("keys", "create", "--tenant", "Hotel CLI", "--role", "partner")
    assert bad.returncode == 2 and "must name its external system" in bad.stderr
    key_id = made.stdout.split()[1]
    assert cli("keys", "revoke", "--tenant", "Hotel CLI", key_id).returncode == 0

    async def check() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch("SELECT actor, action FROM audit_log ORDER BY id")
            assert [(r["actor"], r["action"]) for r in rows] == [
                ("cli", "tenant.create"),
                ("cli", "key.create"),
                ("cli", "key.revoke"),
            ]
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM audit_log")
        finally:
            await conn.close()

    import asyncio

    asyncio.run(check())


__all__ = ["Callable"]


def test_cli_finds_the_data_dir_upward_and_names_the_database(tmp_path: Path) -> None:
    """The embedded database of a project is found from any folder inside it (as git finds
    .git); from a folder outside it, a command that reads data says where it looked
    instead of creating a new empty database."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("GATEWAY_DATABASE_URL", "GATEWAY_DATA_DIR")
    }
    project, elsewhere = tmp_path / "hotel", tmp_path / "elsewhere"
    inner = project / "config" / "partners"
    inner.mkdir(parents=True)
    elsewhere.mkdir()

    def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    made = cli(project, "tenants", "create", "Hotel Alpha")
    assert made.returncode == 0, made.stderr
    assert (project / ".gateway" / "pg").is_dir()
    key = cli(inner, "keys", "create", "--tenant", "Hotel Alpha", "--role", "admin")
    assert key.returncode == 0, key.stderr
    assert "token: gwk_" in key.stdout
    assert not (inner / ".gateway").exists()
    lost = cli(elsewhere, "keys", "create", "--tenant", "Hotel Alpha", "--role", "admin")
    assert lost.returncode == 2
    assert f"no gateway database in {elsewhere / '.gateway' / 'pg'}" in lost.stderr
    assert not (elsewhere / ".gateway").exists()  # nothing created
    unknown = cli(inner, "keys", "create", "--tenant", "Hotel Beta", "--role", "admin")
    assert unknown.returncode == 2
    assert "no tenant named 'Hotel Beta' in postgresql://" in unknown.stderr
    assert f"host={project / '.gateway' / 'pg'}" in unknown.stderr  # the database it used
