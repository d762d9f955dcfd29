"""Instructions per proxied call, counted by callgrind: a measure of CPU cost that does not
depend on the machine's speed, its load or its frequency scaling.

    python bench/instructions.py [--counts 2000 4000] [--warmup 200] [--targets NAME ...]
                                 [--tree PATH] [--no-append] [--keep DIR]
    python bench/instructions.py --targets gateway --tree /work/wt/integrate   # one tree
    python bench/instructions.py --targets "plain POST" "translated POST"   # ID translation

Targets (``--targets`` takes substrings of their names): the bare aiohttp pass-through,
the same with UpstreamPool, the aiohttp server alone, the logging reference (the bare
pass-through plus queued COPY into the gateway's own partitioned, indexed api_logs), and
the gateway (`gateway serve`, bench/routes.bench.yaml) three ways with GETs: full capture
with a partner key, body capture off, a public route; and two ways with POSTs of
bench/translation.py's body (2.8 KB of JSON, 50 room ids, echoed by the upstream): "plain
POST" to its untranslated route, "translated POST" to its route translating
``/items/*/room_id`` both ways (50 ids in, the 50 echoed internal ids back out), each
route added last to the bench routes (the two differ in their prefix and the translate
block; both reach the upstream as /reservations).
The POST targets share a database of their own holding bench/translation.py's 50 room
mappings (imported through the admin API of a native gateway, which also checks that the
route translates every id); the warm-up calls fill the mapping cache, whose TTL is set
long (WARM_MAPPINGS). ``--tree`` runs the gateway targets from another checkout (its own
migrations on its own database, its .venv if it has one).

For each target, and for each count N plus a baseline of 0:

1. the upstream runs natively in its own process (started once, never under valgrind),
   and so does PostgreSQL (one embedded cluster, a database per target);
2. the target runs under ``valgrind --tool=callgrind --callgrind-out-file=<tmp>/...``;
   readiness is seen in /proc/net/tcp (a listening socket), without connecting to it;
3. a load client in another process (plain blocking sockets, one keep-alive connection,
   one request at a time) makes ``--warmup`` calls, then N more (GETs, or POSTs of the
   target's body);
4. for targets that log, the script waits until every call's api_logs row is in the
   database, so the writer's COPYs are inside the counted run (clock-driven background
   timers are set long, see QUIET_GATEWAY: the writers flush by batch size, 1000 rows, and
   a run's length under valgrind does not leak into the figure);
5. the target gets SIGINT (a clean exit, so callgrind writes its counts) and the
   ``totals:``/``summary:`` line of its output is read.

Instructions per call = (Ir(N) - Ir(0)) / N: start-up, imports, the warm-up, shutdown and
background work are in both runs and cancel out (timers that tick more often in the longer
run are not: they are a small part here). Two counts show that the cost is linear in N;
``marginal`` is (Ir(N2) - Ir(N1)) / (N2 - N1) for the last two counts.

Prints a table and appends it, with the exact command, to bench/RESULTS-instructions.md.
Only processes started here are stopped. Needs valgrind (apt-get install -y valgrind).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import json
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
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402  (bench/ is no package: harness.py is found through sys.path)
import translation  # noqa: E402  (its body, routes and mappings check: the POST targets)

ROOT = HERE.parent
PY = sys.executable
PATH = "/api/v1/reservations/7f1c2a9e"  # a route with full capture (bench/routes.bench.yaml)
NO_BODIES_PATH = "/nobodies/reservations/7f1c2a9e"  # the same with body capture off
PUBLIC_PATH = "/public/reservations/7f1c2a9e"  # a public route: no API key
PLAIN_POST_PATH = "/plain/reservations"  # bench/translation.py's routes (see Context)
TRANSLATED_POST_PATH = "/tr/reservations"
JSON = ("Content-Type: application/json",)
RESULTS = HERE / "RESULTS-instructions.md"
VALGRIND = ["valgrind", "--tool=callgrind"]
START_TIMEOUT = 1200.0  # seconds for a target to listen under valgrind (a loaded machine)
CALL_TIMEOUT = 1800.0  # seconds for one load run under valgrind


@dataclass(frozen=True)
class Launch:
    """How to start one target: its command for a port, environment, folder, the headers
    its callers send, and the database whose api_logs rows it writes (None: it logs none)."""

    command: Callable[[int], list[str]]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = ROOT
    headers: tuple[str, ...] = ()
    rows_dsn: str | None = None


# Background timers that run by the clock, not per call: under valgrind a run lasts
# minutes, and its length depends on the machine's load, so their work would leak into
# the per-call figure (natively, at thousands of calls a second, it is a few instructions
# per call). The log writers then flush by batch size (1000 rows), as they do at load.
QUIET_GATEWAY = {
    "GATEWAY_LOG_FLUSH_INTERVAL": "60",
    "GATEWAY_WEBHOOK_POLL_INTERVAL": "3600",
    "GATEWAY_WEBHOOK_STATS_INTERVAL": "3600",
    "GATEWAY_SYNC_STATS_INTERVAL": "3600",
}
QUIET_REFERENCE = {"BARE_LOG_FLUSH_INTERVAL": "60"}
# The POST targets: found mappings stay cached for the whole run (by default 300 s, which a
# run under valgrind can outlast: the expired ids would be looked up again, counted).
WARM_MAPPINGS = {"GATEWAY_MAPPING_CACHE_TTL": "86400"}


class Context:
    """What the targets of one run share, made when a target first needs it: the upstream,
    one embedded PostgreSQL (a database per target, migrated by the tree that uses it) and
    the bench routes. ``tree`` is the checkout the gateway targets run from."""

    def __init__(self, tmp: Path, up_port: int, tree: Path) -> None:
        self.tmp, self.up_port, self.tree = tmp, up_port, tree
        self.upstream = f"http://127.0.0.1:{up_port}"

    @functools.cached_property
    def cluster(self) -> harness.Cluster:
        return harness.start_cluster(self.tmp)

    @functools.cached_property
    def gateway_db(self) -> harness.GatewayDb:
        return harness.prepare_database(self.cluster, "bench_gateway", self.tree)

    @functools.cached_property
    def logging_dsn(self) -> str:
        """A database migrated by this checkout's gateway, for the logging reference."""
        return harness.prepare_database(self.cluster, "bench_logging", ROOT).dsn

    @functools.cached_property
    def routes(self) -> Path:
        return harness.bench_routes(self.tmp, self.up_port)

    def routes_with(self, name: str) -> Path:
        """The bench routes plus bench/translation.py's route ``name`` (``plain`` or
        ``translated``) last, written to ``tmp``: the POST targets' routes differ only in
        that route."""
        bench = yaml.safe_load(self.routes.read_text())
        extra = yaml.safe_load(translation.ROUTES.format(upstream_port=self.up_port))
        bench["routes"] += [r for r in extra["routes"] if r["name"] == name]
        path = self.tmp / f"routes.{name}.yaml"
        path.write_text(yaml.safe_dump(bench, sort_keys=False))
        return path

    @functools.cached_property
    def translation_db(self) -> harness.GatewayDb:
        """A database for the POST targets with bench/translation.py's 50 room mappings
        (booking_engine) for the partner key's tenant, imported through the admin API of a
        native `gateway serve`, which then checks that the translated route looks up every
        id of a call (translation.check)."""
        db = harness.prepare_database(self.cluster, "bench_translation", self.tree)
        made = harness.gateway_cli(
            self.tree, db.env, "keys", "create", "--tenant", harness.TENANT, "--role", "admin"
        )
        admin = made.split("token: ")[1].split()[0]
        port = harness.free_port()
        base = f"http://127.0.0.1:{port}"
        log = self.tmp / "mappings.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(
                [
                    *(harness.tree_python(self.tree), "-m", "gateway", "serve"),
                    *("--routes", str(self.routes_with("translated"))),
                    *("--host", "127.0.0.1", "--port", str(port)),
                ],
                env=db.env,
                cwd=self.tree,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        try:
            wait_listening(proc, port, 300, log)
            harness.wait_http(base + "/healthz")
            csv = "entity_type,internal_id,external_system,external_id\n" + "".join(
                f"room,{uuid.uuid4()},booking_engine,ROOM-{i}\n" for i in range(translation.IDS)
            )
            report = json.loads(
                translation.post(
                    base + "/admin/v1/mappings/import",
                    csv.encode(),
                    {"Authorization": f"Bearer {admin}", "Content-Type": "text/csv"},
                )
            )
            if report.get("created") != translation.IDS:
                raise RuntimeError(f"mappings import: {report}")
            translation.check(base, db.token)
        finally:
            stop(proc)
        if proc.returncode != 0:
            raise RuntimeError(f"gateway (mappings) exited with {proc.returncode}:\n{tail(log)}")
        return db


@dataclass(frozen=True)
class Target:
    """A proxy to measure, prepared once per run from the shared context."""

    name: str
    launch: Callable[[Context], Launch]
    path: str = PATH
    body: bytes | None = None  # None: GETs; else POSTs of this body
    headers: tuple[str, ...] = ()  # sent besides the launch's (Content-Type of the body)


def script(name: str, *args: str) -> Callable[[int], list[str]]:
    return lambda port: [PY, str(HERE / name), str(port), *args]


def gateway(ctx: Context) -> Launch:
    """`gateway serve` from the context's tree on the bench routes, with a partner key
    (public routes get it too, and ignore it)."""
    return serve(ctx, ctx.gateway_db, ctx.routes)


def gateway_post(route: str) -> Callable[[Context], Launch]:
    """`gateway serve` on the bench routes plus bench/translation.py's route ``route``,
    on the database with its mappings, with the partner key."""
    return lambda ctx: serve(ctx, ctx.translation_db, ctx.routes_with(route), WARM_MAPPINGS)


def serve(
    ctx: Context, db: harness.GatewayDb, routes: Path, env: dict[str, str] | None = None
) -> Launch:
    python = harness.tree_python(ctx.tree)
    return Launch(
        command=lambda port: [
            *(python, "-m", "gateway", "serve", "--routes", str(routes)),
            *("--host", "127.0.0.1", "--port", str(port)),
        ],
        env={k: db.env[k] for k in ("GATEWAY_DATA_DIR", "GATEWAY_DATABASE_URL")}
        | QUIET_GATEWAY
        | (env or {}),
        cwd=ctx.tree,
        headers=(f"Authorization: Bearer {db.token}",),
        rows_dsn=db.dsn,
    )


TARGETS = [
    Target(
        "aiohttp ClientSession (bench/bare_proxy.py)",
        lambda ctx: Launch(script("bare_proxy.py", ctx.upstream)),
    ),
    Target(
        "UpstreamPool (bench/bare_pool_proxy.py)",
        lambda ctx: Launch(script("bare_pool_proxy.py", ctx.upstream)),
    ),
    # Reference: the aiohttp + uvloop server answering by itself (the upstream's own app),
    # what the two above pay for their server side; the rest is their upstream client.
    Target(
        "reference: aiohttp server alone (bench/upstream.py)",
        lambda ctx: Launch(script("upstream.py")),
    ),
    # Reference: ClientSession pass-through plus queued COPY into the gateway's api_logs.
    Target(
        "reference: bare + queued COPY logging (bench/bare_logging_proxy.py)",
        lambda ctx: Launch(
            script("bare_logging_proxy.py", ctx.upstream, ctx.logging_dsn),
            env=QUIET_REFERENCE,
            rows_dsn=ctx.logging_dsn,
        ),
    ),
    Target("gateway, full capture", gateway, PATH),
    Target("gateway, bodies off", gateway, NO_BODIES_PATH),
    Target("gateway, public route", gateway, PUBLIC_PATH),
    # bench/translation.py's body (50 room ids), untranslated and translated both ways.
    Target(
        "gateway, plain POST",
        gateway_post("plain"),
        PLAIN_POST_PATH,
        translation.body(),
        JSON,
    ),
    Target(
        "gateway, translated POST",
        gateway_post("translated"),
        TRANSLATED_POST_PATH,
        translation.body(),
        JSON,
    ),
]


# -- the load client (run as its own process:
#    `instructions.py load PORT COUNT PATH [HEADER...] [--method M] [--body-file FILE]`)


def load(
    port: int,
    count: int,
    path: str,
    headers: list[str],
    body: bytes | None = None,
    method: str = "",
) -> None:
    """``count`` requests over one keep-alive connection, one at a time: GETs, or with
    ``body`` POSTs of it (``method`` overrides either); each answer must be a 200 with a
    Content-Length."""
    method = method or ("GET" if body is None else "POST")
    if body is not None:
        headers = [*headers, f"Content-Length: {len(body)}"]
    extra = "".join(f"{h}\r\n" for h in headers)
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"User-Agent: bench-instructions\r\nAccept: application/json\r\n{extra}\r\n"
    ).encode() + (body or b"")
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


def listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port (read from /proc, no connection made)."""
    want = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want and fields[3] == "0A":  # 0A: LISTEN
            return True
    return False


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not listening(port):
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before listening:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} not listening after {timeout} s")
        time.sleep(0.2)


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT, timeout: float = 120) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_load(port: int, count: int, launch: Launch, target: Target, tmp: Path) -> None:
    args = [str(port), str(count), target.path, *launch.headers, *target.headers]
    if target.body is not None:
        (tmp / "body").write_bytes(target.body)
        args += ["--body-file", str(tmp / "body")]
    subprocess.run(
        [PY, __file__, "load", *args],
        check=True,
        timeout=CALL_TIMEOUT,
    )


def load_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="instructions.py load", description=load.__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("path")
    parser.add_argument("headers", nargs="*", help='e.g. "Authorization: Bearer ..."')
    parser.add_argument("--method", default="", help="default: GET, or POST with a body")
    parser.add_argument("--body-file", type=Path, help="the request body (sent as is)")
    args = parser.parse_args(argv)
    body = args.body_file.read_bytes() if args.body_file is not None else None
    load(args.port, args.count, args.path, args.headers, body, args.method)


def totals(out_file: Path) -> int:
    """The instruction count of a callgrind output file (its totals:/summary: line)."""
    text = out_file.read_text()
    found = re.search(r"^totals:\s+(\d+)", text, re.M) or re.search(
        r"^summary:\s+(\d+)", text, re.M
    )
    if found is None:
        raise RuntimeError(f"no totals: or summary: line in {out_file}")
    return int(found.group(1))


def env_for(launch: Launch) -> dict[str, str]:
    env = {**os.environ, **launch.env, "PYTHONHASHSEED": "0"}  # the same hashing every run
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(launch.cwd), env.get("PYTHONPATH")]))
    return env


def run_target(
    target: Target, launch: Launch, calls: int, warmup: int, tmp: Path, prefix: list[str]
) -> subprocess.Popen[bytes]:
    """Start the target (under ``prefix``, e.g. valgrind), make ``warmup + calls`` calls,
    wait until their api_logs rows are in the database (so the writer's COPYs happen
    while the target is measured), stop it with SIGINT; the stopped process."""
    port = harness.free_port()
    log = tmp / "target.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [*prefix, *launch.command(port)],
            env=env_for(launch),
            cwd=launch.cwd,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_listening(proc, port, START_TIMEOUT if prefix else 300, log)
        before = asyncio.run(harness.count_rows(launch.rows_dsn)) if launch.rows_dsn else 0
        run_load(port, warmup + calls, launch, target, tmp)
        if launch.rows_dsn is not None:
            want = before + warmup + calls
            seen = harness.wait_rows(launch.rows_dsn, want)
            if seen < want:
                raise RuntimeError(f"{target.name}: {seen - before} of {want - before} rows")
    finally:
        stop(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"{target.name} exited with {proc.returncode}:\n{tail(log)}")
    return proc


def measure(target: Target, launch: Launch, calls: int, warmup: int, tmp: Path) -> int:
    """Instructions of one whole run of ``target`` under callgrind: warm-up, then ``calls``."""
    out = tmp / f"callgrind.{calls}.out"
    run_target(target, launch, calls, warmup, tmp, [*VALGRIND, f"--callgrind-out-file={out}"])
    return totals(out)


def preflight(target: Target, launch: Launch, tmp: Path) -> None:
    """Run the target natively once: it works (and logs its rows), and its bytecode is
    compiled before any run is counted."""
    run_target(target, launch, 50, 0, tmp, [])


# -- report -----------------------------------------------------------------------------


def code_version(tree: Path = ROOT) -> str:
    """The commit measured (and whether the tree had uncommitted changes)."""
    git = ["git", "-C", str(tree)]
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


def append_results(text: str, command: str, warmup: int, tree: Path) -> None:
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
        f"\n## {stamp}\n\n`{command}`\n\n{code_version()}"
        + (f" (gateway targets: {tree}, {code_version(tree)})" if tree != ROOT else "")
        + f"; {versions()}; warm-up {warmup} "
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
        load_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[2000, 4000])
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument(
        "--targets",
        nargs="+",
        default=[],
        help="substrings of target names (default: all); e.g. `gateway` for the three "
        "gateway targets, `full capture` for one",
    )
    parser.add_argument(
        "--tree",
        type=Path,
        default=ROOT,
        help="checkout the gateway targets run from (default: this one)",
    )
    parser.add_argument("--no-append", action="store_true", help="print only")
    parser.add_argument(
        "--keep",
        type=Path,
        help="copy each run's callgrind file here (<target>.<N>.out) for callgrind_annotate",
    )
    args = parser.parse_args()
    # Started in the background by a shell without job control (`nohup ... &`), this process
    # ignores SIGINT, and so would every target it starts: they would not stop on SIGINT
    # (stop() kills them after 120 s, and callgrind writes no counts). Their SIGINT is the
    # default again once this process handles it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if shutil.which("valgrind") is None:
        sys.exit("bench: valgrind not found (apt-get install -y valgrind)")
    tree = args.tree.resolve()
    if not (tree / "gateway" / "__main__.py").exists():
        sys.exit(f"bench/instructions.py: {tree} holds no gateway/ package")
    targets = [t for t in TARGETS if not args.targets or any(s in t.name for s in args.targets)]
    if not targets:
        sys.exit("bench/instructions.py: no target matches " + " ".join(args.targets))
    counts = sorted(set(args.counts))
    command = "python bench/instructions.py " + shlex.join(sys.argv[1:])
    results: dict[str, dict[int, int]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-instructions-"))
    up_port = harness.free_port()
    log = tmp / "upstream.log"
    with log.open("wb") as err:
        up = subprocess.Popen(
            [PY, str(HERE / "upstream.py"), str(up_port)],
            env=env_for(Launch(lambda port: [])),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_listening(up, up_port, 60, log)
        ctx = Context(tmp, up_port, tree)
        for target in targets:
            work = tmp / re.sub(r"\W+", "-", target.name).strip("-")
            work.mkdir()
            launch = target.launch(ctx)
            preflight(target, launch, work)
            runs: dict[int, int] = {}
            for n in [0, *counts]:
                t0 = time.monotonic()
                runs[n] = measure(target, launch, n, args.warmup, work)
                if args.keep is not None:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    shutil.copy(work / f"callgrind.{n}.out", args.keep / f"{work.name}.{n}.out")
                print(
                    f"{target.name}: N={n}: {runs[n]:,} Ir "
                    f"({time.monotonic() - t0:.0f} s under valgrind)",
                    flush=True,
                )
            results[target.name] = runs
    finally:
        stop(up, signal.SIGTERM, 30)
        harness.stop_embedded(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    text = table(results, counts)
    print()
    print(text)
    if not args.no_append:
        append_results(text, command, args.warmup, tree)
        print(f"\nappended to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
