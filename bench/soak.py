"""Soak test: the gateway under a steady request rate for a long time, memory sampled.

    python bench/soak.py [--duration 600] [--rate 300] [--sample 10]

Starts (on 127.0.0.1 only) the benchmark upstream, an embedded PostgreSQL and `gateway
serve` with a partner key; sends --rate requests/s (GETs with a 1 KB JSON answer and POSTs
with a 1 KB JSON body, alternating) for --duration seconds; samples the gateway's resident
memory every --sample seconds; then stops the gateway with SIGTERM and counts api_logs
rows against the calls it answered. Prints the memory series and the verdict. Stops only
the processes it started.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from harness import PY, count_rows, free_port, prepare_gateway, stop_embedded, wait_http  # noqa: E402

BODY = b'{"guest": {"first_name": "Ada", "last_name": "Lovelace"}, "notes": "' + b"x" * 900 + b'"}'
PATH = "/api/v1/reservations/7f1c2a9e"
CONCURRENCY = 32  # client tasks sharing the rate


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def load(base: str, token: str, rate: float, duration: float) -> dict[str, int]:
    """Send ``rate`` requests/s for ``duration`` s; count answers by status class."""
    counts: dict[str, int] = {}
    start = time.monotonic()
    total = int(rate * duration)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def worker(session: aiohttp.ClientSession, first: int) -> None:
        for i in range(first, total, CONCURRENCY):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            method, data = ("GET", None) if i % 2 else ("POST", BODY)
            try:
                async with session.request(method, base + PATH, data=data, headers=headers) as r:
                    await r.read()
                    key = f"{r.status // 100}xx"
            except aiohttp.ClientError as exc:
                key = type(exc).__name__
            counts[key] = counts.get(key, 0) + 1

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session, n) for n in range(CONCURRENCY)))
    return counts


async def sample(pid: int, every: float, stop: asyncio.Event, out: list[tuple[float, int]]) -> None:
    t0 = time.monotonic()
    while not stop.is_set():
        out.append((time.monotonic() - t0, rss_kib(pid)))
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass


async def soak(
    base: str, token: str, pid: int, args: argparse.Namespace
) -> tuple[dict[str, int], list[tuple[float, int]]]:
    series: list[tuple[float, int]] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample(pid, args.sample, stop, series))
    counts = await load(base, token, args.rate, args.duration)
    stop.set()
    await sampler
    return counts, series


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=float, default=600)
    p.add_argument("--rate", type=float, default=300)
    p.add_argument("--sample", type=float, default=10)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gateway-soak-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        up_port = free_port()
        procs.append(subprocess.Popen([PY, str(HERE / "upstream.py"), str(up_port)]))
        wait_http(f"http://127.0.0.1:{up_port}/")
        env, dsn, token, routes = prepare_gateway(tmp, up_port, "Soak Hotel")
        port = free_port()
        gw = subprocess.Popen(
            [PY, "-m", "gateway", "serve", "--routes", str(routes), "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        procs.append(gw)
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz")
        counts, series = asyncio.run(soak(base, token, gw.pid, args))
        gw.send_signal(signal.SIGTERM)
        code = gw.wait(60)
        rows = asyncio.run(count_rows(dsn))
        report(args, counts, series, rows, code)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
        stop_embedded(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def report(
    args: argparse.Namespace,
    counts: dict[str, int],
    series: list[tuple[float, int]],
    rows: int,
    code: int,
) -> None:
    answered = sum(v for k, v in counts.items() if k.endswith("xx"))
    print(f"rate {args.rate:.0f}/s for {args.duration:.0f} s: answers {counts}")
    print("gateway RSS (MiB) every sample:")
    print("  " + " ".join(f"{kib / 1024:.1f}" for _, kib in series))
    settled = [kib for t, kib in series if t >= min(60.0, args.duration / 4)]
    if settled:
        first, last, peak = settled[0], settled[-1], max(settled)
        print(
            f"after warm-up: first {first / 1024:.1f} MiB, last {last / 1024:.1f} MiB, "
            f"peak {peak / 1024:.1f} MiB, change {(last - first) / 1024:+.1f} MiB"
        )
    print(
        f"api_logs rows {rows}, calls answered {answered}, rows lost {max(0, answered - rows)}, "
        f"gateway exit code {code}"
    )


if __name__ == "__main__":
    main()
