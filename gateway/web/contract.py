"""The admin API's shapes, declared once: msgspec Structs for request bodies, query strings
and answers, and :class:`Operation`, one endpoint's declaration. Validation (here) and the
OpenAPI document (gateway.web.openapi) both come from them.

Bad input is refused with the error shape every admin endpoint uses: ``code``, ``message``
and ``field`` (the path of the offending value, e.g. ``auth.headers``):

- body not JSON, or nested too deep: 400 ``malformed_json``; too large: 413;
- unknown field: 422 ``unknown_field``; missing one: 422 ``missing_field``; a value of the
  wrong type or outside its bounds: 422 ``invalid_field``;
- a query parameter that does not fit its declaration: 400 ``bad_query``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Generic, TypeVar

import msgspec
import orjson
from aiohttp import web

from gateway.auth.keys import Role
from gateway.db.pool import json_dumps
from gateway.errors import ClientError, Invalid, PayloadTooLarge
from gateway.names import NAME_RE
from gateway.web.pagination import DEFAULT_LIMIT, MAX_LIMIT, SERIAL_CURSOR, TIME_CURSOR

MAX_BODY = 1024 * 1024  # bytes accepted in one admin request body
MAX_QUERY_TEXT = 2048  # characters of one text query parameter
ANY_ROLE = (Role.ADMIN, Role.VIEWER, Role.SERVICE)  # every key but a partner's

# Text PostgreSQL can store: no NUL (text and jsonb refuse it).
NO_NUL = r"^[^\x00]*$"
Text = Annotated[str, msgspec.Meta(pattern=NO_NUL)]
QueryText = Annotated[str, msgspec.Meta(pattern=NO_NUL, max_length=MAX_QUERY_TEXT)]
# A time with its offset (RFC 3339 "date-time": 2026-11-24T10:00:00Z).
Time = Annotated[datetime, msgspec.Meta(tz=True)]


def in_utc(d: datetime) -> datetime:
    """A request's time in UTC, for the database: a time whose offset takes it past the
    year 1 or 9999 (0001-01-01T00:00:00+05:00) becomes the first or last instant."""
    try:
        return d.astimezone(UTC)
    except OverflowError:
        return (datetime.min if d.year == 1 else datetime.max).replace(tzinfo=UTC)


# Entity types and external system names.
Name = Annotated[
    str, msgspec.Meta(pattern=NAME_RE.pattern, description="lowercase letters, digits, _")
]

# Free JSON the gateway stores as jsonb: no NUL in any string or key (jsonb refuses it),
# and nested at most JSON_DEPTH levels below the top object: the schema spells that out
# (client generators take no recursive schema), storable_json checks it.
JSON_DEPTH = 3


def _json_value(depth: int) -> dict[str, Any]:
    """Any JSON without NUL, with arrays and objects nested at most ``depth`` levels
    (below that they are empty): what :func:`storable_json` accepts, spelled out."""
    if depth == 0:
        array: dict[str, Any] = {"type": "array", "items": {}, "maxItems": 0}
        obj: dict[str, Any] = {"type": "object", "maxProperties": 0}
    else:
        inner = _json_value(depth - 1)
        array = {"type": "array", "items": inner}
        obj = {"type": "object", "propertyNames": {"pattern": NO_NUL}}
        obj["additionalProperties"] = inner
    return {
        "anyOf": [
            {"type": "boolean"},
            {"type": "number"},
            {"type": "string", "pattern": NO_NUL},
            array,
            obj,
            {"type": "null"},  # last: openapi-python-client reads the union so
        ]
    }


JSON_VALUE = _json_value(JSON_DEPTH)
JsonObject = Annotated[
    dict[str, Any],
    msgspec.Meta(
        extra_json_schema={
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": JSON_VALUE,
        }
    ),
]
JsonValue = Annotated[Any, msgspec.Meta(extra_json_schema=JSON_VALUE)]
# A query parameter holding JSON (an object or array): documented as an
# application/json parameter (gateway.web.openapi), read as text and parsed by parse_json.
JSON_QUERY = {"x-json-query": True}


# A NUL as JSON writes it: \u0000 after an even number of backslashes (an odd one is
# a literal backslash followed by "u0000").
_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def storable_json(
    value: Any, name: str, max_bytes: int | None = None, *, depth: int = JSON_DEPTH
) -> None:
    """Refuse (ValueError, in a Struct's ``__post_init__``: 422) JSON that jsonb cannot
    hold (a NUL anywhere), nested deeper than the document says (``depth`` levels of
    arrays and objects below the top one), or larger than ``max_bytes`` once written."""
    if _too_deep(value, -1, depth):
        raise ValueError(f"field {name!r}: arrays and objects nest at most {depth} levels below it")
    raw = json_dumps(value)
    if _NUL.search(raw):
        raise ValueError(f"field {name!r} must not contain NUL characters")
    if max_bytes is not None and len(raw) > max_bytes:
        raise ValueError(f"field {name!r} must be at most {max_bytes} bytes as JSON")


def _too_deep(value: Any, level: int, depth: int = JSON_DEPTH) -> bool:
    """Whether a non-empty array or object sits more than ``depth`` levels down."""
    children = value.values() if isinstance(value, dict) else value
    if not isinstance(value, dict | list) or not children:
        return False
    if level >= depth:
        return True
    return any(_too_deep(child, level + 1, depth) for child in children)


class Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A request body: unknown fields are refused (422 unknown_field)."""


class Query(msgspec.Struct, kw_only=True):
    """A query string: each field is one parameter (strings converted to the field's type).
    Parameters not declared are ignored."""


class Answer(msgspec.Struct, kw_only=True):
    """An answer's shape (what the OpenAPI document promises for a status)."""


class ErrorAnswer(Answer):
    """Every error: a stable code, a message for people, and where it helps the field."""

    code: str
    message: str
    field: str | None = None
    request_id: str | None = None


T = TypeVar("T")


class Page(Answer, Generic[T]):
    """One page of a list; ``next_cursor`` (when not null) asks for the next one."""

    items: list[T]
    next_cursor: str | None


class PageQuery(Query):
    """``limit`` and ``cursor`` of a paginated list (gateway.web.pagination)."""

    # The code of the 400 a parameter's bad value answers (others: bad_query).
    __query_codes__: ClassVar[dict[str, str]] = {"cursor": "bad_cursor"}

    limit: Annotated[
        int, msgspec.Meta(ge=1, le=MAX_LIMIT, description=f"page size (default {DEFAULT_LIMIT})")
    ] = DEFAULT_LIMIT
    cursor: (
        Annotated[
            str,
            msgspec.Meta(
                pattern=TIME_CURSOR,
                description="next_cursor of the previous page (empty: the first)",
            ),
        ]
        | None
    ) = None


class SerialPageQuery(PageQuery):
    """A list paged by a bigint id (the audit trail)."""

    cursor: (
        Annotated[
            str,
            msgspec.Meta(
                pattern=SERIAL_CURSOR,
                description="next_cursor of the previous page (empty: the first)",
            ),
        ]
        | None
    ) = None


B = TypeVar("B", bound=Body)
Q = TypeVar("Q", bound=Query)


class FieldError(Invalid):
    """422 for one field of a body, named in ``field``."""

    def __init__(self, message: str, *, code: str, field: str | None) -> None:
        super().__init__(message, code=code)
        self.field = field

    def details(self) -> dict[str, Any]:
        return {} if self.field is None else {"field": self.field}


def whole_numbers(struct: msgspec.Struct, *names: str) -> None:
    """Integer fields also take the JSON number ``7.0`` (JSON Schema calls it an integer
    too): such a field is declared ``Annotated[int, ...] | Annotated[float, ...]`` with
    ``extra_json_schema={"type": "integer"}``, and this turns the fields ``names`` of
    ``struct`` into ints (7.0 -> 7)."""
    for name in names:
        value = getattr(struct, name)
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"field {name!r} must be a whole number")
            setattr(struct, name, int(value))


_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]*)`")
_NAMED = re.compile(r"^field '(?P<name>[^']*)'")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]*)`")


def refusal(exc: msgspec.ValidationError) -> FieldError:
    """The 422 for a body msgspec refused, with the field's path."""
    text = str(exc)
    at = _PATH.search(text)
    path = at.group("path") if at else ""
    message = text[: at.start()] if at else text
    for pattern, code in ((_UNKNOWN, "unknown_field"), (_MISSING, "missing_field")):
        hit = pattern.match(message)
        if hit:
            name = ".".join(p for p in (path, hit.group("name")) if p)
            return FieldError(f"{message} ({code.replace('_', ' ')})", code=code, field=name)
    if not path and message.startswith("Expected `object`"):
        return FieldError("request body must be a JSON object", code="invalid_request", field=None)
    named = _NAMED.match(message)  # a __post_init__ check says which field it refuses
    if not path and named:
        return FieldError(message, code="invalid_field", field=named.group("name"))
    where = f"field {path!r}: " if path else ""
    return FieldError(f"{where}{message}", code="invalid_field", field=path or None)


async def read_bytes(request: web.Request, max_bytes: int = MAX_BODY) -> bytes:
    """The whole body, or 413 past ``max_bytes``."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"request body exceeds {max_bytes} bytes")
    data = bytearray()
    async for chunk in request.content.iter_chunked(65536):
        data += chunk
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"request body exceeds {max_bytes} bytes")
    return bytes(data)


def decode(data: bytes, shape: type[B]) -> B:
    """``data`` (JSON) as ``shape``, or the error the module docstring lists."""
    try:
        return msgspec.json.decode(data, type=shape)
    except msgspec.ValidationError as exc:
        raise refusal(exc) from None
    except msgspec.DecodeError as exc:
        raise ClientError(f"request body is not valid JSON: {exc}", code="malformed_json") from None
    except RecursionError:  # msgspec stops at about 1,000 levels of nesting
        raise ClientError("request body is nested too deep", code="malformed_json") from None


async def read_json_bytes(request: web.Request, max_bytes: int = MAX_BODY) -> bytes:
    """The body of a JSON request, not yet decoded (413, 415 unsupported_media_type)."""
    ctype = request.headers.get("Content-Type", "")
    if ctype and "json" not in ctype.lower():
        raise ClientError("Content-Type must be application/json", code="unsupported_media_type")
    return await read_bytes(request, max_bytes)


async def read_body(request: web.Request, shape: type[B], max_bytes: int = MAX_BODY) -> B:
    """The request body as ``shape`` (400/413/415/422 as the module docstring lists)."""
    return decode(await read_json_bytes(request, max_bytes), shape)


def read_query(request: web.Request, shape: type[Q]) -> Q:
    """The query string as ``shape``; 400 bad_query when a parameter does not fit (or is
    given twice, or is the text ``null`` where a value is expected)."""
    if len(set(request.query)) != len(request.query):
        raise ClientError("a query parameter is given more than once", code="bad_query")
    # An empty cursor is the first page (the cursor patterns allow ""); any other empty
    # parameter is the value "" and checked as such.
    given = {k: v for k, v in request.query.items() if v != "" or k != "cursor"}
    try:
        query = msgspec.convert(given, shape, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        at = _PATH.search(text)
        name = at.group("path") if at else ""
        message = text[: at.start()] if at else text
        code = getattr(shape, "__query_codes__", {}).get(name, "bad_query")
        raise ClientError(
            f"query parameter {name!r}: {message}" if name else message, code=code
        ) from None
    for f in msgspec.structs.fields(shape):
        _strict(f.encode_name, given.get(f.encode_name), getattr(query, f.name), shape)
    return query


_RFC3339_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]")


def _strict(name: str, raw: str | None, value: Any, shape: type[Query]) -> None:
    """What lax conversion takes but the document does not: the text ``null`` as None,
    a number as a time (seconds since 1970)."""
    if raw == "null" and value is None:
        raise ClientError(
            f"query parameter {name!r}: 'null' is not a value (leave it out)", code="bad_query"
        )
    if isinstance(value, datetime) and raw is not None and not _RFC3339_DATE.match(raw):
        code = getattr(shape, "__query_codes__", {}).get(name, "bad_query")
        raise ClientError(
            f"query parameter {name!r} must be a time such as 2026-11-24T10:00:00Z", code=code
        )


def parse_json(raw: str | None, name: str) -> Any:
    """A JSON query parameter (object or array, no NUL), or 400 bad_query."""
    if raw is None:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ClientError(f"query parameter {name!r} must be JSON", code="bad_query") from None
    if (
        not isinstance(value, dict | list)
        or b"\\u0000" in orjson.dumps(value)
        or _too_deep(value, -1)
    ):
        raise ClientError(
            f"query parameter {name!r} must be a JSON object or array without NUL, "
            f"nested at most {JSON_DEPTH} levels",
            code="bad_query",
        )
    return value


def plain(value: msgspec.Struct) -> dict[str, Any]:
    """A Struct's fields as a dict (UNSET fields left out): PATCH bodies as changes."""
    return {k: v for k, v in msgspec.structs.asdict(value).items() if v is not msgspec.UNSET}


# -- operations ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Link:
    """An OpenAPI link: the id this operation answers with feeds ``parameter`` of the
    operation ``target`` (its operationId), e.g. POST /keys -> GET /keys/{key_id}."""

    target: str
    parameter: str
    expression: str = "$response.body#/id"


def links_from(links: Mapping[str, Link], expression: str) -> dict[str, Link]:
    """The same links, taking the id from elsewhere in the answer (``items/0/id``)."""
    return {name: Link(link.target, link.parameter, expression) for name, link in links.items()}


@dataclass(frozen=True, slots=True)
class Operation:
    """One admin endpoint's contract: the OpenAPI document is made from these."""

    operation_id: str
    method: str
    path: str  # as routed, e.g. /admin/v1/keys/{key_id}
    summary: str
    roles: tuple[Role, ...]
    answer: Any = None  # a type (Answer, list[...]) or a raw schema dict
    status: int = 200
    body: type[Body] | None = None
    query: type[Query] | None = None
    body_media: Mapping[str, Any] | None = None  # non-JSON bodies: media type -> schema
    body_required: bool = True  # False: the body may be left out (its defaults apply)
    other_answers: Mapping[int, tuple[Any, str]] = field(default_factory=dict)  # 2xx -> shape
    errors: tuple[int, ...] = ()  # statuses beyond those every operation of its kind has
    error_answers: Mapping[int, Any] = field(default_factory=dict)  # status -> own shape
    links: Mapping[str, Link] = field(default_factory=dict)
    description: str = ""
    path_types: Mapping[str, Any] = field(default_factory=dict)  # name -> schema (not uuid)
