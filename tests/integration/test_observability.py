"""Dashboards and alerts work: promtool checks and rule unit tests, and a real Prometheus
scraping a real gateway under generated traffic evaluates every panel query and alert."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.auth import keys
from gateway.mapping import store as mappings
from gateway.mapping.store import Actor, NewMapping
from tests.fixture_types import AiohttpServer, GatewayClient, GatewayFactory
from tests.integration.fault_helpers import free_port
from tests.integration.webhook_helpers import FAST_SCHEDULE, Receiver, publish, subscribe

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install prometheus; .ci/run does)"
)
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (apt-get install prometheus)"
)
SCRAPE_SECONDS = 1
RATE_WINDOW = "10s"  # what Grafana's $__rate_interval becomes at a 1 s scrape interval
ROUTES = """
  - name: translated
    path: /tr/reservations/{id}
    methods: [GET]
    strip_prefix: /tr
    upstream: main
    translate: {path: {id: reservation}}
  - name: sync-reservation
    path: /sync/reservations/{id}
    methods: [PUT]
    strip_prefix: /sync
    upstream: main
    sync: {entity_type: reservation, entity: "path:id"}
  - name: create-reservation
    path: /em/create
    methods: [POST]
    strip_prefix: /em
    upstream: main
    emit:
      - event: reservation.created
"""


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=GRAFANA, capture_output=True, text=True, timeout=60
    )


@needs_promtool
def test_rules_and_config_pass_promtool() -> None:
    for args in (
        ("check", "rules", "alerts.yml"),
        ("check", "config", "prometheus.yml"),
        ("check", "config", "compose-prometheus.yml"),
        ("test", "rules", "alerts_test.yml"),
    ):
        proc = promtool(*args)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dashboard_json_is_generated_from_the_source() -> None:
    proc = subprocess.run(
        [sys.executable, str(GRAFANA / "dashboards.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout


def test_every_alert_has_a_runbook_section() -> None:
    import yaml

    rules = yaml.safe_load((GRAFANA / "alerts.yml").read_text())
    runbook = (ROOT / "docs" / "operations.md").read_text()
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert f"## {rule['alert']}\n" in runbook
            assert {"summary", "description", "runbook"} <= set(rule["annotations"])
            link = f"docs/operations.md#{rule['alert'].lower()}"
            assert rule["annotations"]["runbook"] == link


def dashboards() -> dict[str, Any]:
    return {
        p.name: json.loads(p.read_text()) for p in sorted((GRAFANA / "dashboards").glob("*.json"))
    }


def panel_queries() -> list[tuple[str, str, str]]:
    out = []
    for name, dash in dashboards().items():
        for panel in dash["panels"]:
            for target in panel["targets"]:
                out.append((name, panel["title"], target["expr"]))
    return out


@contextlib.asynccontextmanager
async def prometheus(tmp: Path, target: str) -> AsyncIterator[str]:
    """A real Prometheus on 127.0.0.1 scraping ``target`` every second, with our rules."""
    assert PROMETHEUS is not None
    shutil.copy(GRAFANA / "alerts.yml", tmp / "alerts.yml")
    (tmp / "prometheus.yml").write_text(
        f"global: {{scrape_interval: {SCRAPE_SECONDS}s, evaluation_interval: 1s}}\n"
        "rule_files: [alerts.yml]\n"
        "scrape_configs:\n"
        f"  - job_name: gateway\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = free_port()
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{base}/-/ready") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("prometheus did not start")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def query(http: aiohttp.ClientSession, base: str, expr: str) -> Any:
    async with http.get(f"{base}/api/v1/query", params={"query": expr}) as r:
        body = await r.json()
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


async def traffic(
    gw: GatewayClient, callers: dict[str, Any], db: asyncpg.Connection, stop: asyncio.Event
) -> None:
    """Successes, upstream failures, 404s, auth failures, rate limiting, sync reports,
    translated calls (cache hits and misses), mapping changes (cache invalidations) and
    webhook events (one delivery that succeeds, one that fails; published and emitted
    by a route)."""
    partner, svc = callers["partner"], callers["service"]
    n = 0
    while not stop.is_set():
        n += 1
        await (await gw.get("/tr/reservations/R-1", headers=partner)).read()
        await (await gw.get(f"/tr/reservations/R-miss-{n}", headers=partner)).read()
        if n % 5 == 0:  # a change by SQL: NOTIFY drops the cached entry everywhere
            await db.execute("UPDATE integration_mappings SET sync_status = 'synced'")
        await (await gw.get("/api/echo/ok")).read()
        await (await gw.get("/api/dead")).read()  # 502
        await (await gw.get("/nowhere/at/all")).read()  # 404
        await (await gw.get("/secure/x", headers={"Authorization": "Bearer gwk_nope"})).read()
        await (await gw.get("/limited/x", headers=partner)).read()  # 429 after 3
        await (await gw.put(f"/sync/reservations/{uuid.uuid4()}", headers=partner)).read()
        status = "failed" if n % 2 else "succeeded"
        report = {
            "entity_type": "room",
            "entity_id": str(uuid.uuid4()),
            "external_system": "booking_engine",
            "direction": "outbound",
            "status": status,
        }
        await (await gw.post("/admin/v1/sync/reports", json=report, headers=svc)).read()
        await publish(gw, svc, "reservation.created", {"id": str(uuid.uuid4()), "n": n})
        if n % 3 == 0:  # an event emitted by a proxied answer (routes.yaml `emit`)
            await (await gw.post("/em/create", json={"guest_id": "g"}, headers=partner)).read()
        await asyncio.sleep(0.05)


async def make_conflict(gw: GatewayClient, callers: dict[str, Any]) -> None:
    entity = str(uuid.uuid4())
    base = {
        "entity_type": "rate",
        "entity_id": entity,
        "external_system": "booking_engine",
        "direction": "bidirectional",
        "status": "pending",
    }
    await gw.post("/admin/v1/sync/reports", json={**base, "version": 2}, headers=callers["service"])
    await gw.post("/admin/v1/sync/reports", json={**base, "version": 3}, headers=callers["partner"])


@pytest.fixture
async def callers(db: asyncpg.Connection) -> dict[str, Any]:
    tenant = await keys.create_tenant(db, "Hotel Observed", "test")
    out: dict[str, Any] = {"tenant": tenant.id}
    for role, system in (("admin", None), ("service", None), ("partner", "booking_engine")):
        _, token = await keys.create_key(db, tenant.id, role, actor="test", external_system=system)
        out[role] = {"Authorization": f"Bearer {token}"}
    await mappings.create(
        db,
        tenant.id,
        NewMapping("reservation", uuid.uuid4(), "booking_engine", "R-1"),
        Actor("test", None),
    )
    return out


@pytest.fixture
async def subscribers(
    aiohttp_server: AiohttpServer, callers: dict[str, Any]
) -> Callable[[GatewayClient], Any]:
    """A receiver answering 200 on /ok and 500 on /fail; subscribes the gateway to both
    (the failing one for an external system, two attempts, so deliveries fail for good)."""

    async def behave(request: web.Request, _: int) -> web.StreamResponse:
        return web.json_response({}, status=200 if request.path == "/ok" else 500)

    receiver = Receiver(behave=behave)
    server = await aiohttp_server(receiver.app(), host="127.0.0.1")

    async def make(gw: GatewayClient) -> None:
        await subscribe(gw, callers["admin"], str(server.make_url("/ok")))
        await subscribe(
            gw,
            callers["admin"],
            str(server.make_url("/fail")),
            external_system="booking_engine",
            retry_policy={"max_attempts": 2},
        )

    return make


@needs_prometheus
@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_every_panel_and_alert_query_works_against_real_prometheus(
    upstream: TestServer,
    gateway_factory: GatewayFactory,
    callers: dict[str, Any],
    subscribers: Callable[[GatewayClient], Any],
    tmp_path: Path,
    db: asyncpg.Connection,
) -> None:
    gw: GatewayClient = await gateway_factory(
        ROUTES,
        sync_stats_interval=0.5,
        webhook_allow_private=True,
        webhook_allow_http=True,
        webhook_retry_schedule=FAST_SCHEDULE,
        webhook_poll_interval=0.2,
        webhook_stats_interval=0.5,
        syncs=[  # a sync job running every second: its items have no id, so they fail
            {
                "name": "observed-job",
                "tenant": str(callers["tenant"]),
                "external_system": "revenue_mgmt",
                "entity_type": "rate",
                "direction": "outbound",
                "interval": 1,
                "source": {"upstream": "main", "path": "/json"},
                "target": {"url": str(upstream.make_url("/json"))},
            }
        ],
    )
    await subscribers(gw)
    stop = asyncio.Event()
    load = asyncio.create_task(traffic(gw, callers, db, stop))
    await make_conflict(gw, callers)
    target = f"127.0.0.1:{gw.server.port}"
    try:
        async with prometheus(tmp_path, target) as base, aiohttp.ClientSession() as http:
            # Enough scrapes for rate() over the window, with traffic in between.
            for _ in range(200):
                got = await query(http, base, 'count_over_time(up{job="gateway"}[1m])')
                if got and float(got[0]["value"][1]) >= 8:
                    break
                await asyncio.sleep(0.25)
            else:
                raise AssertionError("prometheus did not scrape the gateway")
            empty = []
            for dash, title, expr in panel_queries():
                concrete = (
                    expr.replace("$__rate_interval", RATE_WINDOW)
                    .replace("$route", ".*")
                    .replace("$external_system", ".*")
                )
                if not await query(http, base, concrete):
                    empty.append(f"{dash} / {title}: {concrete}")
            assert not empty, "panels without series:\n" + "\n".join(empty)
            await check_variables(http, base)
            await check_rules(http, base)
    finally:
        stop.set()
        await load


async def check_variables(http: aiohttp.ClientSession, base: str) -> None:
    for dash in dashboards().values():
        for var in dash["templating"]["list"]:
            metric, label = var["definition"][len("label_values(") : -1].split(", ")
            async with http.get(
                f"{base}/api/v1/label/{label}/values", params={"match[]": metric}
            ) as r:
                values = (await r.json())["data"]
            assert values, var["definition"]


async def check_rules(http: aiohttp.ClientSession, base: str) -> None:
    """Every alert expression evaluates without error (loaded rules and a direct query)."""
    import yaml

    rules = yaml.safe_load((GRAFANA / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            await query(http, base, rule["expr"])
    for _ in range(50):
        async with http.get(f"{base}/api/v1/rules") as r:
            loaded = (await r.json())["data"]["groups"]
        states = [rule for g in loaded for rule in g["rules"]]
        if states and all(
            rule.get("lastEvaluation", "").startswith("2")
            and not rule["lastEvaluation"].startswith("0001")
            for rule in states
        ):
            break
        await asyncio.sleep(0.2)
    names = {rule["name"] for rule in states}
    assert len(names) == sum(len(g["rules"]) for g in rules["groups"])
    bad = [(rule["name"], rule.get("lastError")) for rule in states if rule["health"] != "ok"]
    assert not bad, bad
