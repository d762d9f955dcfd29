"""Scheduled batch sync jobs (gateway/sync/jobs/) against real PostgreSQL and real HTTP
servers on 127.0.0.1: an internal upstream (the PMS) and a partner's server."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.fernet import Fernet
from yarl import URL

from gateway.app import create_app
from gateway.crypto import SecretBox
from gateway.db.pool import create_pool
from gateway.errors import ConfigError
from gateway.mapping.batch import batch_translator
from gateway.mapping.cache import MappingCache
from gateway.mapping.flow import Mappings
from gateway.proxy.client import upstream_session
from gateway.routes import Upstream, parse_routes
from gateway.sync.jobs.config import SyncJob, parse_syncs
from gateway.sync.jobs.runner import Hands, JobCall, JobRunner
from gateway.webhooks.delivery import webhook_session
from gateway.webhooks.ssrf import AddressPolicy, literal_refusal
from tests.conftest import routes_yaml, wait_for_rows
from tests.fixture_types import AiohttpServer
from tests.integration.webhook_helpers import make_tenant

SYSTEM = "revenue_mgmt"
TOKEN = "rms-secret-token"
ENV = {"RMS_TOKEN": TOKEN, "ACC_PW": "pw"}
BOX_KEY = Fernet.generate_key()  # shared with runner processes (sync_job_worker.py)


@dataclass
class World:
    """The PMS (source or target) and the partner (target or source), both recording."""

    changes: list[dict[str, Any]] = field(default_factory=list)  # the PMS's change log
    partner_items: list[dict[str, Any]] = field(default_factory=list)  # the partner's feed
    received: list[list[dict[str, Any]]] = field(default_factory=list)  # batches posted
    auth_seen: list[str | None] = field(default_factory=list)
    refuse_ids: set[str] = field(default_factory=set)  # the partner refuses these ids
    down: bool = False  # the target answers 503
    hold: asyncio.Event | None = None  # set: the target waits for it before answering
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    most_in_flight: int = 0


def paged(items: list[dict[str, Any]], request: web.Request) -> dict[str, Any]:
    start = int(request.query.get("cursor", "0"))
    limit = int(request.query["limit"])
    page = items[start : start + limit]
    return {"data": page, "next": str(start + len(page))}


def make_app(world: World) -> web.Application:
    async def pms_changes(request: web.Request) -> web.Response:
        return web.json_response(paged(world.changes, request))

    async def partner_feed(request: web.Request) -> web.Response:
        world.auth_seen.append(request.headers.get("Authorization"))
        return web.json_response(paged(world.partner_items, request))

    async def take_batch(request: web.Request) -> web.Response:
        world.auth_seen.append(request.headers.get("Authorization"))
        world.in_flight += 1
        world.most_in_flight = max(world.most_in_flight, world.in_flight)
        world.arrived.set()
        try:
            if world.hold is not None:
                await world.hold.wait()
            if world.down:
                return web.json_response({"error": "maintenance"}, status=503)
            items = (await request.json())["items"]
            refused = [i for i in items if i["id"] in world.refuse_ids]
            world.received.append([i for i in items if i not in refused])
            failed = [{"id": i["id"], "error": "rate plan closed"} for i in refused]
            return web.json_response({"failed": failed})
        finally:
            world.in_flight -= 1

    app = web.Application()
    app.router.add_get("/pms/rates/changes", pms_changes)
    app.router.add_post("/pms/invoices/import", take_batch)
    app.router.add_get("/partner/invoices", partner_feed)
    app.router.add_post("/partner/rates", take_batch)
    return app


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
async def server(aiohttp_server: AiohttpServer, world: World) -> TestServer:
    return await aiohttp_server(make_app(world), host="127.0.0.1")


@pytest.fixture
async def tenant(db: asyncpg.Connection) -> uuid.UUID:
    tenant_id: uuid.UUID = await db.fetchval(
        "INSERT INTO tenants (name) VALUES ('Hotel Test') RETURNING id"
    )
    return tenant_id


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, 1, 10)
    yield p
    await p.close()


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def make_runner(pool: asyncpg.Pool) -> AsyncIterator[Callable[..., JobRunner]]:
    """Runners as separate gateway processes would have them (each its own owner id and
    mapping cache; one pool is enough: leases are rows, not connections)."""
    box = SecretBox([BOX_KEY])
    policy = AddressPolicy(allow_private=True)  # the partner is on 127.0.0.1 in tests
    sessions = [upstream_session(), webhook_session(policy)]
    calls: list[JobCall] = []

    def make(jobs: list[SyncJob], clock: Clock, lease: float = 30.0) -> JobRunner:
        hands = Hands(
            sessions[0],
            sessions[1],
            lambda url: literal_refusal(url, policy),
            batch_translator(Mappings(pool, MappingCache(), 30.0)),
            calls.append,
        )
        runner = JobRunner(pool, jobs, box, hands, lease=lease, clock=clock)
        runner.calls = calls  # type: ignore[attr-defined]
        return runner

    yield make
    for s in sessions:
        await s.close()


def job_config(
    server: TestServer | str, tenant: uuid.UUID, direction: str, **extra: Any
) -> SyncJob:
    base = server if isinstance(server, str) else str(server.make_url("")).rstrip("/")
    if direction == "outbound":
        spec: dict[str, Any] = {
            "name": "rates-out",
            "entity_type": "rate",
            "source": {
                "upstream": "pms",
                "path": "/rates/changes",
                "items": "/data",
                "version": "/version",
                "next_cursor": "/next",
            },
            "target": {
                "url": f"{base}/partner/rates",
                "auth": {"type": "bearer", "token_env": "RMS_TOKEN"},
                "failed": {"items": "/failed"},
            },
            "translate": {"/room_type_id": "room_type"},
        }
    else:
        spec = {
            "name": "invoices-in",
            "entity_type": "invoice",
            "source": {
                "url": f"{base}/partner/invoices",
                "auth": {"type": "basic", "username": "gw", "password_env": "ACC_PW"},
                "items": "/data",
                "version": "/version",
                "next_cursor": "/next",
            },
            "target": {"upstream": "pms", "path": "/invoices/import", "failed": {}},
            "translate": {"/reservation_id": "reservation"},
        }
    spec.update(
        tenant=str(tenant),
        external_system=SYSTEM,
        direction=direction,
        interval="15m",
        batch_size=2,
        max_retries=3,
        **extra,
    )
    upstreams = {"pms": Upstream("pms", URL(f"{base}/pms"))}
    (job,) = parse_syncs(yaml.safe_load(yaml.safe_dump([spec])), "test.yaml", upstreams, ENV)
    return job


async def add_mapping(
    db: asyncpg.Connection, tenant: uuid.UUID, entity_type: str, external_id: str
) -> uuid.UUID:
    internal = uuid.uuid4()
    await db.execute(
        """INSERT INTO integration_mappings (tenant_id, entity_type, internal_id,
                                             external_system, external_id)
           VALUES ($1, $2, $3, $4, $5)""",
        tenant,
        entity_type,
        internal,
        SYSTEM,
        external_id,
    )
    return internal


async def outbound_world(db: asyncpg.Connection, tenant: uuid.UUID, world: World, n: int) -> None:
    room = await add_mapping(db, tenant, "room_type", "DBL")
    for i in range(n):
        rate = await add_mapping(db, tenant, "rate", f"R{i}")
        world.changes.append(
            {"id": str(rate), "room_type_id": str(room), "price": 100 + i, "version": 1}
        )


async def statuses(db: asyncpg.Connection, direction: str = "outbound") -> list[asyncpg.Record]:
    return list(
        await db.fetch(
            "SELECT * FROM data_sync_status WHERE direction = $1 ORDER BY entity_id", direction
        )
    )


async def test_outbound_job_exports_in_partner_ids_and_advances_the_cursor(
    db: asyncpg.Connection,
    tenant: uuid.UUID,
    world: World,
    server: TestServer,
    make_runner: Callable[..., JobRunner],
) -> None:
    await outbound_world(db, tenant, world, 5)
    job, clock = job_config(server, tenant, "outbound"), Clock()
    runner = make_runner([job], clock)
    await runner.register(ENV)
    assert await runner.run_due() == 1
    sent = [item for batch in world.received for item in batch]
    assert [b and len(b) for b in world.received] == [2, 2, 1]
    assert [i["id"] for i in sent] == [f"R{i}" for i in range(5)]  # the partner's ids
    assert {i["room_type_id"] for i in sent} == {"DBL"}
    assert set(world.auth_seen) == {f"Bearer {TOKEN}"}
    row = await db.fetchrow("SELECT * FROM sync_jobs WHERE name = 'rates-out'")
    assert row["cursor"] == "5" and row["last_status"] == "succeeded"
    assert row["lease_owner"] is None and row["next_run_at"] == clock.now + timedelta(minutes=15)
    assert row["auth_secret"] is not None and TOKEN not in row["auth_secret"]  # encrypted
    run = await db.fetchrow("SELECT * FROM sync_job_runs")
    assert (run["status"], run["batches"], run["items_read"], run["items_synced"]) == (
        "succeeded",
        3,
        5,
        5,
    )
    assert (run["cursor_before"], run["cursor_after"]) == (None, "5")
    rows = await statuses(db)
    assert len(rows) == 5 and {(r["status"], r["version"]) for r in rows} == {("succeeded", 1)}
    # Every request is handed to the call log with the job's name as its route.
    assert [(c.job, c.method, c.status) for c in runner.calls][:2] == [  # type: ignore[attr-defined]
        ("rates-out", "GET", 200),
        ("rates-out", "POST", 200),
    ]
    # Not due yet; when due, only the new change crosses, from the committed cursor.
    assert await runner.run_due() == 0
    rate = await add_mapping(db, tenant, "rate", "R5")
    world.changes.append({"id": str(rate), "room_type_id": None, "price": 1, "version": 1})
    clock.advance(15 * 60)
    assert await runner.run_due() == 1
    assert world.received[-1] == [{"id": "R5", "room_type_id": None, "price": 1, "version": 1}]
    assert len([i for b in world.received for i in b]) == 6


async def test_inbound_job_imports_in_internal_ids(
    db: asyncpg.Connection,
    tenant: uuid.UUID,
    world: World,
    server: TestServer,
    make_runner: Callable[..., JobRunner],
) -> None:
    invoices = {f"INV-{i}": await add_mapping(db, tenant, "invoice", f"INV-{i}") for i in range(3)}
    booking = await add_mapping(db, tenant, "reservation", "BK-1")
    world.partner_items = [
        {"id": ext, "reservation_id": "BK-1", "total": 10 * n, "version": 7}
        for n, ext in enumerate(invoices)
    ]
    world.partner_items.append({"id": "INV-UNKNOWN", "reservation_id": "BK-1", "version": 1})
    runner = make_runner([job_config(server, tenant, "inbound")], Clock())
    await runner.register(ENV)
    await runner.run_due()
    got = [i for b in world.received for i in b]
    assert [i["id"] for i in got] == [str(v) for v in invoices.values()]
    assert {i["reservation_id"] for i in got} == {str(booking)}
    assert world.auth_seen[0] == "Basic Z3c6cHc="  # gw:pw
    rows = await statuses(db, "inbound")
    assert {r["entity_id"] for r in rows} == set(invoices.values())
    assert {r["status"] for r in rows} == {"succeeded"}
    run = await db.fetchrow("SELECT * FROM sync_job_runs")
    assert (run["items_synced"], run["items_failed"]) == (3, 1)
    assert "INV-UNKNOWN" in run["errors"][0]["id"]
    assert "has no mapping for revenue_mgmt" in run["errors"][0]["error"]


async def test_target_failing_some_items_then_recovering(
    db: asyncpg.Connection,
    tenant: uuid.UUID,
    world: World,
    server: TestServer,
    make_runner: Callable[..., JobRunner],
) -> None:
    await outbound_world(db, tenant, world, 4)
    world.refuse_ids = {"R1", "R2"}
    job, clock = job_config(server, tenant, "outbound"), Clock()
    runner = make_runner([job], clock)
    await runner.register(ENV)
    await runner.run_due()
    rows = {r["entity_id"]: r for r in await statuses(db)}
    failed = [r for r in rows.values() if r["status"] == "failed"]
    assert len(failed) == 2 and all(r["retry_count"] == 1 for r in failed)
    assert all("rate plan closed" in r["error_message"] for r in failed)
    assert all(r["next_retry_at"] == clock.now + timedelta(minutes=1) for r in failed)
    assert await db.fetchval("SELECT count(*) FROM sync_job_items") == 2
    # A second failure doubles the wait; the limit (3 retries) then leaves them for a person.
    clock.advance(15 * 60)
    await runner.run_due()
    run = await db.fetchrow("SELECT * FROM sync_job_runs ORDER BY started_at DESC LIMIT 1")
    assert (run["items_retried"], run["items_failed"], run["items_read"]) == (2, 2, 2)
    failed = [r for r in await statuses(db) if r["status"] == "failed"]
    assert {r["retry_count"] for r in failed} == {2}
    assert {r["next_retry_at"] for r in failed} == {clock.now + timedelta(minutes=2)}
    # The partner recovers: the next due retry succeeds, statuses are right, nothing waits.
    world.refuse_ids = set()
    clock.advance(15 * 60)
    await runner.run_due()
    rows2 = await statuses(db)
    assert {r["status"] for r in rows2} == {"succeeded"}
    assert {r["retry_count"] for r in rows2} == {0}
    assert await db.fetchval("SELECT count(*) FROM sync_job_items") == 0
    sent = sorted(i["id"] for b in world.received for i in b)
    assert sent == ["R0", "R1", "R2", "R3"]  # each accepted exactly once


async def test_target_down_fails_the_run_and_the_batch_is_retried(
    db: asyncpg.Connection,
    tenant: uuid.UUID,
    world: World,
    server: TestServer,
    make_runner: Callable[..., JobRunner],
) -> None:
    await outbound_world(db, tenant, world, 3)
    world.down = True
    job, clock = job_config(server, tenant, "outbound"), Clock()
    runner = make_runner([job], clock)
    await runner.register(ENV)
    await runner.run_due()
    row = await db.fetchrow("SELECT * FROM sync_jobs")
    assert row["last_status"] == "failed" and "answered 503" in row["last_error"]
    assert row["cursor"] == "2"  # the failed batch is kept for retry; the run stopped there
    world.down = False
    clock.advance(15 * 60)
    await runner.run_due()
    assert {r["status"] for r in await statuses(db)} == {"succeeded"}
    assert sorted(i["id"] for b in world.received for i in b) == ["R0", "R1", "R2"]


async def test_killed_runner_is_resumed_by_another_without_loss_or_duplicates(
    db: asyncpg.Connection,
    tenant: uuid.UUID,
    world: World,
    server: TestServer,
    make_runner: Callable[..., JobRunner],
) -> None:
    await outbound_world(db, tenant, world, 6)
    job, clock = job_config(server, tenant, "outbound"), Clock()
    first, second = make_runner([job], clock, lease=1.0), make_runner([job], clock, lease=1.0)
    await first.register(ENV)
    # The first runner gets its first batch through, then dies while the second is posted.
    first_hold, second_hold = asyncio.Event(), asyncio.Event()
    world.hold = first_hold
    task = asyncio.create_task(first.run_due())
    await asyncio.wait_for(world.arrived.wait(), 10)
    world.arrived.clear()
    world.hold = second_hold
    first_hold.set()
    await asyncio.wait_for(world.arrived.wait(), 10)  # batch 2 is at the partner, unanswered
    task.cancel()  # no cleanup of the lease: a killed process leaves it as it was
    await asyncio.gather(task, return_exceptions=True)
    assert await db.fetchval("SELECT cursor FROM sync_jobs") == "2"  # batch 1 only
    assert await second.run_due() == 0  # the lease still holds
    world.hold = None
    second_hold.set()  # the partner finishes the dead runner's request
    await asyncio.sleep(1.2)  # the lease expires
    assert await second.run_due() == 1
    sent = [i["id"] for b in world.received for i in b]
    # Nothing lost, nothing committed twice. At-least-once: only the batch in flight when
    # the runner died (R2, R3) may cross twice, with the same id and version; here the
    # partner's server dropped the dead runner's request when its connection closed.
    counts = Counter(sent)
    assert sorted(counts) == [f"R{i}" for i in range(6)]
    assert {k for k, n in counts.items() if n > 1} <= {"R2", "R3"}
    rows = await statuses(db)
    assert len(rows) == 6 and {(r["status"], r["version"]) for r in rows} == {("succeeded", 1)}
    runs = await db.fetch("SELECT status, runner FROM sync_job_runs ORDER BY started_at")
    assert [r["status"] for r in runs] == ["abandoned", "succeeded"]
    assert runs[0]["runner"] != runs[1]["runner"]
    assert await db.fetchval("SELECT cursor FROM sync_jobs") == "6"


async def test_two_runners_never_run_the_same_job_at_once(
    db: asyncpg.Connection,
    tenant: uuid.UUID,
    world: World,
    server: TestServer,
    make_runner: Callable[..., JobRunner],
) -> None:
    await outbound_world(db, tenant, world, 6)
    job, clock = job_config(server, tenant, "outbound"), Clock()
    runners = [make_runner([job], clock) for _ in range(4)]
    await runners[0].register(ENV)
    ran = await asyncio.gather(*(r.run_due() for r in runners))
    assert sum(ran) == 1
    assert world.most_in_flight == 1
    assert sorted(i["id"] for b in world.received for i in b) == [f"R{i}" for i in range(6)]
    assert await db.fetchval("SELECT count(*) FROM sync_job_runs") == 1


# -- in the gateway: background loop, admin API, api_logs, metrics ------------------------


async def _wait_job(db: asyncpg.Connection, runs: int, timeout: float = 10.0) -> asyncpg.Record:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        n = await db.fetchval("SELECT count(*) FROM sync_job_runs WHERE status <> 'running'")
        if n >= runs or asyncio.get_running_loop().time() > deadline:
            return await db.fetchrow("SELECT * FROM sync_jobs")
        await asyncio.sleep(0.05)


async def test_gateway_runs_jobs_logs_their_calls_and_serves_the_admin_api(
    db: asyncpg.Connection,
    world: World,
    server: TestServer,
    settings_factory: Callable[..., Any],
    aiohttp_client: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made = await make_tenant(db, "Hotel Jobs")
    tenant, admin, viewer = made["tenant"].id, made["admin"], made["viewer"]
    await outbound_world(db, tenant, world, 3)
    monkeypatch.setenv("RMS_TOKEN", TOKEN)
    job = job_config(server, tenant, "outbound")
    table = parse_routes(routes_yaml(str(server.make_url("")).rstrip("/")), "test-routes.yaml")
    settings = settings_factory(webhook_allow_private=True)
    gw = await aiohttp_client(create_app(settings, table, syncs=[job]))
    row = await _wait_job(db, 1)  # due at start: the background loop runs it
    assert row["cursor"] == "3" and row["last_status"] == "succeeded"
    # Every request the job made is in api_logs under the job's name, secrets redacted.
    logs = await wait_for_rows(db, 2, where="route = 'rates-out'")
    assert [(r["method"], r["status"], r["upstream"]) for r in logs[:2]] == [
        ("GET", 200, "pms"),
        ("POST", 200, "127.0.0.1"),
    ]
    assert {str(r["tenant_id"]) for r in logs} == {str(tenant)}
    assert {r["external_system"] for r in logs} == {SYSTEM}
    assert TOKEN not in str(logs[1]["request_headers"])
    assert logs[1]["request_body"]["items"][0]["id"] == "R0"
    # The admin API: jobs with cursor and counts, history, run now, pause and resume.
    resp = await gw.get("/admin/v1/sync/jobs", headers=viewer)
    (listed,) = (await resp.json())["items"]
    assert (listed["name"], listed["cursor"], listed["auth"]) == ("rates-out", "3", True)
    assert listed["last_run"]["items_synced"] == 3 and "auth_secret" not in listed
    assert (await gw.post("/admin/v1/sync/jobs/rates-out/run", headers=viewer)).status == 403
    resp = await gw.post("/admin/v1/sync/jobs/rates-out/pause", headers=admin)
    assert resp.status == 200 and (await resp.json())["paused"] is True
    rate = await add_mapping(db, tenant, "rate", "R3")
    world.changes.append({"id": str(rate), "room_type_id": None, "version": 2})
    assert (await gw.post("/admin/v1/sync/jobs/rates-out/run", headers=admin)).status == 202
    await asyncio.sleep(1.5)
    assert await db.fetchval("SELECT count(*) FROM sync_job_runs") == 1  # paused
    assert (await gw.post("/admin/v1/sync/jobs/rates-out/resume", headers=admin)).status == 200
    row = await _wait_job(db, 2)
    assert row["cursor"] == "4" and row["run_requested_at"] is None
    resp = await gw.get("/admin/v1/sync/jobs/rates-out/runs?limit=1", headers=viewer)
    page = await resp.json()
    assert page["items"][0]["trigger"] == "manual" and page["items"][0]["items_synced"] == 1
    resp = await gw.get(
        f"/admin/v1/sync/jobs/rates-out/runs?cursor={page['next_cursor']}", headers=viewer
    )
    assert [r["trigger"] for r in (await resp.json())["items"]] == ["schedule"]
    assert (await gw.get("/admin/v1/sync/jobs/nope", headers=viewer)).status == 404
    text = await (await gw.get("/metrics")).text()
    assert 'gateway_sync_job_runs_total{job="rates-out",status="succeeded"}' in text
    assert 'gateway_sync_job_items_total{job="rates-out",outcome="synced"}' in text


async def test_a_job_of_an_unknown_tenant_is_refused_at_start(
    world: World,
    server: TestServer,
    settings_factory: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RMS_TOKEN", TOKEN)
    job = job_config(server, uuid.uuid4(), "outbound")
    table = parse_routes(routes_yaml(str(server.make_url("")).rstrip("/")), "test-routes.yaml")
    runner = web.AppRunner(create_app(settings_factory(), table, syncs=[job]))
    with pytest.raises(ConfigError) as exc:
        await runner.setup()  # the start-up steps: registration refuses before the rest
    assert "test.yaml: syncs[0] 'rates-out': field 'tenant': no tenant" in str(exc.value)
    await runner.cleanup()


@pytest.mark.slow
async def test_a_runner_process_killed_mid_run_is_resumed_by_another(
    db: asyncpg.Connection,
    database_url: str,
    tenant: uuid.UUID,
    world: World,
    server: TestServer,
    make_runner: Callable[..., JobRunner],
) -> None:
    """As the in-process test above, with a real process and SIGKILL (no cleanup at all)."""
    await outbound_world(db, tenant, world, 6)
    job, clock = job_config(server, tenant, "outbound"), Clock()
    survivor = make_runner([job], clock, lease=1.0)
    await survivor.register(ENV)
    first_hold, second_hold = asyncio.Event(), asyncio.Event()
    world.hold = first_hold
    base = str(server.make_url("")).rstrip("/")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.sync_job_worker",
        database_url,
        base,
        str(tenant),
        BOX_KEY.decode(),
        cwd=Path(__file__).parents[2],
    )
    try:
        await asyncio.wait_for(world.arrived.wait(), 30)
        world.arrived.clear()
        world.hold = second_hold
        first_hold.set()
        await asyncio.wait_for(world.arrived.wait(), 10)  # batch 2 is at the partner
        proc.kill()
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert await db.fetchval("SELECT cursor FROM sync_jobs") == "2"
    assert await db.fetchval("SELECT lease_owner FROM sync_jobs") is not None  # left behind
    assert await survivor.run_due() == 0
    world.hold = None
    second_hold.set()
    await asyncio.sleep(1.2)  # the dead runner's lease expires
    assert await survivor.run_due() == 1
    counts = Counter(i["id"] for b in world.received for i in b)
    assert sorted(counts) == [f"R{i}" for i in range(6)]
    assert {k for k, n in counts.items() if n > 1} <= {"R2", "R3"}
    runs = await db.fetch("SELECT status FROM sync_job_runs ORDER BY started_at")
    assert [r["status"] for r in runs] == ["abandoned", "succeeded"]
    rows = await statuses(db)
    assert len(rows) == 6 and {r["status"] for r in rows} == {"succeeded"}
