"""OpenAPI paths of the sync job endpoints (assembled by gateway.app)."""

from __future__ import annotations

from typing import Any

from gateway.web.openapi_legacy import CURSOR, LIMIT, NULLABLE_TIME, TIME, UUID, answer, refusals

COUNT = {"type": "integer"}
RUN = {
    "type": "object",
    "required": ["id", "status", "started_at"],
    "properties": {
        "id": UUID,
        "job_id": UUID,
        "trigger": {"type": "string", "enum": ["schedule", "manual"]},
        "runner": {"type": "string", "description": "host:pid:id of the process that ran it"},
        "status": {"type": "string", "enum": ["running", "succeeded", "failed", "abandoned"]},
        "started_at": TIME,
        "finished_at": NULLABLE_TIME,
        "cursor_before": {"type": ["string", "null"]},
        "cursor_after": {"type": ["string", "null"]},
        **{
            k: COUNT
            for k in (
                "batches",
                "items_read",
                "items_synced",
                "items_failed",
                "items_skipped",
                "items_retried",
            )
        },
        "errors": {
            "type": "array",
            "description": "the run's first item errors",
            "items": {"type": "object", "properties": {"id": {}, "error": {"type": "string"}}},
        },
        "error": {"type": ["string", "null"], "description": "why the run itself failed"},
    },
}
JOB = {
    "type": "object",
    "required": ["id", "name", "direction", "schedule", "paused", "running"],
    "properties": {
        "id": UUID,
        "name": {"type": "string"},
        "external_system": {"type": "string"},
        "entity_type": {"type": "string"},
        "direction": {"type": "string", "enum": ["inbound", "outbound"]},
        "schedule": {"type": "string", "description": "'every <n>s' or 'cron <expression>'"},
        "cursor": {"type": ["string", "null"], "description": "the last committed cursor"},
        "paused": {"type": "boolean"},
        "running": {"type": "boolean", "description": "a runner holds the job right now"},
        "auth": {"type": "boolean", "description": "credentials are stored (never shown)"},
        "run_requested_at": NULLABLE_TIME,
        "next_run_at": TIME,
        "lease_owner": {"type": ["string", "null"]},
        "last_run_at": NULLABLE_TIME,
        "last_success_at": NULLABLE_TIME,
        "last_status": {"type": ["string", "null"]},
        "last_error": {"type": ["string", "null"]},
        "last_run": {"anyOf": [RUN, {"type": "null"}]},
        "created_at": TIME,
        "updated_at": TIME,
    },
}
NAME_PARAM = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}


def _page(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items"],
        "properties": {
            "items": {"type": "array", "items": item},
            "next_cursor": {"type": ["string", "null"]},
        },
    }


def _command(summary: str, status: str = "200") -> dict[str, Any]:
    return {
        "parameters": [NAME_PARAM],
        "post": {
            "summary": summary,
            "responses": {status: answer(JOB), **refusals(404)},
        },
    }


def paths() -> dict[str, Any]:
    base = "/admin/v1/sync/jobs"
    return {
        base: {
            "get": {
                "summary": "The tenant's sync jobs (routes.yaml syncs:) with their last and "
                "next run, cursor and counts (admin, viewer, service)",
                "responses": {"200": answer(_page(JOB))},
            }
        },
        f"{base}/{{name}}": {
            "parameters": [NAME_PARAM],
            "get": {
                "summary": "One sync job (admin, viewer, service)",
                "responses": {"200": answer(JOB), **refusals(404)},
            },
        },
        f"{base}/{{name}}/runs": {
            "parameters": [NAME_PARAM],
            "get": {
                "summary": "The job's runs, newest first, with per-run counts and errors "
                "(admin, viewer, service)",
                "parameters": [LIMIT, CURSOR],
                "responses": {"200": answer(_page(RUN)), **refusals(400, 404)},
            },
        },
        f"{base}/{{name}}/run": _command(
            "Run the job as soon as a runner is free, whatever its schedule (admin, service)",
            "202",
        ),
        f"{base}/{{name}}/pause": _command("Stop scheduling the job (admin, service)"),
        f"{base}/{{name}}/resume": _command("Schedule the job again (admin, service)"),
    }
