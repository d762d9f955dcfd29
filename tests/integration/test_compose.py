"""compose.yaml as a newcomer runs it: nothing to export first, every route on the demo PMS
(a compose service, on the port it listens on), the gateway's port the same in its
environment, its published port and Prometheus's target; and the demo routes really proxy
to demo/pms.py. With a Docker compose command on the machine, `config` validates the file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest
import yaml

from gateway.app import create_app
from gateway.auth import keys
from gateway.routes import load_routes, parse_routes
from tests.fixture_types import AiohttpClient, AiohttpServer, SettingsFactory, WaitRows

ROOT = Path(__file__).resolve().parents[2]
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}")

sys.path.insert(0, str(ROOT / "demo"))
import pms  # noqa: E402  (demo/pms.py: not a package)


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return doc


def service_env(name: str) -> dict[str, str]:
    return {k: str(v) for k, v in compose()["services"][name].get("environment", {}).items()}


def mounted(service: str, target: str) -> Path:
    """The repository file a service mounts at ``target``."""
    for volume in compose()["services"][service].get("volumes", []):
        source, dest = volume.split(":")[:2]
        if dest == target:
            return ROOT / str(source)
    raise AssertionError(f"{service} mounts nothing at {target}")


def listening_port(service: dict[str, Any]) -> int:
    """The port a service listens on: its published container port (one is expected)."""
    ports = [str(p).rsplit(":", 1)[-1] for p in service.get("ports", [])]
    assert len(ports) == 1, ports
    return int(ports[0])


def test_nothing_must_be_exported_first() -> None:
    """Every ${VAR} in the file has a default (`${VAR:-…}`), none is required (`:?`)."""
    text = (ROOT / "compose.yaml").read_text()
    found = INTERPOLATION.findall(text)
    for name, rest in found:
        assert rest.startswith(":-"), f"${{{name}{rest}}}: needs a default for development"
    assert "GATEWAY_ENCRYPTION_KEYS" in text  # it can be set, and the header says how


def test_every_route_goes_to_a_compose_service_on_its_port() -> None:
    services = compose()["services"]
    routes = load_routes(mounted("gateway", "/etc/gateway/routes.yaml"))
    assert routes.routes
    for name, upstream in routes.upstreams.items():
        url = urlsplit(str(upstream.url))
        assert url.hostname in services, f"upstream {name}: {url.hostname} is no compose service"
        assert url.hostname != "gateway", f"upstream {name} points at the gateway itself"
        service = services[url.hostname]
        assert url.port == listening_port(service), f"upstream {name}: port {url.port}"
        assert str(url.port) in service["entrypoint"], "the stand-in listens elsewhere"
    assert mounted("pms", "/demo") == ROOT / "demo"


def test_the_gateway_port_agrees_everywhere() -> None:
    """GATEWAY_PORT (what `serve` and the image HEALTHCHECK use), the published port and
    Prometheus's scrape target are one port."""
    port = int(service_env("gateway")["GATEWAY_PORT"])
    assert listening_port(compose()["services"]["gateway"]) == port
    prometheus = yaml.safe_load(mounted("prometheus", "/etc/prometheus/prometheus.yml").read_text())
    targets = [
        t
        for job in prometheus["scrape_configs"]
        for c in job["static_configs"]
        for t in c["targets"]
    ]
    assert targets == [f"gateway:{port}"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    healthcheck = dockerfile[dockerfile.index("HEALTHCHECK") :].split("\nENTRYPOINT")[0]
    assert "GATEWAY_PORT" in healthcheck and ":8080/" not in healthcheck


def test_the_database_url_names_the_db_service() -> None:
    env = compose()["services"]["db"]["environment"]
    url = urlsplit(service_env("gateway")["GATEWAY_DATABASE_URL"])
    assert url.hostname == "db"
    assert (url.username, url.password) == (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"])
    assert url.path == "/" + env["POSTGRES_DB"]
    image_version = int(compose()["services"]["db"]["image"].split(":")[1])
    assert image_version >= 15, "the gateway needs PostgreSQL 15 or newer"


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_accepts_the_file() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("no `docker compose` or `docker-compose` on this machine")
    proc = subprocess.run(
        [*command, "-f", str(ROOT / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin"},  # nothing exported
    )
    assert proc.returncode == 0, proc.stderr


async def test_the_demo_routes_proxy_to_the_demo_pms(
    aiohttp_server: AiohttpServer,
    aiohttp_client: AiohttpClient,
    settings_factory: SettingsFactory,
    db: asyncpg.Connection,
    wait_rows: WaitRows,
) -> None:
    stand_in = await aiohttp_server(pms.make_app(), host="127.0.0.1")
    text = mounted("gateway", "/etc/gateway/routes.yaml").read_text()
    text = text.replace("http://pms:9000", str(stand_in.make_url("")).rstrip("/"))
    gateway = await aiohttp_client(create_app(settings_factory(), parse_routes(text, "demo")))
    tenant = await keys.create_tenant(db, "Demo", actor="test")
    _, token = await keys.create_key(
        db, tenant.id, "partner", actor="test", external_system="booking_engine"
    )
    auth = {"Authorization": f"Bearer {token}"}

    created = await gateway.post("/api/v1/reservations", json={"notes": "late"}, headers=auth)
    assert created.status == 201
    rid = (await created.json())["id"]
    got = await gateway.get(f"/api/v1/reservations/{rid}", headers=auth)
    assert (await got.json())["notes"] == "late"
    guest = await gateway.get("/api/v1/guests/42", headers=auth)
    assert (await guest.json())["path"] == "/guests/42"
    room = await gateway.get("/api/v1/rooms/412", headers=auth)
    assert (await room.json())["path"] == "/inventory/rooms/412"
    assert (await gateway.get("/api/v1/rates/BAR/2026-12-01")).status == 200
    pdf = await gateway.get("/api/v1/invoices/9/pdf", headers=auth)
    assert (await pdf.read()).startswith(b"%PDF")
    events = await gateway.get(f"/api/v1/reservations/{rid}/events", headers=auth)
    assert (await events.text()).count("event: status") == pms.EVENTS_SENT
    async with gateway.ws_connect("/api/v1/rooms/feed", headers=auth) as ws:
        assert (await ws.receive_json())["status"] == "clean"
        await ws.send_str("ping")
        assert (await ws.receive()).data == "ping"
        await ws.close()

    emitted = await db.fetchval(
        "SELECT count(*) FROM webhook_events WHERE tenant_id = $1", tenant.id
    )
    assert emitted == 1  # reservation.created, from the route's emit
    rows = await wait_rows(9)
    assert {r["route"] for r in rows} >= {"reservations", "guests", "rooms", "housekeeping-feed"}
    assert all(r["status"] < 400 for r in rows)


def test_the_stand_in_answers_its_own_health_check() -> None:
    assert any(
        route.resource is not None and route.resource.canonical == "/health"
        for route in pms.make_app().router.routes()
    )
    assert aiohttp  # the stand-in is an aiohttp app, as the gateway's image provides
