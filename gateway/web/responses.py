"""JSON answers the gateway writes itself (errors, health)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.db.pool import json_dumps
from gateway.errors import GatewayError

JSON_TYPE = "application/json"


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=json_dumps(payload), status=status, content_type=JSON_TYPE, headers=headers
    )


def error_payload(exc: GatewayError, request_id: str | None) -> dict[str, Any]:
    payload: dict[str, Any] = {"code": exc.code, "message": exc.message, **exc.details()}
    if request_id is not None:
        payload["request_id"] = request_id
    return payload


def error_response(exc: GatewayError, request_id: str | None) -> web.Response:
    headers = exc.headers()
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    return json_response(error_payload(exc, request_id), exc.status, headers)
