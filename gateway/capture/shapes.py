"""The shapes of the api_logs search endpoints (gateway/capture/api.py), declared once:
they validate the queries and make this feature's part of the OpenAPI document."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from gateway.auth.keys import Role
from gateway.web.contract import (
    JSON_QUERY,
    Answer,
    Link,
    Operation,
    PageQuery,
    QueryText,
    Time,
)
from gateway.web.http import PREFIX

DEFAULT_WINDOW = timedelta(hours=24)  # log search without 'from' looks this far back
MAX_WINDOW = timedelta(days=31)  # a search never spans more partitions than this
LOG_READERS = (Role.ADMIN, Role.VIEWER)
StatusClass = Literal["1xx", "2xx", "3xx", "4xx", "5xx"]
JsonFilter = Annotated[
    str,  # no length limit of its own: the request line's is enough
    msgspec.Meta(
        description="JSON (an object or array) the body contains (jsonb @>)",
        extra_json_schema=JSON_QUERY,
    ),
]


class LogQuery(PageQuery, rename={"from_": "from"}):
    """GET /logs. The window is [from, to): at most 31 days are searched, ending at 'to';
    the answer says which window was searched. from >= to is an empty window."""

    from_: Annotated[Time, msgspec.Meta(description="start (default: 24 h before 'to')")] | None = (
        None
    )
    to: Annotated[Time, msgspec.Meta(description="end, exclusive (default: now)")] | None = None
    route: QueryText | None = None
    method: QueryText | None = None
    status: Annotated[int, msgspec.Meta(ge=100, le=599)] | None = None
    status_class: StatusClass | None = None
    path_prefix: QueryText | None = None
    request_id: QueryText | None = None
    external_system: QueryText | None = None
    key_id: uuid.UUID | None = None
    request_body_contains: JsonFilter | None = None
    response_body_contains: JsonFilter | None = None

    # bad times answer 400 bad_time_range (other parameters: bad_query)
    __query_codes__: ClassVar[dict[str, str]] = {
        **PageQuery.__query_codes__,
        "from": "bad_time_range",
        "to": "bad_time_range",
    }


class LogSummary(Answer):
    id: uuid.UUID
    created_at: Time
    request_id: str
    route: str | None
    upstream: str | None
    method: str
    path: str
    query: str
    status: int
    duration_ms: float
    upstream_ms: float | None
    error_code: str | None
    error_message: str | None
    client_ip: str | None
    user_agent: str | None
    external_system: str | None
    api_key_id: uuid.UUID | None


class LogEntry(LogSummary):
    """One exchange with its headers and bodies, as stored (redacted)."""

    request_headers: list[list[str]]
    response_headers: list[list[str]] | None
    request_body: Any
    response_body: Any
    request_body_format: str
    response_body_format: str
    request_body_size: int
    response_body_size: int
    request_body_truncated: bool
    response_body_truncated: bool
    translated: Annotated[
        dict[str, Any] | None,
        msgspec.Meta(description="ID translation: ids rewritten per field (null: none)"),
    ]


class LogPage(Answer, rename={"from_": "from"}):
    """A page of the search, newest first, and the window searched."""

    items: list[LogSummary]
    next_cursor: str | None
    from_: Time
    to: Time


OPERATIONS = (
    Operation(
        "searchLogs",
        "get",
        f"{PREFIX}/logs",
        "Search api_logs, newest first (admin, viewer)",
        LOG_READERS,
        LogPage,
        query=LogQuery,
        links={"GetLog": Link("getLog", "log_id", "$response.body#/items/0/id")},
    ),
    Operation(
        "getLog",
        "get",
        f"{PREFIX}/logs/{{log_id}}",
        "One log entry with headers and bodies (admin, viewer)",
        LOG_READERS,
        LogEntry,
    ),
)
