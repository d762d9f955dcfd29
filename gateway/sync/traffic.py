"""Sync reports derived from proxied calls on routes that declare ``sync:`` (pure)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.routes import SyncOptions
from gateway.sync.model import Direction, EntityKey, Report, Side, Status

# Only calls that reached (or tried to reach) the upstream are sync attempts; refusals by
# the gateway itself (401, 403, 429, 404 …) are not.
UPSTREAM_FAILURES = frozenset({"upstream_unavailable", "upstream_timeout", "upstream_error"})
CLIENT_GONE_STATUS = 499  # the caller hung up: the outcome is unknown, so nothing is said


def pointer_get(doc: Any, pointer: str) -> Any:
    """RFC 6901 lookup (``/items/0/id``); None when any step is missing."""
    for raw in pointer.split("/")[1:]:
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(doc, dict):
            doc = doc.get(token)
        elif isinstance(doc, list) and token.isdigit() and int(token) < len(doc):
            doc = doc[int(token)]
        else:
            return None
    return doc


@dataclass(frozen=True, slots=True)
class Call:
    """What the proxy tells sync about one finished call on a route with ``sync:``. On a
    translated route the parameters and bodies are the upstream's side (internal ids)."""

    tenant_id: str | None
    external_system: str | None
    status: int
    reached_upstream: bool  # the upstream answered (its status is the outcome)
    error_code: str | None
    error_message: str | None
    params: Mapping[str, str]
    request_json: Any  # the request body as a JSON value (None: not JSON, or none)
    response_json: Any  # the upstream's answer as a JSON value (None: not JSON, or none)


def entity_value(options: SyncOptions, call: Call) -> Any:
    """The entity id the route's rule points at."""
    if options.source == "path":
        return call.params.get(options.locator)
    body = call.request_json if options.source == "request" else call.response_json
    return pointer_get(body, options.locator)


def report_for(options: SyncOptions, call: Call) -> tuple[uuid.UUID, Report] | None:
    """(tenant, report) for a finished call, or None when it says nothing about sync."""
    if call.tenant_id is None or call.external_system is None:
        return None
    if call.status == CLIENT_GONE_STATUS:
        return None
    if not call.reached_upstream and call.error_code not in UPSTREAM_FAILURES:
        return None
    try:
        entity_id = uuid.UUID(str(entity_value(options, call)))
    except ValueError:
        return None  # not an internal id (yet): nothing to key the status on
    ok = 200 <= call.status < 300 and call.error_code is None
    error = None if ok else (call.error_message or f"upstream answered HTTP {call.status}")
    key = EntityKey(
        options.entity_type, entity_id, call.external_system, Direction(options.direction)
    )
    status = Status.SUCCEEDED if ok else Status.FAILED
    return uuid.UUID(call.tenant_id), Report(key, status, Side.EXTERNAL, error=error)
