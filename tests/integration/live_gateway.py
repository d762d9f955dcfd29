"""The real gateway served on 127.0.0.1 from a thread, for tests whose client blocks
(schemathesis, a generated client), and a tenant with an admin key to call it with."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.app import create_app
from gateway.auth import keys
from gateway.routes import parse_routes
from gateway.settings import Secret, Settings
from tests.conftest import routes_yaml


class LiveGateway:
    """The real gateway app served on 127.0.0.1 from a thread (schemathesis calls it with
    a blocking HTTP client)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        runner = web.AppRunner(self.app)
        self.loop.run_until_complete(runner.setup())
        self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())
        self.loop.close()

    def __enter__(self) -> str:
        self.thread.start()
        assert self.ready.wait(30), "gateway did not start"
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: Any) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


@contextmanager
def live_admin_api(database_url: str, data_dir: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The gateway's base URL and an admin key's headers (tenant "Hotel Fuzz"); no webhook
    delivery loop, so subscriptions made by a test never send a request."""

    async def seed() -> str:
        import asyncpg

        from gateway.db.pool import init_connection

        conn = await asyncpg.connect(database_url)
        await init_connection(conn)
        try:
            tenant = await keys.create_tenant(conn, "Hotel Fuzz", "test")
            _, token = await keys.create_key(conn, tenant.id, "admin", actor="test")
            return token
        finally:
            await conn.close()

    token = asyncio.run(seed())
    settings_ = Settings(
        database_url=Secret(database_url),
        data_dir=data_dir,
        log_flush_interval=0.05,
        webhook_delivery=False,
        # Whether an endpoint's address is private depends on where its name resolves,
        # which no schema can say: the contract run allows every address.
        webhook_allow_private=True,
    )
    table = parse_routes(routes_yaml("http://127.0.0.1:9"))
    with LiveGateway(create_app(settings_, table)) as base:
        yield base, {"Authorization": f"Bearer {token}"}
