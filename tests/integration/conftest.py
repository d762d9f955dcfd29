from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.routes import parse_routes
from gateway.sync.jobs.config import parse_syncs
from tests.conftest import routes_yaml
from tests.fixture_types import (
    AiohttpClient,
    AiohttpServer,
    GatewayClient,
    GatewayFactory,
    SettingsFactory,
)
from tests.integration.upstream_app import make_upstream_app


@pytest.fixture
async def upstream(aiohttp_server: AiohttpServer) -> TestServer:
    return await aiohttp_server(make_upstream_app(), host="127.0.0.1")


@pytest.fixture
def gateway_factory(
    settings_factory: SettingsFactory, upstream: TestServer, aiohttp_client: AiohttpClient
) -> GatewayFactory:
    """Start the real gateway app (real pool, real writer) in front of the test upstream.

    Parameter order matters: fixtures tear down in reverse, so the gateway (aiohttp_client)
    must come after the database it writes to.
    """

    async def make(
        extra_routes: str = "", upstream_opts: str = "", syncs: Any = None, **overrides: Any
    ) -> GatewayClient:
        """``syncs``: a routes.yaml ``syncs:`` list (parsed against these upstreams)."""
        url = str(upstream.make_url("")).rstrip("/")
        table = parse_routes(routes_yaml(url, extra_routes, upstream_opts), "test-routes.yaml")
        jobs = parse_syncs(syncs, "test-routes.yaml", table.upstreams)
        return await aiohttp_client(create_app(settings_factory(**overrides), table, syncs=jobs))

    return make


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> GatewayClient:
    return await gateway_factory()
