"""OpenAPI path of the erasure endpoint, its schemas generated from the msgspec Structs."""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.erasure.model import ErasureRequest, ErasureResult
from gateway.web.openapi_legacy import answer, refusals

_REF = "#/components/schemas/{name}"


def schema(struct: type) -> dict[str, Any]:
    """The Struct's JSON schema with its references inlined (the paths carry no components)."""
    (top,), components = msgspec.json.schema_components([struct], ref_template=_REF)
    inlined: dict[str, Any] = _inline(top, components)
    return inlined


def _inline(node: Any, components: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            return _inline(components[ref.rsplit("/", 1)[1]], components)
        return {k: _inline(v, components) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, components) for v in node]
    return node


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
