"""OpenAPI path of the erasure endpoint, its schemas generated from the msgspec Structs."""

from __future__ import annotations

from typing import Any

from gateway.erasure.model import ErasureRequest, ErasureResult
from gateway.web.openapi_legacy import answer, refusals
from gateway.web.openapi_legacy import inline_schema as schema


def paths() -> dict[str, Any]:
    return {
        "/admin/v1/erasures": {
            "post": {
                "summary": "Erase one data subject's personal data from the tenant's stored "
                "api_logs, webhook events and delivery attempts",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": schema(ErasureRequest)}},
                },
                "responses": {
                    "200": answer(schema(ErasureResult), "What was erased (counts only)"),
                    **refusals(400, 413, 422),
                },
            }
        }
    }
