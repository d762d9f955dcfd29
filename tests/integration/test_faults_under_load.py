"""Faults under a steady request rate, with real gateway processes and real PostgreSQL:

* PostgreSQL stopped while a child gateway serves a steady rate (scaled down from 60 s at
  500 req/s, the full size ``bench/faults.py`` runs);
* the gateway SIGKILLed under load right after a database outage and restarted (journal
  and write-ahead log replayed once, no answered call without its row, in-flight webhook
  deliveries retried with the same webhook-id);
* SIGTERM under load (a slow call finishes, queues drain, exit 0 within the deadline);
* a TCP proxy between gateway and PostgreSQL dropping connections mid-COPY and right
  after the COMMIT that follows a COPY (nothing lost, nothing doubled);
* PostgreSQL frozen with SIGSTOP (it accepts connections and never answers): keyed calls
  keep their latency, an unknown key is refused with 503 within its deadline, SIGTERM
  ends the process within its budget, and every answered call's row arrives afterwards.

Every process and server is started here and ended here; only 127.0.0.1 is used.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from cryptography.fernet import Fernet

from gateway.auth import keys
from gateway.db.pool import init_connection
from gateway.shutdown import MARGIN
from tests.conftest import routes_yaml, throwaway_pgdata
from tests.fixture_types import AiohttpServer, SettingsFactory
from tests.integration.fault_helpers import (
    Frozen,
    GatewayProcess,
    LoadResult,
    PgProxy,
    log_counts,
    steady_load,
    via_proxy,
)
from tests.integration.test_faults import StoppablePostgres
from tests.integration.upstream_app import make_upstream_app
from tests.integration.webhook_helpers import Receiver, make_tenant, wait_for

pytestmark = pytest.mark.slow

RATE = 150.0  # requests per second in the suite (bench/faults.py: 500)
OUTAGE = 6.0  # seconds PostgreSQL stays stopped in the suite (bench: 60)
FLUSH_INTERVAL = 0.5  # GATEWAY_LOG_FLUSH_INTERVAL of the child gateways (the default)


def gateway_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "GATEWAY_LOG_FLUSH_INTERVAL": str(FLUSH_INTERVAL),
        "GATEWAY_DB_RETRY_INTERVAL": "0.5",
        "GATEWAY_SHUTDOWN_TIMEOUT": "5",
        "GATEWAY_WEBHOOK_ALLOW_PRIVATE": "true",
        "GATEWAY_WEBHOOK_ALLOW_HTTP": "true",
        "GATEWAY_WEBHOOK_RETRY_SCHEDULE": "0,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5",
        "GATEWAY_WEBHOOK_POLL_INTERVAL": "0.2",
        "GATEWAY_WEBHOOK_LEASE_MARGIN": "1",
        **extra,
    }


@pytest.fixture
async def upstream_url(aiohttp_server: AiohttpServer) -> str:
    server: TestServer = await aiohttp_server(make_upstream_app(), host="127.0.0.1")
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
def routes_file(tmp_path: Path, upstream_url: str) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(routes_yaml(upstream_url))
    return path


@pytest.fixture
def processes() -> Iterator[list[GatewayProcess]]:
    made: list[GatewayProcess] = []
    yield made
    for p in made:
        p.kill()


@pytest.fixture
def own_postgres() -> Iterator[StoppablePostgres]:
    if os.environ.get("GATEWAY_TEST_DATABASE_URL"):
        pytest.skip("stopping the database needs the embedded server")
    pg = StoppablePostgres(throwaway_pgdata())
    yield pg
    pg.start()  # leave it running for the atexit hook to stop cleanly


@pytest.fixture
async def pg_proxy(database_url: str) -> AsyncIterator[PgProxy]:
    proxy = PgProxy(database_url)
    await proxy.start()
    yield proxy
    await proxy.close()


async def receiver(aiohttp_server: AiohttpServer) -> Receiver:
    rec = Receiver()
    server = await aiohttp_server(rec.app(), host="127.0.0.1")
    rec.url = str(server.make_url("/hooks"))
    return rec


async def subscribe(base: str, admin: dict[str, str], url: str, **fields: Any) -> None:
    body = {"name": "faults", "url": url, "event_types": ["*"], **fields}
    async with (
        ClientSession() as http,
        http.post(base + "/admin/v1/webhooks/subscriptions", json=body, headers=admin) as r,
    ):
        assert r.status == 201, await r.text()


async def outbox(conn: asyncpg.Connection, tenant_id: Any, count: int, tag: str) -> None:
    await conn.execute(
        """INSERT INTO webhook_events (tenant_id, event_type, payload)
           SELECT $1, 'reservation.created', jsonb_build_object('tag', $3::text, 'n', g)
           FROM generate_series(1, $2) AS g""",
        tenant_id,
        count,
        tag,
    )


async def logged_ids(conn: asyncpg.Connection, like: str) -> set[str]:
    rows = await conn.fetch("SELECT request_id FROM api_logs WHERE request_id LIKE $1", like)
    return {r["request_id"] for r in rows}


async def readiness(base: str, until: asyncio.Event, seen: list[tuple[float, int]]) -> None:
    """Poll /readyz every 0.2 s, recording (time, status)."""
    async with ClientSession() as http:
        while not until.is_set():
            try:
                async with http.get(base + "/readyz") as r:
                    seen.append((time.monotonic(), r.status))
            except OSError:
                seen.append((time.monotonic(), 0))
            await asyncio.sleep(0.2)


# -- 1. PostgreSQL stopped under a steady rate --------------------------------------------


async def test_postgres_stopped_under_steady_load_loses_and_doubles_nothing(
    own_postgres: StoppablePostgres,
    routes_file: Path,
    tmp_path: Path,
    processes: list[GatewayProcess],
    aiohttp_server: AiohttpServer,
) -> None:
    gw = GatewayProcess(tmp_path, routes_file, gateway_env(own_postgres.dsn, tmp_path / "d"))
    processes.append(gw)
    base = await gw.start()
    conn = await asyncpg.connect(own_postgres.dsn)
    await init_connection(conn)
    rec = await receiver(aiohttp_server)
    tenant = await make_tenant(conn, "Hotel Outage")
    await subscribe(base, tenant["admin"], rec.url, max_concurrency=50)
    await conn.close()

    loop = asyncio.get_running_loop()
    done, ready_seen = asyncio.Event(), list[tuple[float, int]]()
    poller = asyncio.create_task(readiness(base, done, ready_seen))
    load = LoadResult()
    duration = OUTAGE + 8.0
    traffic = asyncio.create_task(steady_load(base, RATE, duration, "pg", result=load))
    await asyncio.sleep(2.0)
    await loop.run_in_executor(None, own_postgres.stop)
    stopped_at = time.monotonic()
    await asyncio.sleep(OUTAGE)
    restarting_at = time.monotonic()  # /readyz may say 200 before start() returns
    await loop.run_in_executor(None, own_postgres.start)
    restarted_at = time.monotonic()
    await traffic
    await asyncio.sleep(1.0)
    done.set()
    await poller

    # The proxy kept answering: every request of the run got its 200.
    assert load.histogram() == {200: load.sent}, load.histogram()
    assert load.sent >= RATE * duration * 0.9
    # /readyz said so during the outage, and recovered after it.
    during = [s for t, s in ready_seen if stopped_at + 1 < t < restarting_at]
    after = [s for t, s in ready_seen if t > restarted_at + 3]
    assert during and set(during) == {503}, ready_seen
    assert after and after[-1] == 200, ready_seen

    conn = await asyncpg.connect(own_postgres.dsn)
    await init_connection(conn)
    try:

        async def all_logged() -> bool:
            return await log_counts(conn, "pg-%") >= (load.sent, 0)

        await wait_for(all_logged, timeout=30, step=0.5)
        total, distinct = await log_counts(conn, "pg-%")
        assert (total, distinct) == (load.sent, load.sent)  # every row exactly once
        assert await logged_ids(conn, "pg-%") == set(load.statuses)
        batches = await conn.fetchval("SELECT sum(row_count) FROM api_log_batches")
        assert batches == await conn.fetchval("SELECT count(*) FROM api_logs")
        # Webhook deliveries resume: events written after the restart are delivered.
        await outbox(conn, tenant["tenant"].id, 20, "after")

        async def delivered() -> bool:
            n = await conn.fetchval(
                "SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'"
            )
            return bool(n == 20)

        await wait_for(delivered, timeout=20, step=0.2)
        assert len(set(rec.ids())) == 20
    finally:
        await conn.close()
    output = gw.output()
    assert "database unreachable" in output  # the writer journaled during the outage
    gw.signal(signal.SIGTERM)
    assert await gw.wait(15) == 0


# -- 1b. PostgreSQL frozen (hangs) ---------------------------------------------------------


async def test_a_hung_database_stalls_no_keyed_call_and_no_shutdown(
    own_postgres: StoppablePostgres,
    routes_file: Path,
    tmp_path: Path,
    processes: list[GatewayProcess],
) -> None:
    """SIGSTOP on every PostgreSQL process: the server accepts connections and never
    answers. Calls with a known key keep answering from the key cache (its entries expire
    during the freeze and are refreshed behind the calls); a key never seen gets a JSON
    503 within the request deadline; SIGTERM during the freeze ends the process within
    GATEWAY_SHUTDOWN_TIMEOUT plus its margin; after the thaw and a restart every answered
    call is in api_logs exactly once."""
    timeout = 3.0
    env = gateway_env(
        own_postgres.dsn,
        tmp_path / "d",
        GATEWAY_SHUTDOWN_TIMEOUT=str(timeout),
        GATEWAY_API_KEY_CACHE_TTL="0.5",
        GATEWAY_DB_REQUEST_TIMEOUT="1",
    )
    gw = GatewayProcess(tmp_path, routes_file, env)
    processes.append(gw)
    base = await gw.start()
    conn = await asyncpg.connect(own_postgres.dsn)
    await init_connection(conn)
    tenant = await make_tenant(conn, "Hotel Frozen")
    _, unseen = await keys.create_key(
        conn, tenant["tenant"].id, "partner", actor="test", external_system="booking_engine"
    )
    await conn.close()
    known = tenant["partner"]

    def keyed(i: int) -> str:
        return f"/secure/echo/{i}"

    warm = await steady_load(base, 20, 0.5, "warm", path=keyed, headers=known)
    assert warm.histogram() == {200: warm.sent}
    with Frozen(Path(own_postgres.server.pgdata)):
        await asyncio.sleep(1.0)  # the known key's cache entry expires
        frozen = await steady_load(base, RATE, 3.0, "frozen", path=keyed, headers=known)
        async with ClientSession() as http:
            t0 = time.monotonic()
            async with http.get(
                base + "/secure/echo/x", headers={"Authorization": f"Bearer {unseen}"}
            ) as r:
                body = await r.json()
            refused_in = time.monotonic() - t0
        assert (r.status, body["code"]) == (503, "auth_unavailable"), body
        assert refused_in < 2.0, refused_in
        assert frozen.histogram() == {200: frozen.sent}, frozen.histogram()
        # No call waited on the frozen database: that takes the 1 s request deadline
        # (GATEWAY_DB_REQUEST_TIMEOUT) at least; below it is the machine's own latency.
        assert frozen.percentile(0.99) < 1.0, frozen.percentile(0.99)

        gw.signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = await gw.wait(timeout + MARGIN + 10)
        took = time.monotonic() - signalled
        output = gw.output()
        assert took < timeout + MARGIN + 1.0, (took, output[-3000:])
        assert code == 0, output[-3000:]  # it finished by itself, not by the watchdog
        assert "Traceback" not in output, output[-3000:]

    await gw.start()  # the rows left in the journal and write-ahead log are replayed
    conn = await asyncpg.connect(own_postgres.dsn)
    try:
        answered = warm.answered() | frozen.answered()

        async def all_logged() -> bool:
            return answered <= await logged_ids(conn, "%")

        await wait_for(all_logged, timeout=20, step=0.3)
        for tag, load in (("warm", warm), ("frozen", frozen)):
            assert await log_counts(conn, f"{tag}-%") == (load.sent, load.sent), tag
    finally:
        await conn.close()
    print(
        f"frozen database: {frozen.sent} keyed calls, p99 {frozen.percentile(0.99) * 1000:.0f}"
        f" ms; unknown key refused in {refused_in:.2f} s; SIGTERM exit {code} in {took:.2f} s"
    )
    gw.signal(signal.SIGTERM)
    assert await gw.wait(15) == 0


# -- 2. SIGKILL under load -----------------------------------------------------------------


async def test_sigkill_under_load_loses_no_answered_call(
    pg_proxy: PgProxy,
    database_url: str,
    routes_file: Path,
    tmp_path: Path,
    processes: list[GatewayProcess],
    aiohttp_server: AiohttpServer,
) -> None:
    """Phases: A (database up), B (database unreachable: rows journaled), C (database
    back, the journal being replayed, rows in memory) and SIGKILL during C. After a
    restart every A and B row is there exactly once, and so is every C call that was
    answered: its row was in the write-ahead log when the answer left."""
    env = gateway_env(via_proxy(database_url, pg_proxy.port), tmp_path / "d")
    gw = GatewayProcess(tmp_path, routes_file, env)
    processes.append(gw)
    base = await gw.start()
    conn = await asyncpg.connect(database_url)
    await init_connection(conn)
    try:
        rec = await receiver(aiohttp_server)
        hang = asyncio.Event()

        async def answer(request: web.Request, n: int) -> web.StreamResponse:
            await hang.wait()  # deliveries stay in flight until the process is gone
            return web.Response(status=200)

        rec.behave = answer
        tenant = await make_tenant(conn, "Hotel Kill")
        await subscribe(
            base, tenant["admin"], rec.url, max_concurrency=10, retry_policy={"timeout": 3}
        )
        await outbox(conn, tenant["tenant"].id, 5, "kill")
        await wait_for(lambda: rec.in_flight == 5, timeout=10)
        first_ids = set(rec.ids())

        a = await steady_load(base, RATE, 2.0, "A")
        await asyncio.sleep(FLUSH_INTERVAL * 3)
        pg_proxy.down = True
        pg_proxy.drop_all()
        b = await steady_load(base, RATE, 2.0, "B")
        await asyncio.sleep(FLUSH_INTERVAL * 3)  # B rows flushed: to the journal
        journal = tmp_path / "d" / "journal"
        assert list(journal.glob("*.journal")), "rows of phase B should be journaled"
        pg_proxy.down = False
        await asyncio.sleep(1.5)  # the writer's probe finds the database again
        stop = asyncio.Event()
        c = LoadResult()
        traffic = asyncio.create_task(steady_load(base, RATE, 10, "C", stop=stop, result=c))
        await asyncio.sleep(1.3)
        gw.signal(signal.SIGKILL)
        killed_at_sent = c.sent
        assert await gw.wait(10) == -signal.SIGKILL
        stop.set()
        await traffic

        hang.set()
        await gw.start()  # the journal left behind is replayed at start

        async def replayed() -> bool:
            n, _ = await log_counts(conn, "B-%")
            return n >= len(b.answered())

        await wait_for(replayed, timeout=20, step=0.2)
        await asyncio.sleep(FLUSH_INTERVAL * 3)
        for phase, load in (("A", a), ("B", b)):
            total, distinct = await log_counts(conn, f"{phase}-%")
            assert load.histogram() == {200: load.sent}, (phase, load.histogram())
            assert (total, distinct) == (load.sent, load.sent), phase  # exactly once
        assert not list(journal.glob("*.journal"))
        total, distinct = await log_counts(conn, "C-%")
        assert total == distinct  # never doubled
        answered_c = c.answered()
        lost = answered_c - await logged_ids(conn, "C-%")
        # No loss window: every answered call's row was in the write-ahead log.
        print(
            f"SIGKILL: {len(lost)} of {len(answered_c)} answered phase-C rows lost "
            f"(sent {killed_at_sent} before the kill)"
        )
        assert not lost, sorted(lost)[:10]

        # In-flight webhook deliveries: retried after the lease expired, same webhook-ids.
        async def redelivered() -> bool:
            n = await conn.fetchval(
                "SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'"
            )
            return bool(n == 5)

        await wait_for(redelivered, timeout=30, step=0.2)
        retried = [call.headers["webhook-id"] for call in rec.calls[5:]]
        assert set(retried) == first_ids and len(first_ids) == 5
    finally:
        await conn.close()
    gw.signal(signal.SIGTERM)
    assert await gw.wait(15) == 0


# -- 3. SIGTERM under load ----------------------------------------------------------------


async def test_sigterm_under_load_finishes_in_flight_calls_and_drains(
    database_url: str, routes_file: Path, tmp_path: Path, processes: list[GatewayProcess]
) -> None:
    deadline = 5.0  # GATEWAY_SHUTDOWN_TIMEOUT
    env = gateway_env(database_url, tmp_path / "d", GATEWAY_LOG_FLUSH_INTERVAL="30")
    env["GATEWAY_LOG_BATCH_SIZE"] = "100000"  # every row waits in memory until the drain
    gw = GatewayProcess(tmp_path, routes_file, env)
    processes.append(gw)
    base = await gw.start()
    stop = asyncio.Event()
    load = LoadResult()
    traffic = asyncio.create_task(steady_load(base, RATE, 30, "T", stop=stop, result=load))
    await asyncio.sleep(1.5)
    async with ClientSession() as http:
        slow = asyncio.create_task(
            http.get(base + "/api/slow?delay=1.2", headers={"X-Request-Id": "slow-call"})
        )
        await asyncio.sleep(0.3)  # the slow call is at the upstream
        gw.signal(signal.SIGTERM)
        signalled = time.monotonic()
        resp = await slow
        assert resp.status == 200  # finished although the signal came during it
        # Every call sent before the signal was answered (a margin for bytes in flight).
        before = load.started_before(signalled - 0.1)
        assert before and before <= load.answered(), load.histogram()
        assert (await resp.json()) == {"slow": True}
        code = await gw.wait(deadline + 10)
        took = time.monotonic() - signalled
    stop.set()
    await traffic
    output = gw.output()
    assert code == 0, output[-2000:]
    assert took < deadline + 3, took  # in-flight grace, drain, exit within the deadline
    conn = await asyncpg.connect(database_url)
    try:
        logged = await logged_ids(conn, "T-%")
        assert load.answered() <= logged  # every answered call's row was drained
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM api_logs WHERE request_id = 'slow-call' AND status = 200"
            )
            == 1
        )
    finally:
        await conn.close()
    assert ", 0 journaled, 0 dropped" in output
    print(
        f"SIGTERM: exit {code} {took:.2f} s after the signal; {len(load.answered())} calls "
        f"answered, {load.histogram()}"
    )


# -- 5. connections dropped mid-COPY ------------------------------------------------------


async def test_connections_dropped_mid_copy_lose_and_double_nothing(
    pg_proxy: PgProxy,
    database_url: str,
    settings_factory: SettingsFactory,
    aiohttp_server: AiohttpServer,
    upstream_url: str,
    db: asyncpg.Connection,
) -> None:
    from gateway.app import create_app
    from gateway.routes import parse_routes
    from gateway.settings import Secret

    settings = settings_factory(
        database_url=Secret(via_proxy(database_url, pg_proxy.port)),
        log_batch_size=40,
        log_flush_interval=0.05,
        db_retry_interval=0.1,
        webhook_delivery=False,
    )
    app = create_app(settings, parse_routes(routes_yaml(upstream_url)))
    server: TestServer = await aiohttp_server(app, host="127.0.0.1")
    base = str(server.make_url("")).rstrip("/")
    pg_proxy.plan = ["mid_copy", "at_commit"] * 4
    pg_proxy.every = 2
    load = await steady_load(base, 200, 6.0, "copy")
    assert load.histogram() == {200: load.sent}

    async def settled() -> bool:
        n, _ = await log_counts(db, "copy-%")
        return n >= load.sent and not list(settings.journal_dir.glob("*.journal"))

    await wait_for(settled, timeout=30, step=0.2)
    await asyncio.sleep(0.5)
    total, distinct = await log_counts(db, "copy-%")
    assert (total, distinct) == (load.sent, load.sent)  # nothing lost, nothing doubled
    assert pg_proxy.injected["mid_copy"] >= 2 and pg_proxy.injected["at_commit"] >= 2, (
        pg_proxy.injected
    )
    batches = await db.fetchval("SELECT sum(row_count) FROM api_log_batches")
    assert batches == total
    await server.close()
