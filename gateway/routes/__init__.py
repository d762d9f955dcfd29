"""routes.yaml: the route objects (:mod:`.model`), the loader that validates a file
into them (:mod:`.loader`) and the matcher that picks a request's route (:mod:`.matcher`)."""

from gateway.routes.loader import (
    MAX_RETRIES,
    ROUTE_NAME_RE,
    TRANSLATE_FIELDS,
    load_routes,
    parse_routes,
)
from gateway.routes.matcher import PARAM_RE, RouteMatch, RouteTable, compile_path
from gateway.routes.model import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_RETRY_BACKOFF,
    HTTP_METHODS,
    IDEMPOTENT_METHODS,
    SYNC_DIRECTIONS,
    SYNC_SOURCES,
    AutoMap,
    CaptureOptions,
    EmitRule,
    RateLimit,
    Route,
    SyncOptions,
    Translation,
    Upstream,
)

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_RETRY_BACKOFF",
    "HTTP_METHODS",
    "IDEMPOTENT_METHODS",
    "MAX_RETRIES",
    "PARAM_RE",
    "ROUTE_NAME_RE",
    "SYNC_DIRECTIONS",
    "SYNC_SOURCES",
    "TRANSLATE_FIELDS",
    "AutoMap",
    "CaptureOptions",
    "EmitRule",
    "RateLimit",
    "Route",
    "RouteMatch",
    "RouteTable",
    "SyncOptions",
    "Translation",
    "Upstream",
    "compile_path",
    "load_routes",
    "parse_routes",
]
