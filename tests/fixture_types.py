"""Types of the shared fixtures (tests/conftest.py, tests/integration/conftest.py), for
annotating the tests that take them."""

from __future__ import annotations

from typing import Any, Protocol

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient, AiohttpServer

from gateway.settings import Settings

__all__ = [
    "AiohttpClient",
    "AiohttpServer",
    "GatewayClient",
    "GatewayFactory",
    "SettingsFactory",
    "WaitRows",
]

# A test client of the gateway app (or of any other aiohttp Application under test).
GatewayClient = TestClient[web.Request, web.Application]


class SettingsFactory(Protocol):
    """``settings_factory``: test settings, with any field overridden."""

    def __call__(self, **overrides: Any) -> Settings: ...


class GatewayFactory(Protocol):
    """``gateway_factory``: the gateway app in front of the test upstream, with routes
    matched before the test routes, extra options of upstream ``main``, sync jobs (a
    routes.yaml ``syncs:`` list), and settings."""

    async def __call__(
        self, extra_routes: str = "", upstream_opts: str = "", syncs: Any = None, **overrides: Any
    ) -> GatewayClient: ...


class WaitRows(Protocol):
    """``wait_rows``: api_logs rows once ``count`` of them match ``where``."""

    async def __call__(
        self, count: int, timeout: float = 10.0, where: str = "true"
    ) -> list[asyncpg.Record]: ...
