"""Instructions per proxied call, counted by callgrind: a measure of CPU cost that does not
depend on the machine's speed, its load or its frequency scaling.

    python bench/instructions.py [--counts 2000 4000] [--warmup 200] [--targets NAME ...]
                                 [--no-append]

For each target (a pass-through proxy in front of bench/upstream.py), and for each count N
plus a baseline of 0:

1. the upstream runs natively in its own process (started once, never under valgrind);
2. the target runs under ``valgrind --tool=callgrind --callgrind-out-file=<tmp>/...``;
   readiness is seen in /proc/net/tcp (a listening socket), without connecting to it;
3. a load client in another process (plain blocking sockets, one keep-alive connection,
   one request at a time) makes ``--warmup`` calls, then N more;
4. the target gets SIGINT (aiohttp's run_app exits cleanly, so callgrind writes its
   counts) and the ``totals:``/``summary:`` line of its output is read.

Instructions per call = (Ir(N) - Ir(0)) / N: start-up, imports, the warm-up, shutdown and
background work are in both runs and cancel out. Two counts show that the cost is linear
in N; ``marginal`` is (Ir(N2) - Ir(N1)) / (N2 - N1) for the last two counts.

Prints a table and appends it, with the exact command, to bench/RESULTS-instructions.md.
Only processes started here are stopped. Needs valgrind (apt-get install -y valgrind).

Targets are a list (TARGETS): the gateway with full capture is meant to become the third,
with a ``setup`` that prepares its database and routes and returns its environment.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
PATH = "/api/v1/reservations/7f1c2a9e"
RESULTS = HERE / "RESULTS-instructions.md"
VALGRIND = ["valgrind", "--tool=callgrind"]
START_TIMEOUT = 300.0  # seconds for a target to listen under valgrind
CALL_TIMEOUT = 1800.0  # seconds for one load run under valgrind


@dataclass(frozen=True)
class Target:
    """A proxy to measure: its command line for (port, upstream URL, scratch dir)."""

    name: str
    command: Callable[[int, str, Path], list[str]]
    # Extra environment for the target, prepared once per run (a database, routes, keys).
    setup: Callable[[Path, str], dict[str, str]] = field(default=lambda tmp, upstream: {})
    path: str = PATH


TARGETS = [
    Target(
        "aiohttp ClientSession (bench/bare_proxy.py)",
        lambda port, up, tmp: [PY, str(HERE / "bare_proxy.py"), str(port), up],
    ),
    Target(
        "UpstreamPool (bench/bare_pool_proxy.py)",
        lambda port, up, tmp: [PY, str(HERE / "bare_pool_proxy.py"), str(port), up],
    ),
    # Reference: the aiohttp + uvloop server answering by itself (the upstream's own app),
    # what the two above pay for their server side; the rest is their upstream client.
    Target(
        "reference: aiohttp server alone (bench/upstream.py)",
        lambda port, up, tmp: [PY, str(HERE / "upstream.py"), str(port)],
    ),
]


# -- the load client (run as its own process: `instructions.py load PORT COUNT PATH`) ------


def load(port: int, count: int, path: str) -> None:
    """``count`` GETs over one keep-alive connection, one at a time; each answer must be a
    200 with a Content-Length."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: bench-instructions\r\n"
        "Accept: application/json\r\n\r\n"
    ).encode()
    length_re = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        for _ in range(count):
            sock.sendall(request)
            while b"\r\n\r\n" not in buf:
                buf += _recv(sock)
            head, _, buf = buf.partition(b"\r\n\r\n")
            found = length_re.search(head)
            if not head.startswith(b"HTTP/1.1 200 ") or found is None:
                sys.exit(f"load: unexpected answer head {head[:200]!r}")
            size = int(found.group(1))
            while len(buf) < size:
                buf += _recv(sock)
            buf = buf[size:]


def _recv(sock: socket.socket) -> bytes:
    data = sock.recv(65536)
    if not data:
        sys.exit("load: the proxy closed the connection")
    return data


# -- processes --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port (read from /proc, no connection made)."""
    want = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want and fields[3] == "0A":  # 0A: LISTEN
            return True
    return False


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not listening(port):
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"exited with {proc.returncode} before listening:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} not listening after {timeout} s")
        time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT, timeout: float = 120) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_load(port: int, count: int, path: str) -> None:
    subprocess.run(
        [PY, __file__, "load", str(port), str(count), path], check=True, timeout=CALL_TIMEOUT
    )


def totals(out_file: Path) -> int:
    """The instruction count of a callgrind output file (its totals:/summary: line)."""
    text = out_file.read_text()
    found = re.search(r"^totals:\s+(\d+)", text, re.M) or re.search(
        r"^summary:\s+(\d+)", text, re.M
    )
    if found is None:
        raise RuntimeError(f"no totals: or summary: line in {out_file}")
    return int(found.group(1))


def env_for(extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **extra, "PYTHONHASHSEED": "0"}  # the same hashing every run
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def measure(target: Target, upstream: str, calls: int, warmup: int, tmp: Path) -> int:
    """Instructions of one whole run of ``target`` under callgrind: warm-up, then ``calls``."""
    port = free_port()
    out = tmp / f"callgrind.{calls}.out"
    env = env_for(target.setup(tmp, upstream))
    cmd = [*VALGRIND, f"--callgrind-out-file={out}", *target.command(port, upstream, tmp)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening(proc, port, START_TIMEOUT)
        run_load(port, warmup + calls, target.path)
    finally:
        stop(proc)
    if proc.returncode != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise RuntimeError(f"{target.name} exited with {proc.returncode}:\n{err[-3000:]}")
    return totals(out)


def preflight(target: Target, upstream: str, tmp: Path) -> None:
    """Run the target natively once: it works, and its bytecode is compiled before any run
    is counted."""
    port = free_port()
    env = env_for(target.setup(tmp, upstream))
    proc = subprocess.Popen(
        target.command(port, upstream, tmp),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_listening(proc, port, 60)
        run_load(port, 50, target.path)
    finally:
        stop(proc)


# -- report -----------------------------------------------------------------------------


def code_version() -> str:
    """The commit measured (and whether the tree had uncommitted changes)."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "gateway", "bench"], capture_output=True, text=True
    )
    if head.returncode != 0:
        return "code: unknown commit"
    return f"code at {head.stdout.strip()}" + (" + uncommitted changes" if dirty.stdout else "")


def versions() -> str:
    vg = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout
    pkgs = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("aiohttp", "httptools", "uvloop")
    )
    return f"Python {platform.python_version()}, {pkgs}, {vg.strip()}, {platform.machine()}"


def table(results: dict[str, dict[int, int]], counts: list[int]) -> str:
    header = "| target | " + " | ".join(f"Ir/call, N={n}" for n in counts)
    header += " | marginal Ir/call | baseline Ir (N=0) |"
    lines = [header, "|" + "---|" * (len(counts) + 3)]
    for name, runs in results.items():
        base = runs[0]
        per_call = [f"{(runs[n] - base) / n:,.0f}" for n in counts]
        if len(counts) >= 2:
            a, b = counts[-2], counts[-1]
            marginal = f"{(runs[b] - runs[a]) / (b - a):,.0f}"
        else:
            marginal = "-"
        lines.append(f"| {name} | " + " | ".join(per_call) + f" | {marginal} | {base:,} |")
    return "\n".join(lines)


def append_results(text: str, command: str, warmup: int) -> None:
    intro = (
        "# Instructions per proxied call (callgrind)\n\n"
        "Made by bench/instructions.py: each target runs under `valgrind --tool=callgrind`\n"
        "in front of bench/upstream.py (~1 KB JSON, native); a separate client process makes\n"
        "sequential keep-alive GETs. Ir/call = (Ir(N) - Ir(0)) / N with the same warm-up in\n"
        "both runs; marginal = the difference between the two largest N per extra call.\n"
        "Instruction counts, not time: independent of the machine's load and clock.\n"
    )
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    entry = (
        f"\n## {stamp}\n\n`{command}`\n\n{code_version()}; {versions()}; warm-up {warmup} "
        "calls; each target as `valgrind --tool=callgrind "
        "--callgrind-out-file=<tmp>/callgrind.N.out python ...`"
        f"\n\n{text}\n"
    )
    if not RESULTS.exists():
        RESULTS.write_text(intro)
    with RESULTS.open("a") as f:
        f.write(entry)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        load(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[2000, 4000])
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument(
        "--targets", nargs="+", help="substrings of target names (default: all)", default=[]
    )
    parser.add_argument("--no-append", action="store_true", help="print only")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("bench: valgrind not found (apt-get install -y valgrind)")
    targets = [t for t in TARGETS if not args.targets or any(s in t.name for s in args.targets)]
    counts = sorted(set(args.counts))
    command = "python bench/instructions.py " + shlex.join(sys.argv[1:])
    results: dict[str, dict[int, int]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp_name:
        tmp = Path(tmp_name)
        up_port = free_port()
        upstream = f"http://127.0.0.1:{up_port}"
        up = subprocess.Popen(
            [PY, str(HERE / "upstream.py"), str(up_port)],
            env=env_for({}),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_listening(up, up_port, 60)
            for target in targets:
                work = tmp / re.sub(r"\W+", "-", target.name)
                work.mkdir()
                preflight(target, upstream, work)
                runs: dict[int, int] = {}
                for n in [0, *counts]:
                    t0 = time.monotonic()
                    runs[n] = measure(target, upstream, n, args.warmup, work)
                    print(
                        f"{target.name}: N={n}: {runs[n]:,} Ir "
                        f"({time.monotonic() - t0:.0f} s under valgrind)",
                        flush=True,
                    )
                results[target.name] = runs
        finally:
            stop(up, signal.SIGTERM, 30)
    text = table(results, counts)
    print()
    print(text)
    if not args.no_append:
        append_results(text, command, args.warmup)
        print(f"\nappended to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
