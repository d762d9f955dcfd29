from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.routes import parse_routes
from gateway.sync.jobs.config import parse_syncs
from tests.conftest import routes_yaml
from tests.integration.upstream_app import make_upstream_app


@pytest.fixture
async def upstream(aiohttp_server: Callable[..., Any]) -> TestServer:
    return await aiohttp_server(make_upstream_app(), host="127.0.0.1")


@pytest.fixture
def gateway_factory(
    settings_factory: Callable[..., Any], upstream: TestServer, aiohttp_client: Callable[..., Any]
) -> Callable[..., Any]:
    """Start the real gateway app (real pool, real writer) in front of the test upstream.

    Parameter order matters: fixtures tear down in reverse, so the gateway (aiohttp_client)
    must come after the database it writes to.
    """

    async def make(
        extra_routes: str = "", upstream_opts: str = "", syncs: Any = None, **overrides: Any
    ) -> TestClient:
        """``syncs``: a routes.yaml ``syncs:`` list (parsed against these upstreams)."""
        url = str(upstream.make_url("")).rstrip("/")
        table = parse_routes(routes_yaml(url, extra_routes, upstream_opts), "test-routes.yaml")
        jobs = parse_syncs(syncs, "test-routes.yaml", table.upstreams)
        return await aiohttp_client(create_app(settings_factory(**overrides), table, syncs=jobs))

    return make


@pytest.fixture
async def gateway(gateway_factory: Callable[..., Any]) -> TestClient:
    return await gateway_factory()
