"""``gateway serve --workers 2`` as a real process tree: the real CLI, a real upstream on
127.0.0.1, the test database. Both workers serve (per-process metric files of the worker
pids found in the process table), /metrics totals match the calls made whichever worker
answers the scrape, a killed worker is replaced, SIGTERM stops everything with exit 0 and
every call is in api_logs exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import multiprocess
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from gateway import workers
from tests.conftest import routes_yaml
from tests.integration.fault_helpers import free_port

CALLS = 40  # proxied calls per round, each on its own connection (spread by the kernel)
ROOT = Path(__file__).resolve().parents[2]


def children(parent: int) -> set[int]:
    """Pids whose parent is ``parent``, from /proc (the process table)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            out.add(int(entry.name))
    return out


def listening(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a socket listening on ``port`` (/proc/net/tcp + fds)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
            inodes.add(f"socket:[{fields[9]}]")
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd) in inodes:
                return True
        except OSError:
            continue
    return False


def requests_counted_by(metrics_dir: Path, pid: int) -> float:
    """gateway_requests_total as written by one worker process to its own metric file."""
    path = metrics_dir / f"counter_{pid}.db"
    if not path.exists():
        return 0.0
    store = MmapedDict(str(path), read_mode=True)  # type: ignore[no-untyped-call]
    try:
        total = 0.0
        for key, value, _ in store.read_all_values():  # type: ignore[no-untyped-call]
            if json.loads(key)[1] == "gateway_requests_total":
                total += value
        return total
    finally:
        store.close()  # type: ignore[no-untyped-call]


async def scrape_requests_total(http: aiohttp.ClientSession, base: str) -> float:
    async with http.get(f"{base}/metrics") as r:
        text = await r.text()
    for family in text_string_to_metric_families(text):
        if family.name == "gateway_requests":
            return sum(s.value for s in family.samples if s.name == "gateway_requests_total")
    return 0.0


async def wait_until(check: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def stop_tree(proc: subprocess.Popen[bytes]) -> None:
    """After a failed test: stop the supervisor, never leave its workers behind."""
    if proc.poll() is not None:
        return
    left = children(proc.pid)
    proc.terminate()
    try:
        await asyncio.to_thread(proc.wait, 30)
    except subprocess.TimeoutExpired:
        proc.kill()
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def call_round(base: str, tag: str) -> None:
    """CALLS proxied calls, each on a fresh connection so SO_REUSEPORT spreads them."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        for i in range(CALLS):
            async with http.get(f"{base}/api/echo/{tag}/{i}") as r:
                assert r.status == 200, await r.text()


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_two_workers_share_the_port_restart_and_stop_cleanly(
    upstream: TestServer, database_url: str, data_dir: Path, db: asyncpg.Connection
) -> None:
    routes = data_dir / "routes.yaml"
    routes.write_text(routes_yaml(str(upstream.make_url("")).rstrip("/")))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_SHUTDOWN_TIMEOUT": "5",
        "GATEWAY_LOG_FLUSH_INTERVAL": "0.05",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = (data_dir / "gateway.log").open("wb")
    argv = [sys.executable, "-m", "gateway", "serve", "--workers", "2", "--routes", str(routes)]
    proc = subprocess.Popen([*argv, "--port", str(port)], env=env, cwd=ROOT, stdout=log, stderr=log)
    try:
        await wait_until(lambda: len(children(proc.pid)) == 2, 60)
        first = children(proc.pid)
        await wait_until(lambda: all(listening(pid, port) for pid in first), 60)
        await call_round(base, "one")
        metrics_dir = data_dir / "metrics"
        # Workers tally calls in memory and write them to their metric files every
        # REFRESH_INTERVAL (gateway.metrics.Tally): the files catch up within a second.
        await wait_until(
            lambda: sum(requests_counted_by(metrics_dir, pid) for pid in first) == CALLS, 10
        )
        served = {pid: requests_counted_by(metrics_dir, pid) for pid in first}
        assert all(served.values()), f"a worker served nothing: {served}"
        assert sum(served.values()) == CALLS
        async with aiohttp.ClientSession() as http:
            for _ in range(6):  # whichever worker answers, the totals are everyone's
                assert await scrape_requests_total(http, base) == CALLS

        async def logged() -> bool:  # a SIGKILL loses what is still queued in memory
            return bool(await db.fetchval("SELECT count(*) FROM api_logs") == CALLS)

        await wait_until(logged)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        await wait_until(lambda: victim not in children(proc.pid))
        await wait_until(lambda: len(children(proc.pid)) == 2)
        (replacement,) = children(proc.pid) - first
        await wait_until(lambda: listening(replacement, port))
        await call_round(base, "two")
        await wait_until(lambda: requests_counted_by(metrics_dir, replacement) > 0, 10)
        async with aiohttp.ClientSession() as http:
            # The dead worker's counts stay in the totals (the live ones' within a second).

            async def all_counted() -> bool:
                return await scrape_requests_total(http, base) == 2 * CALLS

            await wait_until(all_counted, 10)

        workers = children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    finally:
        await stop_tree(proc)
        log.close()
    rows = await db.fetch("SELECT path, count(*) AS n FROM api_logs GROUP BY path")
    counts = {r["path"]: r["n"] for r in rows}
    expected = {f"/api/echo/{tag}/{i}" for tag in ("one", "two") for i in range(CALLS)}
    assert set(counts) == expected
    assert set(counts.values()) == {1}, "every call logged exactly once"


def test_multiprocess_metrics_merge_workers_and_forget_dead_ones(tmp_path: Path) -> None:
    """Two processes write metric files; a third merges them as /metrics does. A worker
    marked dead keeps its counts in the totals but leaves the live gauges."""
    write = textwrap.dedent(
        """
        import os, sys
        from gateway import metrics
        metrics.IN_FLIGHT.set_function(lambda: int(sys.argv[1]))  # a function-backed gauge
        metrics.refresh()
        metrics.REQUESTS.labels("r", "GET", "2xx").inc(int(sys.argv[1]))
        print(os.getpid())
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}

    def python(*args: str) -> bytes:
        """The output of ``python -c *args`` in the multiprocess-metrics environment."""
        run = subprocess.run(
            [sys.executable, "-c", *args], env=env, check=True, timeout=60, capture_output=True
        )
        return run.stdout

    pids = [int(python(write, n)) for n in "34"]
    read = "from gateway import metrics; print(metrics.exposition().decode())"

    def scrape() -> str:
        return python(read).decode()

    out = scrape()
    assert 'gateway_requests_total{method="GET",route="r",status_class="2xx"} 7.0' in out
    assert "gateway_requests_in_flight 7.0" in out  # livesum
    multiprocess.mark_process_dead(pids[0], str(tmp_path))  # type: ignore[no-untyped-call]
    out = scrape()
    assert 'gateway_requests_total{method="GET",route="r",status_class="2xx"} 7.0' in out
    assert "gateway_requests_in_flight 4.0" in out


def supervisor(tmp_path: Path, code: str, count: int = 2) -> workers.Supervisor:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    return workers.Supervisor([sys.executable, "-c", code], env, count, stop_timeout=10)


def test_supervisor_restarts_workers_that_exit_and_stops_cleanly(tmp_path: Path) -> None:
    marker = tmp_path / "starts"
    # Each start leaves a line; the first start of each slot dies at once, later ones stay.
    code = textwrap.dedent(
        f"""
        import os, signal, sys, time
        with open({str(marker)!r}, "a") as f:
            f.write(f"{{os.getpid()}}\\n")
        if sum(1 for _ in open({str(marker)!r})) <= 2:
            sys.exit(3)
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        time.sleep(60)
        """
    )
    sup = supervisor(tmp_path, code)
    stop = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGTERM))
    stop.start()
    try:
        assert sup.run() == 0
    finally:
        stop.cancel()
    assert len(marker.read_text().split()) == 4  # two quick deaths, two restarts


def test_supervisor_stops_when_a_worker_refuses_its_configuration(tmp_path: Path) -> None:
    code = "import sys, time; time.sleep(0.2); sys.exit(2)"
    assert supervisor(tmp_path, code, count=1).run() == workers.EXIT_CONFIG


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_sighup_to_the_supervisor_reloads_every_worker_unless_the_file_is_bad(
    upstream: TestServer, database_url: str, data_dir: Path
) -> None:
    url = str(upstream.make_url("")).rstrip("/")
    routes = data_dir / "routes.yaml"
    routes.write_text(routes_yaml(url))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "GATEWAY_DATABASE_URL": database_url, "GATEWAY_DATA_DIR": str(data_dir)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log_path = data_dir / "gateway.log"
    log = log_path.open("wb")
    argv = [sys.executable, "-m", "gateway", "serve", "--workers", "2", "--routes", str(routes)]
    proc = subprocess.Popen([*argv, "--port", str(port)], env=env, cwd=ROOT, stdout=log, stderr=log)
    new_route = (
        "  - {name: fresh, path: '/fresh/{rest...}', upstream: main, "
        "strip_prefix: /fresh, public: true}\n"
    )
    try:
        await wait_until(lambda: len(children(proc.pid)) == 2, 60)
        first = children(proc.pid)
        await wait_until(lambda: all(listening(pid, port) for pid in first), 60)
        routes.write_text(routes_yaml(url, extra_routes=new_route) + "\n  - {name: x}\n")
        proc.send_signal(signal.SIGHUP)  # a bad file: the supervisor refuses it
        await wait_until(lambda: "routes reload refused" in log_path.read_text(), 30)
        routes.write_text(routes_yaml(url, extra_routes=new_route))
        proc.send_signal(signal.SIGHUP)
        await wait_until(lambda: log_path.read_text().count("routes reloaded from") == 2, 30)
        connector = aiohttp.TCPConnector(force_close=True)  # spread over both workers
        async with aiohttp.ClientSession(connector=connector) as http:
            for i in range(CALLS):
                async with http.get(f"{base}/fresh/echo/{i}") as r:
                    assert r.status == 200, await r.text()
        assert children(proc.pid) == first  # reloaded in place, no worker restarted
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        await stop_tree(proc)
        log.close()
    text = log_path.read_text()
    assert text.count("routes reload refused") == 1 and "Traceback" not in text
