"""``gateway serve --workers N``: N worker processes sharing one port, supervised.

The parent process never serves. It starts the embedded PostgreSQL if no database URL is
configured (and stops it at exit, after the workers), applies migrations once, creates a
fresh ``PROMETHEUS_MULTIPROC_DIR`` for the workers' metrics, then runs N copies of
``python -m gateway serve --worker`` that all bind the same host and port with
SO_REUSEPORT (the kernel spreads new connections across them). A worker that dies is
restarted after a backoff (unless it exited with the configuration-error status 2, which
a restart cannot fix: then everything stops with status 2); its live gauges are dropped
(``mark_process_dead``), its counters stay in the totals. SIGTERM or SIGINT is forwarded
to every worker, which drains like a single process does (GATEWAY_SHUTDOWN_TIMEOUT); a
worker still running after that plus ``STOP_MARGIN`` is killed. Exit status 0 when every
worker stopped cleanly.

Workers run in their own process group, so a Ctrl-C in a terminal reaches them once,
through the parent; on Linux each asks the kernel for a SIGTERM if the parent dies (even
by SIGKILL), so no worker outlives its supervisor. The parent only signals processes it
started.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from gateway.errors import ConfigError
from gateway.settings import Settings

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.2  # seconds between checks of the workers' state
STOP_MARGIN = 10.0  # seconds a worker gets beyond GATEWAY_SHUTDOWN_TIMEOUT before SIGKILL
BACKOFF_INITIAL = 0.5  # seconds before restarting a worker that died
BACKOFF_MAX = 30.0  # the backoff doubles per quick death, up to this
STABLE_AFTER = 60.0  # seconds a worker must live for its backoff to reset
METRICS_DIR = "metrics"  # PROMETHEUS_MULTIPROC_DIR is this folder under the data directory
PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h): a signal for the child when the parent dies
EXIT_WORKER_KILLED = 1  # a worker had to be killed, or died while stopping
EXIT_CONFIG = 2  # a worker exited with the CLI's configuration-error status: not restarted


@dataclasses.dataclass
class Worker:
    """One slot: its current process, when it started, and its next restart delay."""

    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: float = BACKOFF_INITIAL
    restart_at: float = 0.0


def metrics_dir(settings: Settings) -> Path:
    """A fresh, empty folder for the workers' metric files (old files would add up)."""
    path = (settings.data_dir / METRICS_DIR).resolve()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


class Supervisor:
    """Starts, watches, restarts and stops the worker processes."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        count: int,
        stop_timeout: float,
        validate: Callable[[], object] | None = None,
    ):
        self.argv = argv
        self.env = env
        self.validate = validate  # reads the routes file; raises ConfigError if it is bad
        self.reload_requested = False
        self.workers = [Worker(i) for i in range(count)]
        self.stop_timeout = stop_timeout
        self.stopping = False
        self.failed = 0  # exit status forced by a worker's fatal error

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hangup)
        try:
            for worker in self.workers:
                self._spawn(worker)
            while not self.stopping:
                self._watch()
                if self.reload_requested:
                    self.reload_requested = False
                    self._reload()
                time.sleep(POLL_INTERVAL)
            return self._stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _on_hangup(self, signum: int, frame: FrameType | None) -> None:
        self.reload_requested = True

    def _reload(self) -> None:
        """SIGHUP: check the routes file once here, then have every worker reload it (each
        swaps its routes between calls); a bad file is reported and nothing changes."""
        if self.validate is not None:
            try:
                self.validate()
            except ConfigError as exc:
                log.error("routes reload refused, the routes in use are unchanged:\n%s", exc)
                return
        for worker in self.workers:
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGHUP)
        log.info("routes reload: SIGHUP sent to %d workers", len(self.workers))

    def _spawn(self, worker: Worker) -> None:
        # Own process group: a terminal's Ctrl-C reaches the workers once, through us.
        worker.proc = subprocess.Popen(
            self.argv, env=self.env, process_group=0, preexec_fn=_die_with_parent
        )
        worker.started = time.monotonic()
        log.info("worker %d started: pid %d", worker.index, worker.proc.pid)

    def _watch(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if worker.proc is None:
                if now >= worker.restart_at:
                    self._spawn(worker)
                continue
            code = worker.proc.poll()
            if code is None:
                continue
            self._forget(worker.proc.pid)
            if code == EXIT_CONFIG:  # bad settings or routes: a restart cannot fix that
                log.error("worker %d refused its configuration; stopping", worker.index)
                self.failed = EXIT_CONFIG
                self.stopping = True
                return
            lived = now - worker.started
            worker.backoff = BACKOFF_INITIAL if lived >= STABLE_AFTER else worker.backoff
            log.warning(
                "worker %d (pid %d) exited with %s after %.1f s; restarting in %.1f s",
                worker.index,
                worker.proc.pid,
                code,
                lived,
                worker.backoff,
            )
            worker.proc = None
            worker.restart_at = now + worker.backoff
            worker.backoff = min(worker.backoff * 2, BACKOFF_MAX)

    def _forget(self, pid: int) -> None:
        """Drop a dead worker's live gauges from the shared metrics."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
            pid, self.env["PROMETHEUS_MULTIPROC_DIR"]
        )

    def _stop(self) -> int:
        running = [w.proc for w in self.workers if w.proc is not None and w.proc.poll() is None]
        log.info("stopping %d workers", len(running))
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        status = 0
        for proc in running:
            try:
                code = proc.wait(max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                log.error("worker pid %d did not stop in time; killing it", proc.pid)
                proc.kill()
                code = proc.wait()
            # -SIGTERM: the signal arrived while the worker was still starting (before
            # aiohttp took over SIGTERM); it served nothing yet, so that is a clean stop too.
            if code not in (0, -signal.SIGTERM):
                status = EXIT_WORKER_KILLED
            self._forget(proc.pid)
        return self.failed or status


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the supervisor dies (even by SIGKILL)."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def worker_env(database_url: str, multiproc_dir: Path) -> dict[str, str]:
    """The workers' environment: the resolved database and the shared metrics folder."""
    env = dict(os.environ)
    env["GATEWAY_DATABASE_URL"] = database_url
    env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc_dir)
    return env


def worker_argv(routes: str, host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--worker",
        "--routes",
        routes,
        "--host",
        host,
        "--port",
        str(port),
    ]
