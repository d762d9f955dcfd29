"""Two real gateway processes (`python -m gateway serve`) on one database: a mapping
changed through one is used by the other within a second (LISTEN/NOTIFY invalidation)."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from gateway.auth import keys
from gateway.db.pool import init_connection
from tests.conftest import routes_yaml
from tests.fixture_types import AiohttpServer
from tests.integration.fault_helpers import GatewayProcess
from tests.integration.upstream_app import make_upstream_app

pytestmark = pytest.mark.slow

ROUTE = """
  - name: tr-mirror
    path: /tr/mirror/reservations/{reservation_id}
    methods: [GET]
    strip_prefix: /tr
    upstream: main
    translate:
      path: {reservation_id: reservation}
"""
WITHIN = 1.0  # seconds a change may take to reach the other process


@asynccontextmanager
async def gateway_process(routes: Path, database_url: str, home: Path) -> AsyncIterator[str]:
    """A gateway process with its own data directory, serving once its /readyz says so."""
    home.mkdir()
    env = {"GATEWAY_DATABASE_URL": database_url, "GATEWAY_DATA_DIR": str(home)}
    gw = GatewayProcess(home, routes, env)
    try:
        yield await gw.start(ready="/readyz")
    finally:
        if gw.proc is not None and gw.proc.poll() is None:
            gw.signal(signal.SIGTERM)
            await gw.wait(20)


async def test_change_through_one_process_is_used_by_the_other_within_a_second(
    tmp_path: Path, database_url: str, aiohttp_server: AiohttpServer
) -> None:
    upstream: TestServer = await aiohttp_server(make_upstream_app(), host="127.0.0.1")
    routes = tmp_path / "routes.yaml"
    routes.write_text(routes_yaml(str(upstream.make_url("")).rstrip("/"), ROUTE))
    conn = await asyncpg.connect(database_url)
    await init_connection(conn)
    try:
        tenant = await keys.create_tenant(conn, "Hotel Alpha", "test")
        _, admin = await keys.create_key(conn, tenant.id, "admin", actor="test")
        _, partner = await keys.create_key(
            conn, tenant.id, "partner", actor="test", external_system="booking_engine"
        )
    finally:
        await conn.close()
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(gateway_process(routes, database_url, tmp_path / "a"))
        b = await stack.enter_async_context(gateway_process(routes, database_url, tmp_path / "b"))
        http = await stack.enter_async_context(ClientSession())
        await _scenario(http, a, b, {"Authorization": f"Bearer {admin}"}, partner)


async def _scenario(
    http: ClientSession, a: str, b: str, admin: dict[str, str], partner: str
) -> None:
    be = {"Authorization": f"Bearer {partner}"}
    url = f"{b}/tr/mirror/reservations/R-1"
    async with http.get(url, headers=be) as r:
        assert r.status == 404  # B now holds a negative entry for R-1
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    body = {
        "entity_type": "reservation",
        "internal_id": first,
        "external_system": "booking_engine",
        "external_id": "R-1",
    }
    async with http.post(f"{a}/admin/v1/mappings", json=body, headers=admin) as r:
        assert r.status == 201
        mapping_id = (await r.json())["id"]
    assert await _seen_by(http, url, be, lambda got: got.get("raw_path", "").endswith(first))
    patch = {"internal_id": second}
    async with http.patch(f"{a}/admin/v1/mappings/{mapping_id}", json=patch, headers=admin) as r:
        assert r.status == 200
    assert await _seen_by(http, url, be, lambda got: got.get("raw_path", "").endswith(second))
    async with http.delete(f"{a}/admin/v1/mappings/{mapping_id}", headers=admin) as r:
        assert r.status == 200
    assert await _seen_by(http, url, be, lambda got: got.get("code") == "mapping_not_found")


async def _seen_by(
    http: ClientSession, url: str, headers: dict[str, str], check: Callable[[Any], bool]
) -> bool:
    """True once the answer passes ``check``, polling for at most WITHIN seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WITHIN
    while True:
        async with http.get(url, headers=headers) as r:
            if check(await r.json()):
                return True
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
