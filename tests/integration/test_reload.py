"""Reloading routes.yaml without a restart (SIGHUP, `gateway reload`): under steady load no
call fails and every call has its row; new calls use the new routes; an unchanged
upstream keeps its warm connections; a file that does not validate changes nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer

from tests.integration.fault_helpers import GatewayProcess
from tests.integration.test_faults_under_load import gateway_env

pytestmark = pytest.mark.slow

LOAD_SECONDS = 4.0
CONCURRENCY = 8


class Upstream:
    """An upstream that names itself in its answers and notes the gateway's connections."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.peers: list[tuple[float, int]] = []  # (when, the gateway's source port)
        self.server: TestServer | None = None

    async def answer(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.peers.append((time.monotonic(), peer[1] if peer else 0))
        return web.json_response({"upstream": self.name, "path": request.path})

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    def ports(self, since: float = 0.0, until: float = float("inf")) -> set[int]:
        return {port for when, port in self.peers if since <= when < until}


@pytest.fixture
async def upstreams(aiohttp_server: AiohttpServer) -> AsyncIterator[dict[str, Upstream]]:
    found = {}
    for name in ("one", "two", "three"):
        up = Upstream(name)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", up.answer)
        up.server = await aiohttp_server(app, host="127.0.0.1")
        found[name] = up
    yield found


def routes(ups: dict[str, Upstream], *names: str, broken: bool = False) -> str:
    """Public routes ``/<name>/...`` to the upstream of the same name."""
    text = "upstreams:\n"
    for name in names:
        text += f"  {name}: {{url: '{ups[name].url}'}}\n"
    text += "routes:\n"
    for name in names:
        text += (
            f"  - {{name: r{name}, path: '/{name}/{{rest...}}', upstream: {name}, public: true}}\n"
        )
    if broken:  # a route to an upstream that is not declared
        text += "  - {name: bad, path: '/bad/{rest...}', upstream: nowhere, public: true}\n"
    return text


async def status_of(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, str]]:
    async with http.get(url) as r:
        body = await r.json()
        return r.status, body


async def rows_for(db: asyncpg.Connection, prefix: str, expected: int) -> int:
    found = 0
    for _ in range(100):
        found = await db.fetchval(
            "SELECT count(*) FROM api_logs WHERE request_id LIKE $1", prefix + "%"
        )
        if found >= expected:
            break
        await asyncio.sleep(0.1)
    return int(found)


async def test_reload_under_load_drops_nothing_and_keeps_warm_pools(
    tmp_path: Path, database_url: str, db: asyncpg.Connection, upstreams: dict[str, Upstream]
) -> None:
    routes_file = tmp_path / "routes.yaml"
    routes_file.write_text(routes(upstreams, "one", "two"))
    data_dir = tmp_path / "data"
    gw = GatewayProcess(tmp_path, routes_file, gateway_env(database_url, data_dir))
    base = await gw.start()
    statuses: list[int] = []
    try:
        async with aiohttp.ClientSession() as http:
            stop = asyncio.Event()

            async def load(worker: int) -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    rid = f"reload-{worker}-{n}"
                    async with http.get(f"{base}/one/x", headers={"X-Request-Id": rid}) as r:
                        await r.read()
                        statuses.append(r.status)

            tasks = [asyncio.create_task(load(i)) for i in range(CONCURRENCY)]
            await asyncio.sleep(LOAD_SECONDS / 2)
            swapped = time.monotonic()
            routes_file.write_text(routes(upstreams, "one", "three"))  # two out, three in
            gw.signal(signal.SIGHUP)
            for _ in range(100):  # the new route answers once the process has reloaded
                if (await status_of(http, f"{base}/three/y"))[0] == 200:
                    break
                await asyncio.sleep(0.05)
            reloaded = time.monotonic()
            await asyncio.sleep(LOAD_SECONDS / 2)
            stop.set()
            await asyncio.gather(*tasks)

            print(f"reload under load: {len(statuses)} calls in {LOAD_SECONDS} s")
            assert len(statuses) > 200, len(statuses)
            assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
            status, body = await status_of(http, f"{base}/three/y")
            assert (status, body["upstream"]) == (200, "three")
            status, body = await status_of(http, f"{base}/two/y")
            assert (status, body["code"]) == (404, "route_not_found")
            # Upstream "one" did not change: its pool, and its connections, were kept.
            before = upstreams["one"].ports(until=swapped)
            after = upstreams["one"].ports(since=reloaded)
            assert after and after <= before, (sorted(before), sorted(after))

            # A file that does not validate: reported, nothing changes.
            routes_file.write_text(routes(upstreams, "one", broken=True))
            gw.signal(signal.SIGHUP)
            await asyncio.sleep(0.5)
            assert (await status_of(http, f"{base}/three/y"))[0] == 200
            async with http.get(base + "/metrics") as r:
                text = await r.text()
            assert 'gateway_routes_reloads_total{result="ok"} 1.0' in text
            assert 'gateway_routes_reloads_total{result="error"} 1.0' in text
        assert await rows_for(db, "reload-", len(statuses)) == len(statuses)
    finally:
        gw.signal(signal.SIGTERM)
        assert await gw.wait(20) == 0
    log = gw.output()
    assert "routes reload refused" in log and str(routes_file) in log
    assert "'nowhere'" in log  # the field at fault is named
    assert "Traceback" not in log


def reload_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GATEWAY_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "gateway", "reload", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_gateway_reload_checks_the_file_then_signals_the_server(
    tmp_path: Path, database_url: str, upstreams: dict[str, Upstream]
) -> None:
    routes_file = tmp_path / "routes.yaml"
    routes_file.write_text(routes(upstreams, "one"))
    data_dir = tmp_path / "data"
    gw = GatewayProcess(tmp_path, routes_file, gateway_env(database_url, data_dir))
    base = await gw.start()
    try:
        async with aiohttp.ClientSession() as http:
            routes_file.write_text(routes(upstreams, "one", broken=True))
            bad = reload_cli(data_dir)
            assert bad.returncode == 2, bad
            assert "configuration error" in bad.stderr and str(routes_file) in bad.stderr
            assert "'nowhere'" in bad.stderr
            routes_file.write_text(routes(upstreams, "one", "two"))
            good = reload_cli(data_dir)
            assert good.returncode == 0, good
            assert "valid, 2 routes" in good.stdout and str(gw.proc.pid) in good.stdout  # type: ignore[union-attr]
            for _ in range(100):
                if (await status_of(http, f"{base}/two/z"))[0] == 200:
                    break
                await asyncio.sleep(0.05)
            assert (await status_of(http, f"{base}/two/z"))[1]["upstream"] == "two"
            async with http.get(base + "/metrics") as r:
                text = await r.text()
            # the bad file never reached the server: only the good reload happened
            assert 'gateway_routes_reloads_total{result="ok"} 1.0' in text
            assert 'result="error"' not in text
    finally:
        gw.signal(signal.SIGTERM)
        assert await gw.wait(20) == 0
    assert not (data_dir / "gateway.pid").exists()  # removed at exit
    gone = reload_cli(data_dir)
    assert gone.returncode == 1 and "no running gateway" in gone.stderr
