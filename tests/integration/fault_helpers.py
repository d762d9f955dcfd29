"""Helpers for the fault tests (tests/integration/test_faults_under_load.py) and the
full-size run (bench/faults.py): a gateway child process, a steady request rate, and a
TCP proxy in front of PostgreSQL that can refuse connections or drop them mid-COPY.
Everything listens on 127.0.0.1 and every process or server is ended by whoever made it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import aiohttp
import asyncpg

STARTUP_TIMEOUT = 30.0  # seconds for a child gateway to answer /healthz
REQUEST_TIMEOUT = 10.0  # seconds one load request may take before it counts as failed
MAX_CONCURRENCY = 200  # requests of the load generator open at once


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    """``python -m gateway serve`` in a child process (stdout kept in a file)."""

    def __init__(self, workdir: Path, routes: Path, env: Mapping[str, str]) -> None:
        self.workdir, self.routes = workdir, routes
        self.env = {**os.environ, **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = workdir / "gateway-0.log"
        self.starts = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, ready: str = "/healthz") -> str:
        """Start it and wait until ``ready`` answers 200; the base URL."""
        self.port = free_port()
        self.starts += 1
        self.log_path = self.workdir / f"gateway-{self.starts}.log"
        args = ["serve", "--routes", str(self.routes), "--port", str(self.port)]
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", *args],
                env=self.env,
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        await wait_healthy(self.base, self.proc, ready)
        return self.base

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float) -> int:
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.proc.wait, timeout)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


async def wait_healthy(
    base: str, proc: subprocess.Popen[bytes] | None = None, path: str = "/healthz"
) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"gateway exited with {proc.returncode} at start")
            with contextlib.suppress(OSError, aiohttp.ClientError):
                async with http.get(base + path) as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise AssertionError(f"gateway at {base} did not start")


@dataclass
class LoadResult:
    """What a steady load saw: request id → status (0: no answer, connection failed)."""

    statuses: dict[str, int] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)  # time.monotonic() at send
    latency: dict[str, float] = field(default_factory=dict)  # seconds, answered calls
    sent: int = 0

    def answered(self, status: int = 200) -> set[str]:
        return {rid for rid, s in self.statuses.items() if s == status}

    def started_before(self, moment: float) -> set[str]:
        return {rid for rid, t in self.started.items() if t < moment}

    def histogram(self) -> Counter[int]:
        return Counter(self.statuses.values())

    def percentile(self, q: float, ids: set[str] | None = None) -> float:
        """Latency (seconds) of the answered calls (of ``ids`` only, if given)."""
        ordered = sorted(v for k, v in self.latency.items() if ids is None or k in ids)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def log_counts(conn: asyncpg.Connection, like: str) -> tuple[int, int]:
    """(rows, distinct request ids) in api_logs whose request id is LIKE ``like``: a call
    logged twice shows as rows > distinct."""
    row = await conn.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT request_id) AS d FROM api_logs "
        "WHERE request_id LIKE $1",
        like,
    )
    return int(row["n"]), int(row["d"])


async def steady_load(
    base: str,
    rate: float,
    duration: float,
    tag: str,
    stop: asyncio.Event | None = None,
    path: Callable[[int], str] = lambda i: f"/api/echo/{i}",
    result: LoadResult | None = None,
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    """``rate`` requests per second for ``duration`` seconds (or until ``stop``), each with
    its own X-Request-Id ``<tag>-<n>``; requests are started on schedule, not after the
    previous one, so a slow gateway shows up as latency, not as a lower rate."""
    out = result if result is not None else LoadResult()
    limit = asyncio.Semaphore(MAX_CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=MAX_CONCURRENCY)
    async with aiohttp.ClientSession(base, timeout=timeout, connector=connector) as http:

        async def one(i: int) -> None:
            rid = f"{tag}-{i}"
            t0 = loop.time()
            out.started[rid] = time.monotonic()
            try:
                async with http.post(
                    path(i), data=b'{"n": %d}' % i, headers={**(headers or {}), "X-Request-Id": rid}
                ) as r:
                    await r.read()
                    out.statuses[rid] = r.status
                    out.latency[rid] = loop.time() - t0
            except (OSError, aiohttp.ClientError, TimeoutError):
                out.statuses[rid] = 0
            finally:
                limit.release()

        start = loop.time()
        i = 0
        while loop.time() - start < duration and not (stop is not None and stop.is_set()):
            due = start + i / rate
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            await limit.acquire()
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            out.sent += 1
            i += 1
        if tasks:
            await asyncio.wait(list(tasks), timeout=REQUEST_TIMEOUT + 1)
    return out


# -- a TCP proxy in front of PostgreSQL -----------------------------------------------------


def backend_address(dsn: str) -> tuple[str, int] | str:
    """Where the DSN's server listens: ``(host, port)`` or a unix socket path."""
    parts = urlsplit(dsn)
    host = parse_qs(parts.query).get("host", [parts.hostname or ""])[0]
    port = parts.port or 5432
    if host.startswith("/"):
        return f"{host}/.s.PGSQL.{port}"
    return (host or "127.0.0.1", port)


def via_proxy(dsn: str, port: int) -> str:
    """The same DSN (user, database) but through 127.0.0.1:port."""
    parts = urlsplit(dsn)
    user = parts.username or "postgres"
    auth = f"{user}:{parts.password}@" if parts.password else f"{user}@"
    return urlunsplit(("postgresql", f"{auth}127.0.0.1:{port}", parts.path, "", ""))


class PgProxy:
    """Relays PostgreSQL connections; can refuse new ones (``down``) and drop connections
    during COPY: ``mid_copy`` cuts a connection while its COPY data flows, ``at_commit``
    forwards the COMMIT that follows a COPY and then cuts the connection before the
    answer reaches the client (the commit happened; the client cannot know)."""

    def __init__(self, dsn: str) -> None:
        self.backend = backend_address(dsn)
        self.down = False
        self.plan: list[str] = []  # faults to inject, one per COPY seen, in order
        self.every = 1  # inject on every n-th COPY
        self.copies = 0
        self.injected: Counter[str] = Counter()
        self.server: asyncio.Server | None = None
        self.port = 0
        self.links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def drop_all(self) -> None:
        for a, b in list(self.links):
            a.transport.abort()
            b.transport.abort()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        self.drop_all()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()

    async def _open_backend(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if isinstance(self.backend, str):
            return await asyncio.open_unix_connection(self.backend)
        return await asyncio.open_connection(*self.backend)

    async def _accept(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        if self.down:
            cwriter.transport.abort()
            self.tasks.discard(task)
            return
        try:
            sreader, swriter = await self._open_backend()
        except OSError:
            cwriter.transport.abort()
            self.tasks.discard(task)
            return
        link = (cwriter, swriter)
        self.links.add(link)
        state = {"copy": False, "mute": False}
        try:
            await asyncio.gather(
                self._client_to_server(creader, swriter, cwriter, state),
                self._server_to_client(sreader, cwriter, state),
            )
        except (ConnectionError, OSError):
            pass
        finally:
            self.links.discard(link)
            cwriter.transport.abort()
            swriter.transport.abort()
            self.tasks.discard(task)

    async def _client_to_server(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
        state: dict[str, bool],
    ) -> None:
        fault: str | None = None
        while data := await reader.read(65536):
            if b"COPY " in data and b"FROM STDIN" in data.upper():
                self.copies += 1
                if self.plan and self.copies % self.every == 0:
                    fault = self.plan.pop(0)
                    state["copy"] = True
            if fault == "mid_copy" and state["copy"] and len(data) > 64 and b"COPY " not in data:
                writer.write(data[: len(data) // 2])  # half of the COPY data, then gone
                await writer.drain()
                self.injected[fault] += 1
                self._cut(client, writer)
                return
            if fault == "at_commit" and state["copy"] and b"COMMIT" in data:
                state["mute"] = True  # the server's answer never reaches the client
                writer.write(data)
                await writer.drain()
                await asyncio.sleep(0.2)  # let the server commit
                self.injected[fault] += 1
                self._cut(client, writer)
                return
            writer.write(data)
            await writer.drain()
        writer.transport.abort()

    async def _server_to_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: dict[str, bool]
    ) -> None:
        while data := await reader.read(65536):
            if state["mute"]:
                continue
            writer.write(data)
            await writer.drain()
        writer.transport.abort()

    @staticmethod
    def _cut(client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        client.transport.abort()
        server.transport.abort()


# -- a database that hangs ---------------------------------------------------------------


class Frozen:
    """SIGSTOP every process of a PostgreSQL server (postmaster first, so it forks no new
    backend): connections are still accepted by the kernel, nothing is answered. Leaving
    the block (or ``thaw``) resumes them. Only the server's own processes are signalled."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self.pids: list[int] = []

    def __enter__(self) -> Frozen:
        self.freeze()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thaw()

    def freeze(self) -> None:
        postmaster = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGSTOP)
        self.pids = [postmaster, *_children(postmaster)]
        for pid in self.pids[1:]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in reversed(self.pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.pids = []


def _children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            found.append(int(entry))
    return found
