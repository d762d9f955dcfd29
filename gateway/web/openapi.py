"""The admin API's OpenAPI 3.1 document (served at /admin/v1/openapi.json), made from the
:class:`~gateway.web.contract.Operation` each feature declares: request and answer schemas
come from the same msgspec Structs that validate the requests.

Every operation documents every status it can answer, with the shared error schema:
401 (no valid key), 403 (role), 429 (the key's rate limit), 503 (database unavailable),
404 where the path names an object, 400/413/415/422 where a body is read, 400 where a
query is read, plus those the operation declares. Links lead from the operations that
answer with an id to those that take it.

tests/integration/test_admin_api.py checks that the document's paths and methods are
exactly the routes the application serves.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
import orjson
from aiohttp import web

from gateway.web.contract import JSON_VALUE, NO_NUL, Answer, ErrorAnswer, Operation

DOCUMENT = web.AppKey("openapi_document", dict)
REF = "#/components/schemas/{name}"

STATUS_TEXT = {
    400: "Bad input (malformed JSON, bad query parameter, bad cursor or time range)",
    401: "Missing, unknown, revoked or expired key",
    403: "Role not allowed",
    404: "Not found (or another tenant's)",
    409: "Conflict",
    413: "Body too large",
    415: "Unsupported media type",
    422: "Invalid content (unknown, missing or invalid field, named in `field`)",
    429: "The key's rate limit is exhausted (Retry-After)",
    503: "Database unavailable",
}
ALWAYS = (401, 403, 429, 503)


class OpenApiDocument(Answer):
    """This document (OpenAPI 3.1)."""

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]


SELF = Operation(
    operation_id="getOpenApiDocument",
    method="get",
    path="/admin/v1/openapi.json",
    summary="This document",
    roles=(),
    answer=OpenApiDocument,
)


JSON_FILTER = {  # a JSON query parameter (gateway.web.contract.JSON_QUERY)
    "anyOf": [
        {
            "type": "object",
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": JSON_VALUE,
        },
        {"type": "array", "items": JSON_VALUE},
    ]
}


def document(*features: Iterable[Operation]) -> dict[str, Any]:
    """The whole document: the common frame plus each feature's operations."""
    operations = [SELF, *(op for ops in features for op in ops)]
    types = _types(operations)
    (_, components) = msgspec.json.schema_components(types, ref_template=REF)
    for t in _structs(types):
        extra = getattr(t, "__json_schema_extra__", None)
        if extra is not None and t.__name__ in components:  # what a Struct cannot say (if/then)
            components[t.__name__].update(extra)
    paths: dict[str, Any] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method] = _operation(op, components)
    for op in operations:
        if op.query is not None:
            components.pop(op.query.__name__, None)  # inlined as parameters
    out = {
        "openapi": "3.1.0",
        "info": {
            "title": "Integration Hub gateway — admin API",
            "version": "1.0.0",
            "description": "Tenant-scoped administration. Authenticate with an API key "
            "(Authorization: Bearer <token> or X-Api-Key). A method an admin path does not "
            "serve answers 405 with Allow.",
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": paths,
    }
    return _plain_names(out)


def _plain_names(doc: dict[str, Any]) -> dict[str, Any]:
    """Two features' types of one name (mapping's and sync's Direction) are qualified by
    msgspec with their module (gateway.mapping.store.Direction): name them by feature
    instead (MappingDirection), which client generators take."""
    schemas = doc["components"]["schemas"]
    renames = {
        old: old.split(".")[1].capitalize() + old.rsplit(".", 1)[1]
        for old in schemas
        if old.startswith("gateway.")
    }
    if not renames:
        return doc
    text = orjson.dumps(doc).decode()
    for old, new in renames.items():
        text = text.replace(f'"#/components/schemas/{old}"', f'"#/components/schemas/{new}"')
    out: dict[str, Any] = orjson.loads(text)
    comps = out["components"]["schemas"]
    for old, new in renames.items():
        comps[new] = comps.pop(old)
    return out


def _structs(types: list[Any]) -> list[type]:
    """Every Struct class in ``types`` or nested in them (fields, lists, unions)."""
    found: list[type] = []
    todo = list(msgspec.inspect.multi_type_info([t for t in types if not isinstance(t, dict)]))
    while todo:
        info = todo.pop()
        if isinstance(info, msgspec.inspect.StructType):
            if info.cls in found:
                continue
            found.append(info.cls)
            todo.extend(f.type for f in info.fields)
        elif isinstance(info, msgspec.inspect.UnionType):
            todo.extend(info.types)
        elif isinstance(info, msgspec.inspect.Metadata):
            todo.append(info.type)
        elif isinstance(info, msgspec.inspect.CollectionType):
            todo.append(info.item_type)
        elif isinstance(info, msgspec.inspect.DictType):
            todo.extend((info.key_type, info.value_type))
    return found


def _types(operations: list[Operation]) -> list[Any]:
    found: list[Any] = [ErrorAnswer]
    for op in operations:
        shapes = (shape for shape, _ in op.other_answers.values())
        for t in (op.body, op.query, op.answer, *op.error_answers.values(), *shapes):
            if t is not None and not isinstance(t, dict) and t not in found:
                found.append(t)
    return found


def _schema(t: Any) -> dict[str, Any]:
    if isinstance(t, dict):
        return t
    (schema,), _ = msgspec.json.schema_components([t], ref_template=REF)
    return schema


def _answer(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "Created" if op.status == 201 else "OK"}
    if op.answer is not None:
        ok = _answer(_schema(op.answer), ok["description"])
    if op.links:
        ok["links"] = {
            name: {
                "operationId": link.target,
                "parameters": {link.parameter: link.expression},
            }
            for name, link in op.links.items()
        }
    out: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary}
    if op.description:
        out["description"] = op.description
    parameters = [*_path_parameters(op), *_query_parameters(op, components)]
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        out["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": _schema(op.body)}},
        }
    elif op.body_media is not None:
        out["requestBody"] = {
            "required": True,
            "content": {media: {"schema": s} for media, s in op.body_media.items()},
        }
    if not op.roles:
        out["security"] = []
    others = {
        str(status): _answer(_schema(shape), text)
        for status, (shape, text) in op.other_answers.items()
    }
    out["responses"] = {str(op.status): ok, **others, **_refusals(op)}
    return out


def _refusals(op: Operation) -> dict[str, Any]:
    statuses = set(op.errors)
    if op.roles:
        statuses.update(ALWAYS)
    if "{" in op.path:
        statuses.add(404)
    if op.body is not None or op.body_media is not None:
        statuses.update((400, 413, 415, 422))
    if op.query is not None:
        statuses.add(400)
    error = _schema(ErrorAnswer)
    return {
        str(s): _answer(
            _schema(op.error_answers[s]) if s in op.error_answers else error, STATUS_TEXT[s]
        )
        for s in sorted(statuses)
    }


def _path_parameters(op: Operation) -> list[dict[str, Any]]:
    names = [part[1:-1] for part in op.path.split("/") if part.startswith("{")]
    uuid = {"type": "string", "format": "uuid"}
    return [
        {"name": n, "in": "path", "required": True, "schema": op.path_types.get(n, uuid)}
        for n in names
    ]


def _query_parameters(op: Operation, components: dict[str, Any]) -> list[dict[str, Any]]:
    if op.query is None:
        return []
    schema = components[op.query.__name__]
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema.get("properties", {}).items():
        prop = _not_null(prop)
        description = prop.pop("description", "")
        prop.pop("default", None)
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
        if prop.pop("x-json-query", False):
            param["content"] = {"application/json": {"schema": JSON_FILTER}}
        else:
            param["schema"] = prop
        if description:
            param["description"] = description
        out.append(param)
    return out


def _not_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema: absent is how a query string says null."""
    options = [o for o in prop.get("anyOf", ()) if o != {"type": "null"}]
    if "anyOf" in prop and len(options) == 1:
        rest = {k: v for k, v in prop.items() if k != "anyOf"}
        return {**rest, **options[0]}
    return dict(prop)


async def serve(request: web.Request) -> web.Response:
    """GET /admin/v1/openapi.json: the document the app assembled at start."""
    body = orjson.dumps(request.app[DOCUMENT])
    return web.Response(body=body, content_type="application/json")
