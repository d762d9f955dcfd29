"""Admin API of sync jobs under /admin/v1/sync/jobs: the tenant's jobs with their last
and next run, cursor and counts; run history; run now; pause and resume."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway.audit import audit
from gateway.auth.keys import ApiKey
from gateway.errors import NotFound
from gateway.sync.jobs import store
from gateway.sync.jobs.shapes import OPERATORS, PREFIX, READERS, RunsQuery
from gateway.web.contract import read_query
from gateway.web.http import POOL, actor, endpoint
from gateway.web.pagination import Keyset, decode_time_cursor

HIDDEN = ("auth_secret", "lease_expires_at", "tenant_id")  # never shown; lease as "running"


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get(PREFIX, list_jobs)
    r.add_get(f"{PREFIX}/{{name}}", get_job)
    r.add_get(f"{PREFIX}/{{name}}/runs", list_runs)
    r.add_post(f"{PREFIX}/{{name}}/run", run_now)
    r.add_post(f"{PREFIX}/{{name}}/pause", pause)
    r.add_post(f"{PREFIX}/{{name}}/resume", resume)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def job_json(row: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: _plain(v) for k, v in row.items() if k not in HIDDEN}
    expires = row["lease_expires_at"]
    out["running"] = expires is not None and expires > datetime.now(UTC)
    out["auth"] = row["auth_secret"] is not None
    return out


def run_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain(v) for k, v in row.items()}


async def _job(request: web.Request, key: ApiKey) -> Any:
    name = request.match_info["name"]
    async with request.app[POOL].acquire() as conn:
        row = await store.get_job(conn, key.tenant_id, name)
    if row is None:
        raise NotFound(f"no sync job {name!r}")
    return row


@endpoint(READERS)
async def list_jobs(request: web.Request, key: ApiKey) -> Any:
    async with request.app[POOL].acquire() as conn:
        rows = await store.list_jobs(conn, key.tenant_id)
    return {"items": [job_json(r) for r in rows]}


@endpoint(READERS)
async def get_job(request: web.Request, key: ApiKey) -> Any:
    return job_json(await _job(request, key))


@endpoint(READERS)
async def list_runs(request: web.Request, key: ApiKey) -> Any:
    query = read_query(request, RunsQuery)
    job = await _job(request, key)
    page = Keyset.of(query.limit, query.cursor, decode_time_cursor)
    async with request.app[POOL].acquire() as conn:
        rows = await store.runs(conn, job["id"], page.after(), page.fetch)
    return page.page(rows, run_json, lambda r: (r["started_at"], r["id"]))


async def _command(request: web.Request, key: ApiKey, action: str) -> dict[str, Any]:
    name = request.match_info["name"]
    async with request.app[POOL].acquire() as conn:
        if action == "run":
            found = await store.request_run(conn, key.tenant_id, name)
        else:
            found = await store.set_paused(conn, key.tenant_id, name, action == "pause")
        if not found:
            raise NotFound(f"no sync job {name!r}")
        await audit(
            conn,
            actor=actor(key),
            actor_key_id=key.id,
            tenant_id=key.tenant_id,
            action=f"sync_job.{action}",
            object_type="sync_job",
            object_id=name,
        )
        row = await store.get_job(conn, key.tenant_id, name)
    assert row is not None
    return job_json(row)


@endpoint(OPERATORS, status=202)
async def run_now(request: web.Request, key: ApiKey) -> Any:
    """The job runs as soon as a runner is free (paused jobs run once resumed)."""
    return await _command(request, key, "run")


@endpoint(OPERATORS)
async def pause(request: web.Request, key: ApiKey) -> Any:
    return await _command(request, key, "pause")


@endpoint(OPERATORS)
async def resume(request: web.Request, key: ApiKey) -> Any:
    return await _command(request, key, "resume")
