"""All SQL of data_sync_status: applying reports in batches, reads, the change feed, stats."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from gateway.sync.model import (
    EntityKey,
    Outcome,
    Report,
    Side,
    Status,
    SyncState,
    apply,
    resolve,
    retry_now,
)

COLUMNS = (
    "id, tenant_id, entity_type, entity_id, external_system, direction, status, version, "
    "pending_side, pending_version, conflict, last_attempt_at, last_success_at, "
    "unsynced_since, error_message, retry_count, next_retry_at, created_at, updated_at, "
    "change_xid::text AS change_xid"
)
KEY_SQL = "(entity_type, entity_id, external_system, direction)"
UNNEST_KEYS = "unnest($2::text[], $3::uuid[], $4::text[], $5::text[])"
STATS_LOCK_KEY = 0x6761_7465_0005  # "gate" + 5: one process computes sync stats at a time
DEADLOCK_RETRIES = 3  # a batch that lost a deadlock against another writer is re-run


@dataclass(frozen=True, slots=True)
class Applied:
    """What one report did: its outcome and the row it concerns."""

    outcome: Outcome
    row_id: uuid.UUID
    state: SyncState
    new_conflict: bool = False  # this report put the entity into conflict


def _key_arrays(keys: Sequence[EntityKey]) -> list[list[Any]]:
    return [
        [k.entity_type for k in keys],
        [k.entity_id for k in keys],
        [k.external_system for k in keys],
        [k.direction.value for k in keys],
    ]


def _key_of(r: asyncpg.Record) -> tuple[str, uuid.UUID, str, str]:
    return (r["entity_type"], r["entity_id"], r["external_system"], r["direction"])


def _tuple(k: EntityKey) -> tuple[str, uuid.UUID, str, str]:
    return (k.entity_type, k.entity_id, k.external_system, k.direction.value)


async def apply_reports(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, reports: Sequence[Report], now: datetime
) -> list[Applied]:
    """Apply reports in order, in one transaction, with one statement per step (not per row).

    Rows are inserted and locked in one global order (the entity key), so concurrent
    batches over the same entities wait for each other instead of deadlocking; a deadlock
    with some other writer is retried."""
    keys = sorted(set(r.key for r in reports), key=_tuple)
    for attempt in range(DEADLOCK_RETRIES):
        try:
            return await _apply_once(conn, tenant_id, keys, reports, now)
        except asyncpg.DeadlockDetectedError:
            if attempt == DEADLOCK_RETRIES - 1:
                raise
    raise AssertionError("unreachable")


async def _apply_once(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    keys: list[EntityKey],
    reports: Sequence[Report],
    now: datetime,
) -> list[Applied]:
    async with conn.transaction():
        # PostgreSQL's generic plan for these prepared statements (used from their sixth
        # run) re-scans the tenant's rows for every key of the batch: 8 s instead of 0.05 s
        # for 1,000 keys against 7,000 rows (bench/sync_jobs.py). Plan each run for its keys.
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        created = await _insert_missing(conn, tenant_id, keys)
        rows = await _lock_rows(conn, tenant_id, keys)
        states = {k: (None if k in created else SyncState.from_row(r)) for k, r in rows.items()}
        before = dict(states)
        results = []
        for report in reports:
            t = _tuple(report.key)
            prev = states[t]
            outcome, after = apply(prev, report, now)
            states[t] = after
            was_conflict = prev is not None and prev.status is Status.CONFLICT
            new_conflict = after.status is Status.CONFLICT and not was_conflict
            results.append(Applied(outcome, rows[t]["id"], after, new_conflict))
        changed = {t: s for t, s in states.items() if s is not None and s != before[t]}
        await _write_states(conn, {rows[t]["id"]: s for t, s in changed.items()})
    return results


async def _insert_missing(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, keys: Sequence[EntityKey]
) -> set[tuple[str, uuid.UUID, str, str]]:
    # Insert-then-lock makes two batches creating the same entity at once wait, not fail.
    inserted = await conn.fetch(
        f"""INSERT INTO data_sync_status
                (tenant_id, entity_type, entity_id, external_system, direction, status)
            SELECT $1, t, e, s, d, 'pending' FROM {UNNEST_KEYS} AS u(t, e, s, d)
            ORDER BY t, e, s, d
            ON CONFLICT (tenant_id, entity_type, entity_id, external_system, direction)
                WHERE deleted_at IS NULL DO NOTHING
            RETURNING {KEY_SQL[1:-1]}""",
        tenant_id,
        *_key_arrays(keys),
    )
    return {_key_of(r) for r in inserted}


async def _lock_rows(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, keys: Sequence[EntityKey]
) -> dict[tuple[str, uuid.UUID, str, str], asyncpg.Record]:
    rows = await conn.fetch(
        f"""SELECT {COLUMNS} FROM data_sync_status
            WHERE tenant_id = $1 AND deleted_at IS NULL
              AND {KEY_SQL} IN (SELECT * FROM {UNNEST_KEYS})
            ORDER BY entity_type, entity_id, external_system, direction FOR UPDATE""",
        tenant_id,
        *_key_arrays(keys),
    )
    return {_key_of(r): r for r in rows}


async def _write_states(conn: asyncpg.Connection, states: dict[uuid.UUID, SyncState]) -> None:
    if not states:
        return
    ids = list(states)
    s = [states[i] for i in ids]
    await conn.execute(
        """UPDATE data_sync_status AS d SET
               status = u.status, version = u.version, pending_side = u.pending_side,
               pending_version = u.pending_version, conflict = u.conflict::jsonb,
               last_attempt_at = u.last_attempt_at, last_success_at = u.last_success_at,
               unsynced_since = u.unsynced_since, error_message = u.error_message,
               retry_count = u.retry_count, next_retry_at = u.next_retry_at
           FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::bigint[],
                       $6::text[], $7::timestamptz[], $8::timestamptz[], $9::timestamptz[],
                       $10::text[], $11::int[], $12::timestamptz[])
                AS u(id, status, version, pending_side, pending_version, conflict,
                     last_attempt_at, last_success_at, unsynced_since, error_message,
                     retry_count, next_retry_at)
           WHERE d.id = u.id""",
        ids,
        [x.status.value for x in s],
        [x.version for x in s],
        [x.pending_side.value if x.pending_side else None for x in s],
        [x.pending_version for x in s],
        [orjson.dumps(x.conflict).decode() if x.conflict is not None else None for x in s],
        [x.last_attempt_at for x in s],
        [x.last_success_at for x in s],
        [x.unsynced_since for x in s],
        [x.error_message for x in s],
        [x.retry_count for x in s],
        [x.next_retry_at for x in s],
    )


async def get(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, row_id: uuid.UUID
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {COLUMNS} FROM data_sync_status "
        "WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL",
        row_id,
        tenant_id,
    )


async def change_one(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    row_id: uuid.UUID,
    action: str,
    now: datetime,
    side: Side | None = None,
) -> tuple[asyncpg.Record, SyncState] | None:
    """Resolve a conflict (``action='resolve'``) or retry a failure now (``'retry'``).

    Raises ValueError when the entity is not in a state that allows it."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"SELECT {COLUMNS} FROM data_sync_status "
            "WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL FOR UPDATE",
            row_id,
            tenant_id,
        )
        if row is None:
            return None
        state = SyncState.from_row(row)
        if action == "resolve":
            assert side is not None
            after = resolve(state, side, now)
        else:
            after = retry_now(state, now)
        await _write_states(conn, {row_id: after})
        fresh = await get(conn, tenant_id, row_id)
    assert fresh is not None
    return fresh, after


async def summary(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            """SELECT external_system,
                  count(*) FILTER (WHERE status = 'pending')     AS pending,
                  count(*) FILTER (WHERE status = 'in_progress') AS in_progress,
                  count(*) FILTER (WHERE status = 'succeeded')   AS succeeded,
                  count(*) FILTER (WHERE status = 'failed')      AS failed,
                  count(*) FILTER (WHERE status = 'conflict')    AS conflict,
                  min(unsynced_since) FILTER (WHERE status = 'pending') AS oldest_pending,
                  min(unsynced_since) FILTER (WHERE status = 'failed')  AS oldest_failed,
                  max(last_success_at) AS last_success
           FROM data_sync_status WHERE tenant_id = $1 AND deleted_at IS NULL
           GROUP BY external_system ORDER BY external_system""",
            tenant_id,
        )
    )


FEED_KINDS = ("mapping", "sync_status")  # order of kinds within one transaction id
MAPPING_FEED_COLUMNS = (
    "id, entity_type, internal_id AS entity_id, internal_id, external_system, external_id, "
    "direction, sync_status, origin, created_at, updated_at, deleted_at, "
    "change_xid::text AS change_xid"
)
FeedCursor = tuple[int, str, uuid.UUID]


async def changes(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    external_system: str,
    after: FeedCursor | None,
    limit: int,
) -> list[tuple[str, asyncpg.Record]]:
    """(kind, row) of sync rows and mappings changed after the cursor, oldest change first.

    Only changes of transactions older than every transaction still running are returned:
    one that commits later with a smaller id than the cursor would otherwise be skipped.
    The cursor is (transaction id, kind, row id); kinds sort as in FEED_KINDS."""
    cursor = after if after is not None else (0, "", uuid.UUID(int=0))
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        horizon = await conn.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
        found: list[tuple[tuple[int, str, uuid.UUID], str, asyncpg.Record]] = []
        for kind, table, columns in (
            ("mapping", "integration_mappings", MAPPING_FEED_COLUMNS),
            ("sync_status", "data_sync_status", f"{COLUMNS}, deleted_at"),
        ):
            for row in await _feed_rows(
                conn, kind, table, columns, tenant_id, external_system, cursor, horizon, limit
            ):
                found.append(((int(row["change_xid"]), kind, row["id"]), kind, row))
    found.sort(key=lambda f: f[0])
    return [(kind, row) for _, kind, row in found[:limit]]


async def _feed_rows(
    conn: asyncpg.Connection,
    kind: str,
    table: str,
    columns: str,
    tenant_id: uuid.UUID,
    external_system: str,
    cursor: FeedCursor,
    horizon: str,
    limit: int,
) -> list[asyncpg.Record]:
    xid, after_kind, row_id = cursor
    # Rows of this kind come after the cursor when their transaction is later, or the same
    # transaction and (this kind sorts later, or the same kind and a larger id).
    if kind > after_kind:
        position = "t.change_xid >= $3::text::xid8"
    elif kind == after_kind:
        position = "(t.change_xid, t.id) > ($3::text::xid8, $4)"
    else:
        position = "t.change_xid > $3::text::xid8"
    # ORDER BY names the table's columns: the output exposes change_xid as text, and an
    # output name would win, sorting '1003' before '989'.
    return list(
        await conn.fetch(
            f"""SELECT {columns} FROM {table} AS t
                WHERE t.tenant_id = $1 AND t.external_system = $2 AND {position}
                  AND ($4::uuid IS NOT NULL) AND t.change_xid < $5::text::xid8
                ORDER BY t.change_xid, t.id LIMIT {int(limit)}""",
            tenant_id,
            external_system,
            str(xid),
            row_id,
            horizon,
        )
    )


async def compute_stats(conn: asyncpg.Connection) -> list[asyncpg.Record] | None:
    """Per external system: counts by status, oldest unsynced, last success — or None when
    another gateway process holds the stats lock right now (it computes them instead)."""
    async with conn.transaction():
        got = await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", STATS_LOCK_KEY)
        if not got:
            return None
        return list(
            await conn.fetch(
                """SELECT external_system, status, count(*) AS n,
                          extract(epoch FROM now() - min(unsynced_since)) AS oldest_unsynced,
                          extract(epoch FROM now() - max(last_success_at)) AS since_success
                   FROM data_sync_status WHERE deleted_at IS NULL
                   GROUP BY external_system, status"""
            )
        )
