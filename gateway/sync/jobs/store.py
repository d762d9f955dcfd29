"""All SQL of sync jobs: registering configured jobs, claiming a due job under a lease,
recording a batch (statuses, cursor, run counts in one transaction), finishing a run, and
the admin API's reads and commands."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from gateway.crypto import SecretBox
from gateway.errors import ConfigError
from gateway.sync import store as sync_store
from gateway.sync.jobs.config import SyncJob
from gateway.sync.model import Report, Status

MAX_RUN_ERRORS = 50  # item errors kept per run (the rest are counted, and in data_sync_status)
JOB_COLUMNS = (
    "id, name, tenant_id, external_system, entity_type, direction, schedule, auth_secret, "
    "cursor, paused, run_requested_at, next_run_at, lease_owner, lease_expires_at, "
    "last_run_at, last_success_at, last_status, last_error, created_at, updated_at"
)
RUN_COLUMNS = (
    "id, job_id, trigger, runner, status, started_at, finished_at, cursor_before, "
    "cursor_after, batches, items_read, items_synced, items_failed, items_skipped, "
    "items_retried, errors, error"
)


class LeaseLost(Exception):
    """This runner no longer holds the job's lease (it expired and another took over)."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A job this runner now holds, and its run."""

    job_id: uuid.UUID
    run_id: uuid.UUID
    cursor: str | None
    auth_secret: str | None
    trigger: str
    started_at: datetime


@dataclass(slots=True)
class BatchRecord:
    """What one batch did, written in one transaction with the cursor it covers."""

    reports: list[Report]
    failed_items: list[tuple[uuid.UUID, int | None, Any]]  # (entity id, version, raw item)
    succeeded: list[tuple[uuid.UUID, int | None]]
    cursor: str | None  # None: the cursor stays (a batch of retries)
    read: int = 0
    synced: int = 0
    failed: int = 0
    skipped: int = 0
    retried: int = 0
    errors: list[dict[str, str]] | None = None


async def register(
    conn: asyncpg.Connection,
    jobs: Sequence[SyncJob],
    box: SecretBox,
    environ: Any,
    now: datetime,
) -> None:
    """Upsert the configured jobs (cursor, pause, history are kept). ConfigError names the
    job's field when its tenant does not exist."""
    tenants = {
        r["id"]
        for r in await conn.fetch(
            "SELECT id FROM tenants WHERE id = ANY($1::uuid[]) AND deleted_at IS NULL",
            [j.tenant_id for j in jobs],
        )
    }
    missing = [
        f"{j.where}: field 'tenant': no tenant {j.tenant_id}"
        for j in jobs
        if j.tenant_id not in tenants
    ]
    if missing:
        raise ConfigError("\n".join(missing))
    for job in jobs:
        secret = job.auth.secret(environ)
        sealed = box.encrypt(orjson.dumps(secret).decode()) if secret is not None else None
        first = now if job.schedule.interval is not None else job.schedule.next_after(now)
        await conn.execute(
            """INSERT INTO sync_jobs (name, tenant_id, external_system, entity_type, direction,
                                      schedule, auth_secret, next_run_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
               ON CONFLICT (name) DO UPDATE SET
                   tenant_id = EXCLUDED.tenant_id, external_system = EXCLUDED.external_system,
                   entity_type = EXCLUDED.entity_type, direction = EXCLUDED.direction,
                   auth_secret = EXCLUDED.auth_secret, schedule = EXCLUDED.schedule,
                   next_run_at = CASE WHEN sync_jobs.schedule = EXCLUDED.schedule
                                      THEN sync_jobs.next_run_at
                                      ELSE EXCLUDED.next_run_at END,
                   updated_at = now()""",
            job.name,
            job.tenant_id,
            job.external_system,
            job.entity_type,
            job.direction.value,
            job.schedule.describe(),
            sealed,
            first,
        )


async def claim(
    conn: asyncpg.Connection, names: Sequence[str], owner: str, lease: float, now: datetime
) -> tuple[str, Claimed] | None:
    """Take one due job among ``names`` (not paused, not leased or its lease expired), and
    start its run; a run left 'running' by a dead runner becomes 'abandoned'."""
    async with conn.transaction():
        row = await conn.fetchrow(
            """UPDATE sync_jobs SET lease_owner = $2,
                      lease_expires_at = now() + make_interval(secs => $3), updated_at = now()
               WHERE id = (SELECT id FROM sync_jobs
                           WHERE name = ANY($1::text[]) AND NOT paused
                             AND (next_run_at <= $4 OR run_requested_at IS NOT NULL)
                             AND (lease_owner IS NULL OR lease_expires_at < now())
                           ORDER BY run_requested_at NULLS LAST, next_run_at
                           LIMIT 1 FOR UPDATE SKIP LOCKED)
               RETURNING id, name, tenant_id, cursor, auth_secret, run_requested_at""",
            list(names),
            owner,
            lease,
            now,
        )
        if row is None:
            return None
        await conn.execute(
            """UPDATE sync_job_runs SET status = 'abandoned', finished_at = now(),
                      error = 'the runner stopped holding the job (its lease expired)'
               WHERE job_id = $1 AND status = 'running'""",
            row["id"],
        )
        trigger = "manual" if row["run_requested_at"] is not None else "schedule"
        run = await conn.fetchrow(
            """INSERT INTO sync_job_runs (job_id, tenant_id, trigger, runner, cursor_before,
                                          cursor_after)
               VALUES ($1, $2, $3, $4, $5, $5) RETURNING id, started_at""",
            row["id"],
            row["tenant_id"],
            trigger,
            owner,
            row["cursor"],
        )
    claimed = Claimed(
        row["id"], run["id"], row["cursor"], row["auth_secret"], trigger, run["started_at"]
    )
    return row["name"], claimed


async def renew(conn: asyncpg.Connection, job_id: uuid.UUID, owner: str, lease: float) -> bool:
    """Extend the lease; False when this runner no longer holds it."""
    got = await conn.fetchval(
        """UPDATE sync_jobs SET lease_expires_at = now() + make_interval(secs => $3)
           WHERE id = $1 AND lease_owner = $2 RETURNING id""",
        job_id,
        owner,
        lease,
    )
    return got is not None


async def record_batch(
    conn: asyncpg.Connection,
    job: SyncJob,
    claimed: Claimed,
    owner: str,
    lease: float,
    batch: BatchRecord,
    now: datetime,
) -> list[sync_store.Applied]:
    """Item statuses, items awaiting retry, the cursor and the run's counts, in one
    transaction, and only while this runner holds the lease (else LeaseLost)."""
    async with conn.transaction():
        held = await conn.fetchval(
            """UPDATE sync_jobs SET lease_expires_at = now() + make_interval(secs => $3),
                      cursor = COALESCE($4, cursor), updated_at = now()
               WHERE id = $1 AND lease_owner = $2 RETURNING id""",
            claimed.job_id,
            owner,
            lease,
            batch.cursor,
        )
        if held is None:
            raise LeaseLost(job.name)
        applied = []
        if batch.reports:
            applied = await sync_store.apply_reports(conn, job.tenant_id, batch.reports, now)
        await _keep_failed(conn, claimed.job_id, batch, applied)
        await conn.execute(
            """UPDATE sync_job_runs SET batches = batches + 1, items_read = items_read + $2,
                      items_synced = items_synced + $3, items_failed = items_failed + $4,
                      items_skipped = items_skipped + $5, items_retried = items_retried + $6,
                      cursor_after = COALESCE($7, cursor_after),
                      errors = CASE WHEN jsonb_array_length(errors) >= $9 THEN errors
                                    ELSE errors || $8::jsonb END
               WHERE id = $1""",
            claimed.run_id,
            batch.read,
            batch.synced,
            batch.failed,
            batch.skipped,
            batch.retried,
            batch.cursor,
            (batch.errors or [])[:MAX_RUN_ERRORS],
            MAX_RUN_ERRORS,
        )
    return applied


async def _keep_failed(
    conn: asyncpg.Connection,
    job_id: uuid.UUID,
    batch: BatchRecord,
    applied: Sequence[sync_store.Applied],
) -> None:
    """Failed items (that the status rules did not refuse as stale) wait for their retry;
    items that succeeded stop waiting unless a newer version of theirs failed since."""
    failed_now = {
        r.key.entity_id
        for r, a in zip(batch.reports, applied, strict=True)
        if a.state.status is Status.FAILED
    }
    keep = [f for f in batch.failed_items if f[0] in failed_now]
    if keep:
        await conn.execute(
            """INSERT INTO sync_job_items (job_id, entity_id, version, item)
               SELECT $1, e, v, i FROM unnest($2::uuid[], $3::bigint[], $4::jsonb[]) AS u(e, v, i)
               ON CONFLICT (job_id, entity_id) DO UPDATE SET
                   version = EXCLUDED.version, item = EXCLUDED.item, updated_at = now()
               WHERE sync_job_items.version IS NULL OR EXCLUDED.version IS NULL
                  OR EXCLUDED.version >= sync_job_items.version""",
            job_id,
            [k[0] for k in keep],
            [k[1] for k in keep],
            [k[2] for k in keep],
        )
    if batch.succeeded:
        await conn.execute(
            """DELETE FROM sync_job_items s USING unnest($2::uuid[], $3::bigint[]) AS u(e, v)
               WHERE s.job_id = $1 AND s.entity_id = u.e
                 AND (u.v IS NULL OR s.version IS NULL OR s.version <= u.v)""",
            job_id,
            [s[0] for s in batch.succeeded],
            [s[1] for s in batch.succeeded],
        )


async def due_items(
    conn: asyncpg.Connection, job: SyncJob, job_id: uuid.UUID, now: datetime, limit: int
) -> list[Any]:
    """Failed items whose retry is due (within the job's retry limit), or that a person
    made due again (``retry``, ``resolve``), oldest first: the raw items, as stored."""
    rows = await conn.fetch(
        """SELECT i.item FROM sync_job_items i
           JOIN data_sync_status d ON d.tenant_id = $2 AND d.entity_type = $3
                AND d.entity_id = i.entity_id AND d.external_system = $4 AND d.direction = $5
                AND d.deleted_at IS NULL
           WHERE i.job_id = $1 AND d.next_retry_at <= $6
             AND ((d.status = 'failed' AND d.retry_count <= $7) OR d.status = 'pending')
           ORDER BY d.next_retry_at LIMIT $8""",
        job_id,
        job.tenant_id,
        job.entity_type,
        job.external_system,
        job.direction.value,
        now,
        job.max_retries,
        limit,
    )
    return [r["item"] for r in rows]


async def states(
    conn: asyncpg.Connection, job: SyncJob, entity_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, tuple[str, int | None]]:
    """entity id → (status, synced version) of the job's entities that have a status."""
    rows = await conn.fetch(
        """SELECT entity_id, status, version FROM data_sync_status
           WHERE tenant_id = $1 AND entity_type = $2 AND external_system = $3
             AND direction = $4 AND deleted_at IS NULL AND entity_id = ANY($5::uuid[])""",
        job.tenant_id,
        job.entity_type,
        job.external_system,
        job.direction.value,
        list(entity_ids),
    )
    return {r["entity_id"]: (r["status"], r["version"]) for r in rows}


async def finish(
    conn: asyncpg.Connection,
    claimed: Claimed,
    owner: str,
    status: str,
    error: str | None,
    next_run_at: datetime,
) -> bool:
    """End the run and hand the job back with its next run time; False when the lease had
    been lost meanwhile (the run is then left to whoever holds the job)."""
    async with conn.transaction():
        job = await conn.fetchval(
            """UPDATE sync_jobs SET lease_owner = NULL, lease_expires_at = NULL,
                      next_run_at = $3, last_run_at = $4, last_status = $5, last_error = $6,
                      last_success_at = CASE WHEN $5 = 'succeeded' THEN now()
                                             ELSE last_success_at END,
                      run_requested_at = CASE WHEN run_requested_at <= $4 THEN NULL
                                              ELSE run_requested_at END,
                      updated_at = now()
               WHERE id = $1 AND lease_owner = $2 RETURNING id""",
            claimed.job_id,
            owner,
            next_run_at,
            claimed.started_at,
            status,
            error,
        )
        if job is None:
            return False
        await conn.execute(
            """UPDATE sync_job_runs SET status = $2, error = $3, finished_at = now()
               WHERE id = $1 AND status = 'running'""",
            claimed.run_id,
            status,
            error,
        )
    return True


# -- the admin API ---------------------------------------------------------------------------


async def list_jobs(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            f"""SELECT {JOB_COLUMNS}, r.last_run FROM sync_jobs j
                LEFT JOIN LATERAL (
                    SELECT to_jsonb(x) AS last_run FROM (
                        SELECT {RUN_COLUMNS} FROM sync_job_runs
                        WHERE job_id = j.id ORDER BY started_at DESC, id DESC LIMIT 1) x
                ) r ON true
                WHERE j.tenant_id = $1 ORDER BY j.name""",
            tenant_id,
        )
    )


async def get_job(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, name: str
) -> asyncpg.Record | None:
    rows = [r for r in await list_jobs(conn, tenant_id) if r["name"] == name]
    return rows[0] if rows else None


async def runs(
    conn: asyncpg.Connection,
    job_id: uuid.UUID,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[asyncpg.Record]:
    after = "AND (started_at, id) < ($2, $3)" if before is not None else "AND $2::int IS NULL"
    args: list[Any] = [job_id, *(before if before is not None else (None,))]
    return list(
        await conn.fetch(
            f"""SELECT {RUN_COLUMNS} FROM sync_job_runs WHERE job_id = $1 {after}
                ORDER BY started_at DESC, id DESC LIMIT {int(limit)}""",
            *args,
        )
    )


async def request_run(conn: asyncpg.Connection, tenant_id: uuid.UUID, name: str) -> bool:
    got = await conn.fetchval(
        """UPDATE sync_jobs SET run_requested_at = now(), updated_at = now()
           WHERE tenant_id = $1 AND name = $2 RETURNING id""",
        tenant_id,
        name,
    )
    return got is not None


async def set_paused(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, name: str, paused: bool
) -> bool:
    got = await conn.fetchval(
        """UPDATE sync_jobs SET paused = $3, updated_at = now()
           WHERE tenant_id = $1 AND name = $2 RETURNING id""",
        tenant_id,
        name,
        paused,
    )
    return got is not None


async def last_successes(conn: asyncpg.Connection, names: Sequence[str]) -> dict[str, datetime]:
    rows = await conn.fetch(
        "SELECT name, last_success_at FROM sync_jobs WHERE name = ANY($1::text[])", list(names)
    )
    return {r["name"]: r["last_success_at"] for r in rows if r["last_success_at"] is not None}
