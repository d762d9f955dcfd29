"""One request/response exchange as it is being proxied, and its api_logs row."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.capture.record import (
    EMPTY_BODY,
    Body,
    Redactor,
    clean_text,
    describe_body,
    describe_serialised,
    omitted,
    stored,
    stored_body,
    unparsed_json,
    uuid7,
)
from gateway.routes import CaptureOptions

_JSON_STARTS = (b"{", b"[")


@dataclass(frozen=True, slots=True)
class CapturePolicy:
    """What to keep of one route's traffic (route options merged with the global defaults)."""

    max_body_bytes: int
    request_body: bool
    response_body: bool
    redactor: Redactor
    redact_headers: frozenset[str]

    @classmethod
    def build(
        cls,
        options: CaptureOptions,
        default_cap: int,
        fields: frozenset[str],
        headers: frozenset[str],
    ) -> CapturePolicy:
        cap = default_cap if options.max_body_bytes is None else options.max_body_bytes
        redact_headers = headers | options.redact_headers
        return cls(
            max_body_bytes=cap,
            request_body=options.request_body,
            response_body=options.response_body,
            # A header's secret travels in bodies and queries too ({"authorization": ...},
            # ?api_key=...): its name is redacted there like a field's.
            redactor=Redactor(fields | options.redact_fields | redact_headers),
            redact_headers=redact_headers,
        )

    def query(self, raw: str) -> str:
        """The query column: ``raw`` with sensitive parameters' values redacted."""
        return clean_text(self.redactor.query(raw))

    def body(
        self,
        enabled: bool,
        data: bytes,
        size: int,
        content_type: str,
        encoding: str,
        parse: bool = False,
        checked: bool = False,
    ) -> Body:
        """``parse``: the value will be asked for (see describe_body). ``checked``: ``data``
        is known to be JSON (RFC 8259), as ID translation's scanner found a body it read
        or wrote (gateway/_idscan.c), so the fast path leaves out its syntax check."""
        if size == 0:
            return EMPTY_BODY
        if not enabled:
            return omitted(size)
        # describe_body's fast path, first: a complete, uncompressed body within the cap
        # that the scan finds plain JSON is kept as received (most answers); one whose
        # value will be asked for (``parse``) is parsed by describe_body instead.
        plain = self.redactor.plain_json
        if (
            not parse
            and plain is not None
            and not encoding
            and size == len(data) <= self.max_body_bytes
            and (data[:1] in _JSON_STARTS or "json" in content_type)
            and (plain.scanned(data) if checked else plain(data))
        ):
            return unparsed_json(data)
        return describe_body(
            data, size, self.max_body_bytes, self.redactor, content_type, encoding, parse
        )

    def serialised_body(self, enabled: bool, value: Any, data: bytes) -> Body:
        """A body the gateway wrote itself from ``value`` (see describe_serialised)."""
        if not enabled:
            return omitted(len(data)) if data else EMPTY_BODY
        return describe_serialised(value, data, self.max_body_bytes, self.redactor)


@dataclass(slots=True)
class Exchange:
    created_at: datetime
    started: float
    request_id: str
    method: str
    path: str
    query: str
    request_headers: list[list[str]]
    client_ip: str | None
    user_agent: str | None
    route: str | None = None
    upstream: str | None = None
    status: int = 0
    request_body: Body = EMPTY_BODY
    response_headers: list[list[str]] | None = None
    response_body: Body = EMPTY_BODY
    upstream_ms: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    tenant_id: str | None = None
    api_key_id: str | None = None
    external_system: str | None = None
    translated: Any = None  # ID translation: which fields were rewritten (gateway.mapping)
    # On translated routes, what went to and came from the upstream (internal ids): sync
    # status and route events are keyed on these, the row shows the partner's side.
    forwarded_params: dict[str, str] | None = None
    forwarded_body: Any = None  # the request body as forwarded, parsed
    upstream_body: bytes | None = None  # the upstream's answer before translation

    def fail(self, code: str, message: str) -> None:
        self.error_code = code
        self.error_message = clean_text(message)

    def to_row(self, duration_ms: float) -> tuple[Any, ...]:
        """The api_logs row, in record.COLUMNS order."""
        rq, rs = self.request_body, self.response_body
        return (
            uuid7(self.created_at.timestamp()),
            self.created_at,
            self.tenant_id,
            self.api_key_id,
            self.external_system,
            self.request_id,
            self.route,
            self.upstream,
            self.method,
            self.path,
            self.query,
            stored(self.request_headers),
            stored_body(rq),
            rq.format,
            rq.size,
            rq.truncated,
            stored(self.response_headers),
            stored_body(rs),
            rs.format,
            rs.size,
            rs.truncated,
            self.status,
            duration_ms,
            self.upstream_ms,
            self.error_code,
            self.error_message,
            self.client_ip,
            self.user_agent,
            stored(self.translated),
        )
