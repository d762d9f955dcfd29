"""Erasure of one data subject from api_logs (gateway/erasure drives it; docs/admin-api.md).

Rows of the tenant whose path, query or bodies hold a needle are found in keyset order
(created_at, id) and rewritten by primary key, ``BATCH_ROWS`` at a time, each batch its
own short transaction with a lock timeout: an UPDATE takes row locks and the partition's
ROW EXCLUSIVE lock, which the COPY writer's inserts into today's partition do not wait on.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from gateway.scrub import Erased, Needles, Scrubber

BATCH_ROWS = 500  # rows read and rewritten per transaction
LOCK_TIMEOUT = "2s"  # a batch gives up rather than queue behind a long lock
_START = (datetime(1970, 1, 1, tzinfo=UTC), uuid.UUID(int=0))

_FIND = """
SELECT created_at, id, path, query, request_body, response_body FROM api_logs
WHERE tenant_id = $1 AND (created_at, id) > ($2, $3)
  AND (path ILIKE ANY ($4) OR query ILIKE ANY ($4)
       OR request_body::text ILIKE ANY ($4) OR response_body::text ILIKE ANY ($4))
ORDER BY created_at, id
LIMIT $5
"""
_UPDATE = """
UPDATE api_logs SET path = $3, query = $4, request_body = $5, response_body = $6
WHERE created_at = $1 AND id = $2
"""


def _scrub_row(s: Scrubber, r: asyncpg.Record) -> tuple[Any, ...] | None:
    path, n1 = s.path(r["path"])
    query, n2 = s.query(r["query"])
    request_body, n3 = s.json(r["request_body"])
    response_body, n4 = s.json(r["response_body"])
    if not n1 + n2 + n3 + n4:
        return None
    return (r["created_at"], r["id"], path, query, request_body, response_body)


async def erase_logs(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, needles: Needles, dry_run: bool = False
) -> list[Erased]:
    """Erase ``needles`` from the tenant's api_logs rows; what changed (or would)."""
    scrubber, patterns = Scrubber(needles), needles.like_patterns()
    after, rows, batches = _START, 0, 0
    while True:
        async with pool.acquire() as conn:
            found = await conn.fetch(_FIND, tenant_id, *after, patterns, BATCH_ROWS)
            if not found:
                break
            after = (found[-1]["created_at"], found[-1]["id"])
            changes = [c for c in (_scrub_row(scrubber, r) for r in found) if c is not None]
            if changes and not dry_run:
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                    await conn.executemany(_UPDATE, changes)
            rows += len(changes)
            batches += 1 if changes else 0
    return [Erased("api_logs", rows, batches)]
