"""Proxy benchmark: CPU per call and requests/s of the same upstream direct, through nginx,
through a bare aiohttp pass-through, through that pass-through plus queued COPY logging
into the gateway's own api_logs (bench/bare_logging_proxy.py, what logging alone costs),
and through the gateway with full capture, in alternating rounds.

    python bench/run.py [--rounds 8] [--duration 5] [--warmup 3] [--connections 50]
                        [--threads 2] [--workers 2] [--targets NAME ...]

Every target runs at once on 127.0.0.1 behind the same wrk parameters. A round runs wrk
against each target in turn, forwards in even rounds and backwards in odd ones (A B C,
C B A, ...: every target is as often early as late in a round), and reads each target's
CPU time (and PostgreSQL's) from /proc around its run. Printed per target: the median
over rounds of CPU per request, with its spread (lowest-highest), of PostgreSQL's CPU per
request, requests/s and latency; then, per round, the gateway's CPU per request over the
bare pass-through's in the same round, and the median of those ratios (the machine's noise
paired away, as bench/ab.py does for two gateways).

`--workers N` (default 2; 1 skips) also runs `gateway serve --workers N` once, for
information. The logging reference and the gateway each write to their own database of one
embedded PostgreSQL, migrated by the gateway; rows are counted at the end against the calls
the gateway counted (0 lost).

Everything listens on 127.0.0.1, every run is bounded by --duration, and only processes
started here are stopped. Needs wrk and nginx (apt-get install -y wrk nginx; installed
here if missing and running as root). See bench/RESULTS.md for recorded results.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import (  # noqa: E402  (bench/ is no package: harness.py is found through sys.path)
    PATH,
    PY,
    CpuMeter,
    Procs,
    bench_routes,
    count_rows,
    ensure_tools,
    free_port,
    metric_sum,
    prepare_database,
    start_cluster,
    stop_embedded,
    wait_http,
    wrk,
)

GATEWAY = "gateway, full capture"
BARE = "bare aiohttp pass-through"
LOGGING = "bare + queued COPY logging"


@dataclass
class Target:
    """One target: its URL, its own processes (CPU measured), what each round saw."""

    name: str
    url: str
    pids: list[int]
    rounds: list[dict[str, float]] = field(default_factory=list)


def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    """``median (lowest-highest)``."""
    return (
        f"{fmt.format(statistics.median(values))} "
        f"({fmt.format(min(values))}-{fmt.format(max(values))})"
    )


def start_nginx(procs: Procs, tmp: Path, up_port: int) -> tuple[int, int]:
    """nginx (bench/nginx.conf.template) in front of the upstream: (port, master pid)."""
    port = free_port()
    prefix = tmp / "nginx"
    prefix.mkdir()
    conf = (HERE / "nginx.conf.template").read_text()
    for k, v in {
        "prefix": str(prefix),
        "upstream_port": str(up_port),
        "listen_port": str(port),
    }.items():
        conf = conf.replace("{" + k + "}", v)
    (prefix / "nginx.conf").write_text(conf)
    proc = procs.start(["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf")])
    wait_http(f"http://127.0.0.1:{port}/")
    return port, proc.pid


def measure_round(
    targets: list[Target], args: argparse.Namespace, token: str, groups: dict[str, list[int]]
) -> None:
    """One wrk run per target, in the order given; CPU per request appended to each."""
    for t in targets:
        with CpuMeter({"proxy": t.pids, **groups}) as cpu:
            res = wrk(t.url, args, args.duration, token)
        done = max(res["requests"], 1)
        res.update(
            proxy_us=cpu.used["proxy"] / done * 1e6,
            pg_us=cpu.used["postgres"] / done * 1e6,
            machine=cpu.machine,
        )
        t.rounds.append(res)


def report(targets: list[Target]) -> None:
    print(
        f"\n{'target':28s} {'proxy CPU/request, us':>24s} {'PG CPU/request, us':>20s} "
        f"{'req/s':>20s} {'p50 ms':>8s} {'p99 ms':>8s} {'non-2xx':>8s}"
    )
    for t in targets:
        r = t.rounds
        proxy = spread([x["proxy_us"] for x in r]) if t.pids else "-"
        pg = spread([x["pg_us"] for x in r])
        print(
            f"{t.name:28s} {proxy:>24s} {pg:>20s} {spread([x['rps'] for x in r]):>20s} "
            f"{statistics.median(x['p50'] for x in r):8.2f} "
            f"{statistics.median(x['p99'] for x in r):8.2f} {sum(x['non2xx'] for x in r):8.0f}"
        )
    print(
        "(median over rounds, lowest-highest in brackets; proxy / PG CPU: user+system CPU of "
        "the proxy's processes / of PostgreSQL per completed request)"
    )
    by_name = {t.name: t for t in targets}
    bare = by_name.get(BARE)
    for name in (LOGGING, GATEWAY):
        other = by_name.get(name)
        if bare is None or other is None:
            continue
        ratios = [
            o["proxy_us"] / b["proxy_us"] for o, b in zip(other.rounds, bare.rounds, strict=True)
        ]
        print(
            f"{name} / {BARE}, CPU per request, per round: "
            f"{' '.join(f'{x:.2f}' for x in ratios)}; median {spread(ratios, '{:.2f}')}"
        )


def run(args: argparse.Namespace) -> None:
    ensure_tools()
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    try:
        up_port = free_port()
        upstream = procs.start([PY, str(HERE / "upstream.py"), str(up_port)])
        up_url = f"http://127.0.0.1:{up_port}"
        wait_http(up_url + "/")
        cluster = start_cluster(tmp)
        gw_db = prepare_database(cluster, "bench_gateway")
        log_dsn = prepare_database(cluster, "bench_logging").dsn
        routes = bench_routes(tmp, up_port)

        bare_port, log_port, gw_port = free_port(), free_port(), free_port()
        bare = procs.start([PY, str(HERE / "bare_proxy.py"), str(bare_port), up_url])
        logging_proxy = procs.start(
            [PY, str(HERE / "bare_logging_proxy.py"), str(log_port), up_url, log_dsn]
        )
        nginx_port, nginx_pid = start_nginx(procs, tmp, up_port)
        gw = procs.start(
            [PY, "-m", "gateway", "serve", "--routes", str(routes), "--port", str(gw_port)],
            env=gw_db.env,
        )
        gw_base = f"http://127.0.0.1:{gw_port}"
        for url in (f"http://127.0.0.1:{bare_port}/", f"http://127.0.0.1:{log_port}/"):
            wait_http(url)
        wait_http(gw_base + "/healthz")

        every = [
            Target("direct upstream", f"{up_url}{PATH}", []),
            Target("nginx", f"http://127.0.0.1:{nginx_port}{PATH}", [nginx_pid]),
            Target(BARE, f"http://127.0.0.1:{bare_port}{PATH}", [bare.pid]),
            Target(LOGGING, f"http://127.0.0.1:{log_port}{PATH}", [logging_proxy.pid]),
            Target(GATEWAY, f"{gw_base}{PATH}", [gw.pid]),
        ]
        targets = [t for t in every if not args.targets or any(s in t.name for s in args.targets)]
        for t in targets:
            wrk(t.url, args, args.warmup, gw_db.token)
        groups = {"upstream": [upstream.pid], "postgres": [cluster.postmaster]}
        for i in range(args.rounds):
            order = targets if i % 2 == 0 else targets[::-1]
            measure_round(order, args, gw_db.token, groups)
            print(
                f"round {i + 1:2d}: "
                + "  ".join(f"{t.name} {t.rounds[-1]['proxy_us']:.0f} us" for t in targets),
                flush=True,
            )
        report(targets)

        proxied = metric_sum(gw_base, "gateway_requests_total")
        code = procs.stop(gw)  # SIGTERM: the gateway drains its log queue before exiting
        rows = asyncio.run(count_rows(gw_db.dsn))
        print(
            f"gateway api_logs rows: {rows}; calls the gateway counted: {proxied:.0f}; "
            f"rows lost: {max(0, int(proxied) - rows)}; gateway exit code {code}"
        )
        if args.workers > 1:
            workers_run(args, procs, gw_db.env, routes, gw_db.token, rows, gw_db.dsn)
    finally:
        procs.stop_all()
        stop_embedded(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def workers_run(
    args: argparse.Namespace,
    procs: Procs,
    env: dict[str, str],
    routes: Path,
    token: str,
    rows_before: int,
    dsn: str,
) -> None:
    """The same gateway as N SO_REUSEPORT worker processes (the machine's other core):
    for information — the rounds above compare one process with one process."""
    port = free_port()
    cmd = [PY, "-m", "gateway", "serve", "--routes", str(routes), "--port", str(port)]
    sup = procs.start([*cmd, "--workers", str(args.workers)], env=env)
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/healthz")
    time.sleep(2)  # every worker listening
    warm = wrk(base + PATH, args, args.warmup, token)
    res = wrk(base + PATH, args, args.duration, token)
    proxied = metric_sum(base, "gateway_requests_total")
    code = procs.stop(sup)
    rows = asyncio.run(count_rows(dsn)) - rows_before
    print(
        f"\ngateway --workers {args.workers}: {res['rps']:.0f} req/s  p50 {res['p50']:.2f} ms  "
        f"p99 {res['p99']:.2f} ms"
    )
    print(
        f"  api_logs rows {rows}; calls counted {proxied:.0f}; completed by wrk "
        f"{int(warm['requests'] + res['requests'])}; rows lost {max(0, int(proxied) - rows)}; "
        f"exit code {code}"
    )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=8, help="alternating rounds")
    p.add_argument("--duration", type=int, default=5, help="seconds of wrk per target a round")
    p.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per target first")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--workers", type=int, default=2, help="also measure `gateway serve --workers N` (1: skip)"
    )
    p.add_argument(
        "--targets", nargs="+", default=[], help="substrings of target names (default: all)"
    )
    run(p.parse_args())


if __name__ == "__main__":
    main()
