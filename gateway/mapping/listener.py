"""LISTEN on 'integration_mappings' and drop what each notification names from the cache.

The trigger in sql/003 notifies on every change, whoever made it. The listener holds its
own connection (outside the pool). While it is down, notifications are missed, so the cache
is cleared when it goes down and again when it comes back; lookups then go to PostgreSQL
until the cache refills.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
import orjson

from gateway import metrics
from gateway.mapping.cache import MappingCache

log = logging.getLogger(__name__)

CHANNEL = "integration_mappings"
CONNECT_TIMEOUT = 5.0  # seconds to open the LISTEN connection


def apply_notification(cache: MappingCache, payload: str) -> None:
    """Drop the rows, tenants or everything a notification names (anything else: all)."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        doc = None
    rows = doc.get("rows") if isinstance(doc, dict) else None
    tenants = doc.get("tenants") if isinstance(doc, dict) else None
    if isinstance(rows, list) and all(isinstance(r, list) and len(r) == 5 for r in rows):
        cache.invalidate_rows((str(a), str(b), str(c), str(d), str(e)) for a, b, c, d, e in rows)
    elif isinstance(tenants, list):
        cache.invalidate_tenants(str(t) for t in tenants)
    else:
        cache.clear()


class Listener:
    def __init__(self, dsn: str, cache: MappingCache, retry_interval: float) -> None:
        self.dsn = dsn
        self.cache = cache
        self.retry_interval = retry_interval
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mapping-listener")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self._listen_once()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("mapping listener: %s; retrying", type(exc).__name__)
            self._down()
            await asyncio.sleep(self.retry_interval)

    async def _listen_once(self) -> None:
        conn = await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _c: lost.set())
        try:
            await conn.add_listener(CHANNEL, self._on_notify)
            self.cache.clear()  # whatever happened while not listening is forgotten
            self.connected.set()
            metrics.MAPPING_LISTENER_UP.set(1)
            while not lost.is_set():
                # asyncpg reports a dead socket only when it next talks to the server.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), timeout=self.retry_interval * 5)
                if not lost.is_set():
                    await conn.execute("SELECT 1")
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=1.0)

    def _down(self) -> None:
        if self.connected.is_set():
            self.connected.clear()
            self.cache.clear()
        metrics.MAPPING_LISTENER_UP.set(0)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        apply_notification(self.cache, payload)
