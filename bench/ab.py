"""Two gateways side by side on one database, in alternating rounds: the CPU one costs per
call against the other, with the machine's noise paired away.

    python bench/ab.py --tree-b /path/to/other/checkout [--rounds 16] [--duration 5]
    python bench/ab.py --env-b GATEWAY_LOG_WAL=false            # one setting's cost

A is this checkout; B is ``--tree-b`` (another checkout of the gateway, e.g. a
``git worktree add --detach ../before <commit>``) and/or this checkout with ``--env-b``
settings. Both serve the bench routes (bench/routes.bench.yaml) on one embedded
PostgreSQL and one upstream (bench/upstream.py). Each round runs wrk against A then B, or
B then A (A B, B A, ...), and reads each gateway's CPU time from /proc around its run.
Printed: per round CPU per request and requests/s, medians and spread, and the per-round
ratio A/B with its median. Rows are counted at the end (every call has its api_logs row).

The two trees must share the database schema (their migrations): B runs `gateway serve`
from its own directory, so its ``gateway`` package is imported from there.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import (  # noqa: E402  (bench/ is no package: harness.py is found through sys.path)
    PATH,
    PY,
    CpuMeter,
    Procs,
    count_rows,
    ensure_tools,
    free_port,
    metric_sum,
    prepare_gateway,
    stop_embedded,
    wait_http,
    wrk,
)


def parse_env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            sys.exit(f"bench/ab.py: --env-b wants NAME=VALUE, got {pair!r}")
        out[name] = value
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tree-b", type=Path, help="checkout B runs from (default: this one)")
    p.add_argument("--env-b", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--rounds", type=int, default=16, help="alternating rounds (A B, B A, ...)")
    p.add_argument("--duration", type=int, default=5, help="seconds of wrk per gateway a round")
    p.add_argument("--warmup", type=int, default=2, help="seconds of wrk per gateway first")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    root = HERE.parent
    tree_b = (args.tree_b or root).resolve()
    if not (tree_b / "gateway" / "__main__.py").exists():
        sys.exit(f"bench/ab.py: {tree_b} holds no gateway/ package")
    env_b = parse_env(args.env_b)
    if tree_b == root and not env_b:
        sys.exit("bench/ab.py: B equals A; give --tree-b and/or --env-b")

    ensure_tools()
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-ab-"))
    try:
        up_port = free_port()
        upstream = procs.start([PY, str(HERE / "upstream.py"), str(up_port)])
        wait_http(f"http://127.0.0.1:{up_port}/")
        env, dsn, token, routes = prepare_gateway(tmp, up_port, "Bench Hotel")
        sides = {"A": (root, {}), "B": (tree_b, env_b)}
        gateways = {}
        for name, (tree, extra) in sides.items():
            port = free_port()
            side_env = {**env, **extra, "PYTHONPATH": str(tree)}
            cmd = [PY, "-m", "gateway", "serve", "--routes", str(routes), "--port", str(port)]
            proc = procs.start(cmd, env=side_env, cwd=str(tree))
            wait_http(f"http://127.0.0.1:{port}/healthz")
            gateways[name] = (f"http://127.0.0.1:{port}{PATH}", proc)
            wrk(gateways[name][0], args, args.warmup, token)
        print(f"A: {root}\nB: {tree_b} {env_b or ''}", flush=True)
        seen: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
        for i in range(args.rounds):
            for name in ("A", "B") if i % 2 == 0 else ("B", "A"):
                url, proc = gateways[name]
                with CpuMeter({"gw": [proc.pid], "up": [upstream.pid]}) as cpu:
                    res = wrk(url, args, args.duration, token)
                us = cpu.used["gw"] / res["requests"] * 1e6
                seen[name].append((us, res["rps"]))
                print(
                    f"round {i + 1:2d} {name} {us:6.1f} us CPU/request {res['rps']:7.0f} req/s "
                    f"non-2xx {res['non2xx']}",
                    flush=True,
                )
        for name, values in seen.items():
            cpu_us = [v[0] for v in values]
            rps = [v[1] for v in values]
            print(
                f"{name} CPU/request median {statistics.median(cpu_us):.1f} us "
                f"(spread {min(cpu_us):.1f}-{max(cpu_us):.1f}); req/s median "
                f"{statistics.median(rps):.0f} ({min(rps):.0f}-{max(rps):.0f})"
            )
        ratios = [a[0] / b[0] for a, b in zip(seen["A"], seen["B"], strict=True)]
        print(
            f"A / B CPU per request, per round: {' '.join(f'{r:.3f}' for r in ratios)}; "
            f"median {statistics.median(ratios):.3f} "
            f"(spread {min(ratios):.3f}-{max(ratios):.3f})"
        )
        calls = sum(
            metric_sum(url.rsplit("/api", 1)[0], "gateway_requests_total")
            for url, _ in gateways.values()
        )
        codes = [procs.stop(proc) for _, proc in gateways.values()]
        rows = asyncio.run(count_rows(dsn))
        print(
            f"api_logs rows {rows}; calls counted {calls:.0f}; rows lost "
            f"{max(0, int(calls) - rows)}; exit codes {codes}"
        )
    finally:
        procs.stop_all()
        stop_embedded(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
