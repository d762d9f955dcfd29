"""A bounded shutdown, whatever the database does.

SIGTERM starts the clock (``app.on_shutdown``): in-flight calls get
``GATEWAY_SHUTDOWN_TIMEOUT`` (aiohttp's own grace), then each cleanup step gets what is
left of that timeout plus ``MARGIN`` — the log writer last and with the most. Steps that
talk to the database are bounded, and the rows of answered calls are on disk already (the
write-ahead log, gateway/capture/wal.py), so giving up loses nothing.

A hung database would make every step wait out its whole budget (a task cancelled inside
an asyncpg call waits for the server to acknowledge). So the app probes the database when
the shutdown begins, and when it does not answer (or a step overruns) the clock *gives
up* on it: the registered callbacks drop every pooled connection, everything waiting on
one fails at once, and the log writer sends what it still holds to the journal.

The watchdog is the backstop for the serving process only (never started inside a test
process): should anything still hold the process ``WATCHDOG_GRACE`` seconds after the
budget, it says so on stderr and ends the process with ``os._exit``. What was in memory is
in the write-ahead log, replayed at the next start.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

MARGIN = 3.0  # seconds beyond GATEWAY_SHUTDOWN_TIMEOUT for the cleanup steps
WATCHDOG_GRACE = 2.0  # seconds past the whole budget before the watchdog ends the process
STUCK_EXIT_STATUS = 70  # EX_SOFTWARE: the shutdown did not finish by itself


class ShutdownClock:
    """The shutdown's deadline: ``timeout`` for in-flight calls plus ``margin``."""

    def __init__(self, timeout: float, margin: float = MARGIN) -> None:
        self.timeout, self.margin = timeout, margin
        self._end: float | None = None
        self._on_give_up: list[Callable[[], object]] = []
        self.gave_up = False

    def on_give_up(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` (e.g. ``pool.terminate``) if the shutdown gives up on the
        database."""
        self._on_give_up.append(callback)

    def give_up(self, why: str) -> None:
        """The database does not answer: drop its connections so nothing waits on it."""
        if self.gave_up:
            return
        self.gave_up = True
        log.warning("shutdown: %s; dropping database connections (rows go to the journal)", why)
        for callback in self._on_give_up:
            try:
                callback()
            except Exception:  # one failing callback must not keep the others from running
                log.exception("shutdown: a give-up callback failed")

    @property
    def started(self) -> bool:
        return self._end is not None

    def begin(self) -> None:
        if self._end is None:
            self._end = time.monotonic() + self.timeout + self.margin

    def remaining(self, reserve: float = 0.0) -> float:
        """Seconds left for a cleanup step, keeping ``reserve`` for the steps after it
        (the whole timeout when no shutdown has begun: a test closing its app)."""
        if self._end is None:
            return max(self.timeout - reserve, 0.0)
        return max(self._end - time.monotonic() - reserve, 0.0)


def start_watchdog(clock: ShutdownClock) -> threading.Thread:
    """End the process if it is still running ``WATCHDOG_GRACE`` after the budget."""
    clock.begin()

    def watch() -> None:
        time.sleep(clock.remaining() + WATCHDOG_GRACE)
        sys.stderr.write(
            '{"level": "ERROR", "logger": "gateway.shutdown", "message": "shutdown did not '
            "finish within GATEWAY_SHUTDOWN_TIMEOUT plus its margin; exiting now (unwritten "
            'api_logs rows are in the write-ahead log, replayed at the next start)"}\n'
        )
        sys.stderr.flush()
        os._exit(STUCK_EXIT_STATUS)

    thread = threading.Thread(target=watch, name="shutdown-watchdog", daemon=True)
    thread.start()
    return thread
