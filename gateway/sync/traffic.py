"""Sync reports derived from proxied calls on routes that declare ``sync:`` (pure)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.capture.exchange import Exchange
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


def entity_value(options: SyncOptions, params: Mapping[str, str], ex: Exchange) -> Any:
    if options.source == "path":
        # On a translated route the proxy keeps the parameters as forwarded (internal ids).
        return ex.extra.get("params", params).get(options.locator)
    # Likewise the bodies as forwarded and as answered, when the route translated ids.
    if options.source == "request" and ex.extra.get("forwarded_body") is not None:
        return pointer_get(ex.extra["forwarded_body"], options.locator)
    if options.source == "response" and ex.extra.get("upstream_body"):
        try:
            return pointer_get(orjson.loads(ex.extra["upstream_body"]), options.locator)
        except orjson.JSONDecodeError:
            return None
    body = ex.request_body if options.source == "request" else ex.response_body
    return pointer_get(body.value, options.locator) if body.format == "json" else None


def report_for(
    options: SyncOptions, params: Mapping[str, str], ex: Exchange
) -> tuple[uuid.UUID, Report] | None:
    """(tenant, report) for a finished call, or None when it says nothing about sync."""
    if ex.tenant_id is None or ex.external_system is None or ex.status == CLIENT_GONE_STATUS:
        return None
    if ex.upstream_ms is None and ex.error_code not in UPSTREAM_FAILURES:
        return None
    try:
        entity_id = uuid.UUID(str(entity_value(options, params, ex)))
    except ValueError:
        return None  # not an internal id (yet): nothing to key the status on
    ok = 200 <= ex.status < 300 and ex.error_code is None
    error = None if ok else (ex.error_message or f"upstream answered HTTP {ex.status}")
    key = EntityKey(
        options.entity_type, entity_id, ex.external_system, Direction(options.direction)
    )
    status = Status.SUCCEEDED if ok else Status.FAILED
    return uuid.UUID(ex.tenant_id), Report(key, status, Side.EXTERNAL, error=error)
