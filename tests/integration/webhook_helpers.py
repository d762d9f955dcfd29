"""Real webhook receivers (aiohttp servers on 127.0.0.1) and helpers for webhook tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiohttp import web

from gateway.auth import keys
from tests.fixture_types import GatewayClient

FAST_SCHEDULE = (0.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1)  # seconds: retries in tests


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """Records every POST; ``behave`` decides the answer (default 200)."""

    calls: list[Received] = field(default_factory=list)
    behave: Callable[[web.Request, int], Awaitable[web.StreamResponse]] | None = None
    in_flight: int = 0
    max_in_flight: int = 0
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.calls.append(Received(dict(request.headers), body, asyncio.get_running_loop().time()))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.behave is not None:
                return await self.behave(request, len(self.calls))
            return web.json_response({"ok": True})
        finally:
            self.in_flight -= 1

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        return app

    def ids(self) -> list[str]:
        return [c.headers["webhook-id"] for c in self.calls]


async def wait_for(
    check: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0, step: float = 0.05
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


async def make_tenant(db: asyncpg.Connection, name: str) -> dict[str, Any]:
    tenant = await keys.create_tenant(db, name, "test")
    out: dict[str, Any] = {"tenant": tenant}
    for role, system in (
        ("admin", None),
        ("viewer", None),
        ("service", None),
        ("partner", "booking_engine"),
    ):
        _, token = await keys.create_key(db, tenant.id, role, actor="test", external_system=system)
        out[role] = {"Authorization": f"Bearer {token}"}
    return out


async def subscribe(
    gw: GatewayClient, headers: dict[str, str], url: str, **fields: Any
) -> dict[str, Any]:
    body = {"name": "test", "url": url, "event_types": ["*"], **fields}
    resp = await gw.post("/admin/v1/webhooks/subscriptions", json=body, headers=headers)
    made = await resp.json()
    assert resp.status == 201, made
    return dict(made)


async def publish(
    gw: GatewayClient, headers: dict[str, str], event_type: str, payload: Any, **extra: Any
) -> dict[str, Any]:
    resp = await gw.post(
        "/admin/v1/events", json={"type": event_type, "payload": payload, **extra}, headers=headers
    )
    out = await resp.json()
    assert resp.status in (200, 201), out
    return dict(out)
