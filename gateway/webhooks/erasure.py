"""Erasure of one data subject from stored webhooks (gateway/erasure drives it): event
payloads, the answers' excerpts and errors of delivery attempts, deliveries' last errors.
Bounded batches in short transactions, as for api_logs (gateway/capture/erasure.py). A
delivery still pending afterwards sends the erased payload."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway.scrub import Erased, Needles, Scrubber

BATCH_ROWS = 500  # rows read and rewritten per transaction
LOCK_TIMEOUT = "2s"  # a batch gives up rather than queue behind a long lock

Rewrite = Callable[[Scrubber, asyncpg.Record], tuple[Any, ...] | None]


@dataclass(frozen=True, slots=True)
class _Table:
    """One table's search (tenant, keyset after $2, ILIKE patterns $3, limit $4; the key
    column comes first) and rewrite (its parameters from a found row, None: unchanged)."""

    name: str
    find: str
    update: str
    rewrite: Rewrite
    start: Any


def _event(s: Scrubber, r: asyncpg.Record) -> tuple[Any, ...] | None:
    payload, n = s.json(r["payload"])
    return (r["id"], payload) if n else None


def _texts(s: Scrubber, r: asyncpg.Record, *columns: str) -> tuple[Any, ...] | None:
    out, total = [], 0
    for c in columns:
        value, n = s.text(r[c]) if r[c] is not None else (None, 0)
        out.append(value)
        total += n
    return (r["id"], *out) if total else None


TABLES = (
    _Table(
        "webhook_events",
        """SELECT id, payload FROM webhook_events
           WHERE tenant_id = $1 AND id > $2 AND payload::text ILIKE ANY ($3)
           ORDER BY id LIMIT $4""",
        "UPDATE webhook_events SET payload = $2 WHERE id = $1",
        _event,
        uuid.UUID(int=0),
    ),
    _Table(
        "webhook_attempts",
        """SELECT a.id, a.response_excerpt, a.error FROM webhook_attempts a
           JOIN webhook_deliveries d ON d.id = a.delivery_id
           WHERE d.tenant_id = $1 AND a.id > $2
             AND (a.response_excerpt ILIKE ANY ($3) OR a.error ILIKE ANY ($3))
           ORDER BY a.id LIMIT $4""",
        "UPDATE webhook_attempts SET response_excerpt = $2, error = $3 WHERE id = $1",
        lambda s, r: _texts(s, r, "response_excerpt", "error"),
        0,
    ),
    _Table(
        "webhook_deliveries",
        """SELECT id, last_error FROM webhook_deliveries
           WHERE tenant_id = $1 AND id > $2 AND last_error ILIKE ANY ($3)
           ORDER BY id LIMIT $4""",
        "UPDATE webhook_deliveries SET last_error = $2 WHERE id = $1",
        lambda s, r: _texts(s, r, "last_error"),
        uuid.UUID(int=0),
    ),
)


async def erase_webhooks(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, needles: Needles, dry_run: bool = False
) -> list[Erased]:
    """Erase ``needles`` from the tenant's stored webhooks; what changed (or would)."""
    scrubber, patterns = Scrubber(needles), needles.like_patterns()
    return [await _erase(pool, t, tenant_id, scrubber, patterns, dry_run) for t in TABLES]


async def _erase(
    pool: asyncpg.Pool,
    table: _Table,
    tenant_id: uuid.UUID,
    scrubber: Scrubber,
    patterns: list[str],
    dry_run: bool,
) -> Erased:
    after, rows, batches = table.start, 0, 0
    while True:
        async with pool.acquire() as conn:
            found = await conn.fetch(table.find, tenant_id, after, patterns, BATCH_ROWS)
            if not found:
                return Erased(table.name, rows, batches)
            after = found[-1]["id"]
            changes = [c for c in (table.rewrite(scrubber, r) for r in found) if c is not None]
            if changes and not dry_run:
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                    await conn.executemany(table.update, changes)
            rows += len(changes)
            batches += 1 if changes else 0
