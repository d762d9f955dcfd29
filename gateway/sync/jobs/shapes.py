"""The shapes of the sync job endpoints (gateway/sync/jobs/api.py), declared once: they
make this part of the OpenAPI document and read the runs' query."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import msgspec

from gateway.auth.keys import Role
from gateway.routes import ROUTE_NAME_RE
from gateway.web.contract import Answer, Link, Operation, Page, PageQuery, Time
from gateway.web.http import PREFIX as ADMIN_PREFIX

PREFIX = f"{ADMIN_PREFIX}/sync/jobs"
READERS = (Role.ADMIN, Role.VIEWER, Role.SERVICE)
OPERATORS = (Role.ADMIN, Role.SERVICE)
NAME = {"name": {"type": "string", "pattern": ROUTE_NAME_RE.pattern}}  # a job's name


class RunError(Answer):
    id: Any
    error: str


class Run(Answer):
    id: uuid.UUID
    job_id: uuid.UUID
    trigger: Literal["schedule", "manual"]
    runner: Annotated[str, msgspec.Meta(description="host:pid:id of the process that ran it")]
    status: Literal["running", "succeeded", "failed", "abandoned"]
    started_at: Time
    finished_at: Time | None
    cursor_before: str | None
    cursor_after: str | None
    batches: int
    items_read: int
    items_synced: int
    items_failed: int
    items_skipped: int
    items_retried: int
    errors: Annotated[list[RunError], msgspec.Meta(description="the run's first item errors")]
    error: Annotated[str | None, msgspec.Meta(description="why the run itself failed")]


class Job(Answer):
    id: uuid.UUID
    name: str
    external_system: str
    entity_type: str
    direction: Literal["inbound", "outbound"]
    schedule: Annotated[str, msgspec.Meta(description="'every <n>s' or 'cron <expression>'")]
    cursor: Annotated[str | None, msgspec.Meta(description="the last committed cursor")]
    paused: bool
    running: Annotated[bool, msgspec.Meta(description="a runner holds the job right now")]
    auth: Annotated[bool, msgspec.Meta(description="credentials are stored (never shown)")]
    run_requested_at: Time | None
    next_run_at: Time
    lease_owner: str | None
    last_run_at: Time | None
    last_success_at: Time | None
    last_status: str | None
    last_error: str | None
    last_run: dict[str, Any] | None
    created_at: Time
    updated_at: Time


class JobList(Answer):
    items: list[Job]


class RunsQuery(PageQuery):
    pass


ONE = f"{PREFIX}/{{name}}"


BY_NAME = {  # operations that answer a job lead to those that take its name
    "GetJob": Link("getSyncJob", "name", "$response.body#/name"),
    "ListRuns": Link("listSyncJobRuns", "name", "$response.body#/name"),
    "Run": Link("runSyncJob", "name", "$response.body#/name"),
    "Pause": Link("pauseSyncJob", "name", "$response.body#/name"),
    "Resume": Link("resumeSyncJob", "name", "$response.body#/name"),
}
FIRST_BY_NAME = {
    k: Link(v.target, v.parameter, "$response.body#/items/0/name") for k, v in BY_NAME.items()
}


def _command(op_id: str, action: str, summary: str, status: int = 200) -> Operation:
    return Operation(
        op_id,
        "post",
        f"{ONE}/{action}",
        summary,
        OPERATORS,
        Job,
        status=status,
        path_types=NAME,
        links=BY_NAME,
    )


OPERATIONS = (
    Operation(
        "listSyncJobs",
        "get",
        PREFIX,
        "The tenant's sync jobs (routes.yaml syncs:) with their last and next run, cursor and "
        "counts (admin, viewer, service)",
        READERS,
        JobList,
        links=FIRST_BY_NAME,
    ),
    Operation("getSyncJob", "get", ONE, "One sync job", READERS, Job, path_types=NAME),
    Operation(
        "listSyncJobRuns",
        "get",
        f"{ONE}/runs",
        "The job's runs, newest first, with per-run counts and errors",
        READERS,
        Page[Run],
        query=RunsQuery,
        path_types=NAME,
    ),
    _command(
        "runSyncJob",
        "run",
        "Run the job as soon as a runner is free, whatever its schedule (admin, service)",
        202,
    ),
    _command("pauseSyncJob", "pause", "Stop scheduling the job (admin, service)"),
    _command("resumeSyncJob", "resume", "Schedule the job again (admin, service)"),
)
