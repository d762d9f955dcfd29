"""The route objects routes.yaml is loaded into: frozen, validated once at start."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from yarl import URL

from gateway.pointers import Trie

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Methods that may be retried on connection failure: repeating them changes nothing.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
DEFAULT_CONNECT_TIMEOUT = 5.0  # seconds to open a TCP connection to an upstream
DEFAULT_READ_TIMEOUT = 30.0  # seconds of silence tolerated while reading an upstream answer
DEFAULT_RETRY_BACKOFF = 0.1  # first wait between connection retries; doubles each time
SYNC_SOURCES = ("path", "request", "response")
SYNC_DIRECTIONS = ("inbound", "outbound", "bidirectional")


@dataclass(frozen=True, slots=True)
class Upstream:
    name: str
    url: URL
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    retries: int = 0
    retry_backoff: float = DEFAULT_RETRY_BACKOFF


@dataclass(frozen=True, slots=True)
class CaptureOptions:
    max_body_bytes: int | None = None  # None: the GATEWAY_CAPTURE_MAX_BODY_BYTES default
    request_body: bool = True
    response_body: bool = True
    redact_fields: frozenset[str] = frozenset()
    redact_headers: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class RateLimit:
    requests: int
    per_seconds: float


@dataclass(frozen=True, slots=True)
class SyncOptions:
    """A route whose calls synchronise one entity: its outcome goes to data_sync_status."""

    entity_type: str
    source: str  # 'path' (a path parameter), 'request' or 'response' (a JSON pointer)
    locator: str  # the parameter name, or the pointer such as /reservation/id
    direction: str = "inbound"


@dataclass(frozen=True, slots=True)
class AutoMap:
    """After a successful create, map the request's external id to the answer's new id."""

    entity_type: str
    external_id: tuple[str, ...]  # pointer segments into the request body
    internal_id: tuple[str, ...]  # pointer segments into the response body
    statuses: frozenset[int] = frozenset({201})


@dataclass(frozen=True, slots=True)
class Translation:
    """Which parts of a route's traffic hold ids of which entity type (see routes.yaml)."""

    path_params: tuple[tuple[str, str], ...] = ()  # (parameter, entity type)
    query_params: tuple[tuple[str, str], ...] = ()
    request_fields: tuple[tuple[str, str], ...] = ()  # (pointer, entity type)
    response_fields: tuple[tuple[str, str], ...] = ()
    refuse_unknown: bool = True  # False: unknown external ids pass through unchanged
    unknown_status: int | None = None  # None: 404 for path parameters, 422 elsewhere
    auto_map: AutoMap | None = None
    request_trie: Trie = field(default_factory=Trie, compare=False, repr=False)
    response_trie: Trie = field(default_factory=Trie, compare=False, repr=False)

    @property
    def reads_request_body(self) -> bool:
        """Whether the request body is parsed: it holds ids, or auto_map's external id."""
        return bool(self.request_trie) or self.auto_map is not None


@dataclass(frozen=True, slots=True)
class EmitRule:
    """routes.yaml `emit`: publish a webhook event when a proxied answer matches."""

    event_type: str
    statuses: frozenset[int] = frozenset()  # empty: any 2xx
    methods: frozenset[str] = frozenset()  # empty: any of the route's methods

    def matches(self, method: str, status: int) -> bool:
        if self.methods and method not in self.methods:
            return False
        return status in self.statuses if self.statuses else 200 <= status < 300


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    path: str
    methods: frozenset[str]
    upstream: Upstream
    regex: re.Pattern[str] = field(repr=False, compare=False)
    host: str | None = None
    strip_prefix: str = ""
    capture: CaptureOptions = CaptureOptions()
    public: bool = False  # True: no API key needed
    external_systems: frozenset[str] = frozenset()  # partner systems allowed (empty: all)
    rate_limit: RateLimit | None = None  # per API key, on this route
    sync: SyncOptions | None = None  # record the synced entity's outcome
    translate: Translation | None = None  # ID translation (gateway.mapping)
    emit: tuple[EmitRule, ...] = ()  # webhook events published from successful answers

    def upstream_target(self, raw_path: str, query_string: str) -> str:
        """The request target sent upstream for a matched request: the upstream's base
        path, the rest of the (raw, still percent-encoded) path, the query."""
        rest = raw_path[len(self.strip_prefix) :] if self.strip_prefix else raw_path
        if not rest.startswith("/"):
            rest = "/" + rest
        target = self.upstream.url.raw_path.rstrip("/") + rest
        return f"{target}?{query_string}" if query_string else target

    def upstream_url(self, raw_path: str, query_string: str) -> URL:
        """The upstream URL for a matched request. Always on the upstream's own origin: a
        target such as ``//other.example/x`` is a path there, never a network-path
        reference resolved against it (which would leave for another host)."""
        target = self.upstream_target(raw_path, query_string)
        return URL(str(self.upstream.url.origin()) + target, encoded=True)
