"""Admin API input for subscriptions and events: checked field by field, each problem a
422 naming the field. Secrets are encrypted here, before anything reaches the store."""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.crypto import SecretBox
from gateway.errors import Invalid
from gateway.names import is_event_type, is_name
from gateway.web.http import check_fields, field
from gateway.webhooks.model import AuthType

PATTERN_RE = re.compile(r"^(\*|[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\*)?)$")
HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")
SECRET_RE = re.compile(r"^whsec_[A-Za-z0-9+/]{32,88}={0,2}$")
SECRET_BYTES = 24  # random bytes of a generated signing secret (as Svix)
MAX_EVENT_TYPES = 100
MAX_NAME = 200
MAX_URL = 2048
MAX_TEXT = 4096  # characters of one auth value or header value
MAX_HEADERS = 20
MAX_SCHEDULE_DELAY = 7 * 24 * 3600.0  # seconds: one retry step is at most a week
MAX_ATTEMPTS = 50
DEFAULT_MAX_ATTEMPTS = 8  # as many as the default schedule has steps (mirrors the SQL default)
DEFAULT_TIMEOUT = 15.0  # seconds per attempt (mirrors the SQL default)
MAX_TIMEOUT = 300.0  # seconds per attempt
MIN_TIMEOUT = 0.1
MAX_CONCURRENCY = 1000
MAX_MULTIPLIER = 10.0
MAX_GRACE = 7 * 24 * 3600.0  # seconds the previous secret may keep signing after a rotation
DEFAULT_GRACE = 24 * 3600.0
# Headers the gateway sets itself; a subscription's custom headers may not replace them.
RESERVED_HEADERS = frozenset(
    {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "host",
        "connection",
        "user-agent",
    }
)
SUBSCRIPTION_FIELDS = frozenset(
    {
        "name",
        "url",
        "event_types",
        "filter",
        "auth",
        "secret",
        "retry_policy",
        "max_concurrency",
        "payload",
        "external_system",
        "active",
        # issue 21 options, checked by gateway/webhooks/options.py
        "ordering",
        "coalesce",
        "suppress_own_changes",
        "rate_limit",
        "signature",
        "verify",
    }
)


def bad(name: str, message: str) -> Invalid:
    return Invalid(f"field {name!r} {message}", code="invalid_field")


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def check_secret(raw: Any, name: str = "secret") -> str:
    if not isinstance(raw, str) or not SECRET_RE.match(raw):
        raise bad(name, "must look like whsec_<base64 of 24 to 64 bytes>")
    try:
        size = len(base64.b64decode(raw[len("whsec_") :], validate=True))
    except ValueError:
        raise bad(name, "must look like whsec_<base64 of 24 to 64 bytes>") from None
    if not 24 <= size <= 64:
        raise bad(name, "must carry 24 to 64 bytes")
    return raw


def json_value(raw: Any, name: str) -> Any:
    """Any JSON value PostgreSQL's jsonb can hold (no NUL character)."""
    if _has_nul(raw):
        raise bad(name, "must not contain NUL characters")
    return raw


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def text(body: Mapping[str, Any], name: str, limit: int, *, required: bool = False) -> Any:
    value = field(body, name, str, nullable=not required)
    if value is None:
        return None
    if not 1 <= len(value.strip()) <= limit:
        raise bad(name, f"must be 1 to {limit} characters")
    return value


def number(raw: Any, name: str, lo: float, hi: float, *, integer: bool = False) -> Any:
    wrong_kind = not isinstance(raw, int | float) or (integer and not isinstance(raw, int))
    if isinstance(raw, bool) or wrong_kind or not lo <= raw <= hi:
        kind = "an integer" if integer else "a number"
        raise bad(name, f"must be {kind} in [{lo:g}, {hi:g}]")
    return raw


def event_types(raw: Any) -> list[str]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_EVENT_TYPES:
        raise bad("event_types", f"must be a list of 1 to {MAX_EVENT_TYPES} event types")
    for item in raw:
        if not isinstance(item, str) or len(item) > MAX_NAME or not PATTERN_RE.match(item):
            raise bad(
                "event_types",
                "items are event types such as 'reservation.created', 'reservation.*' or '*'",
            )
    return list(dict.fromkeys(raw))


def event_type(raw: Any, name: str = "type") -> str:
    if not is_event_type(raw):
        raise bad(name, "must be an event type such as 'reservation.created'")
    return raw


def auth(raw: Any, box: SecretBox) -> dict[str, Any]:
    """The auth columns: type, encrypted value, header names (values never stored clear)."""
    if not isinstance(raw, dict):
        raise bad("auth", 'must be an object such as {"type": "bearer", "token": "..."}')
    try:
        kind = AuthType(str(raw.get("type")))
    except ValueError:
        raise bad("auth.type", "must be one of none, bearer, basic, headers") from None
    spec = {
        AuthType.NONE: (set(), set()),
        AuthType.BEARER: ({"token"}, {"token"}),
        AuthType.BASIC: ({"username", "password"}, {"username", "password"}),
        AuthType.HEADERS: ({"headers"}, {"headers"}),
    }[kind]
    check_fields(raw, {"type", *spec[0]}, spec[1])
    if kind is AuthType.NONE:
        return {"auth_type": kind.value, "auth_secret": None, "auth_header_names": []}
    if kind is AuthType.HEADERS:
        value: dict[str, Any] = {"headers": _headers(raw["headers"])}
    else:
        value = {k: _auth_text(raw, k) for k in spec[0]}
    names = sorted(value["headers"]) if kind is AuthType.HEADERS else []
    return {
        "auth_type": kind.value,
        "auth_secret": box.encrypt(orjson.dumps(value).decode()),
        "auth_header_names": names,
    }


def _auth_text(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_TEXT:
        raise bad(f"auth.{key}", f"must be 1 to {MAX_TEXT} characters")
    if any(c in value for c in "\r\n\x00") or (key == "username" and ":" in value):
        raise bad(f"auth.{key}", "contains a character a header cannot carry")
    return value


def _headers(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict) or not 1 <= len(raw) <= MAX_HEADERS:
        raise bad("auth.headers", f"must be an object of 1 to {MAX_HEADERS} headers")
    out = {}
    for name, value in raw.items():
        if not HEADER_NAME_RE.match(name) or name.lower() in RESERVED_HEADERS:
            raise bad("auth.headers", f"header name {name[:100]!r} is not allowed")
        if (
            not isinstance(value, str)
            or len(value) > MAX_TEXT
            or any(c in value for c in "\r\n\x00")
        ):
            raise bad("auth.headers", f"value of {name!r} must be a single-line string")
        out[name] = value
    return out


def retry_policy(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise bad("retry_policy", "must be an object")
    check_fields(raw, {"max_attempts", "schedule", "backoff", "timeout"})
    # The policy is replaced as a whole: what is not given takes its default again.
    out: dict[str, Any] = {
        "max_attempts": number(
            raw.get("max_attempts", DEFAULT_MAX_ATTEMPTS),
            "retry_policy.max_attempts",
            1,
            MAX_ATTEMPTS,
            integer=True,
        ),
        "attempt_timeout": float(
            number(
                raw.get("timeout", DEFAULT_TIMEOUT),
                "retry_policy.timeout",
                MIN_TIMEOUT,
                MAX_TIMEOUT,
            )
        ),
    }
    if raw.get("schedule") is not None and raw.get("backoff") is not None:
        raise bad("retry_policy", "takes a schedule or a backoff, not both")
    out["retry_schedule"] = _schedule(raw.get("schedule"))
    out.update(_backoff(raw.get("backoff")))
    return out


def _schedule(raw: Any) -> list[float] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_ATTEMPTS:
        raise bad("retry_policy.schedule", f"must be a list of 1 to {MAX_ATTEMPTS} delays")
    return [float(number(v, "retry_policy.schedule", 0, MAX_SCHEDULE_DELAY)) for v in raw]


def _backoff(raw: Any) -> dict[str, Any]:
    keys = ("backoff_initial", "backoff_multiplier", "backoff_max")
    if raw is None:
        return dict.fromkeys(keys)
    if not isinstance(raw, dict):
        raise bad("retry_policy.backoff", 'must be {"initial", "multiplier", "max"}')
    check_fields(raw, {"initial", "multiplier", "max"}, {"initial"})
    initial = float(
        number(raw["initial"], "retry_policy.backoff.initial", 0.001, MAX_SCHEDULE_DELAY)
    )
    mult = float(
        number(raw.get("multiplier", 2), "retry_policy.backoff.multiplier", 1, MAX_MULTIPLIER)
    )
    top = float(
        number(
            raw.get("max", MAX_SCHEDULE_DELAY),
            "retry_policy.backoff.max",
            initial,
            MAX_SCHEDULE_DELAY,
        )
    )
    return dict(zip(keys, (initial, mult, top), strict=True))


def payload_options(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise bad("payload", "must be an object with 'fields' and/or 'template'")
    check_fields(raw, {"fields", "template"})
    fields = raw.get("fields")
    if fields is not None:
        if not isinstance(fields, dict) or not 1 <= len(fields) <= MAX_EVENT_TYPES:
            raise bad(
                "payload.fields", 'must map output names to paths, e.g. {"id": "reservation.id"}'
            )
        for name, path in fields.items():
            if (
                not name
                or "\x00" in name
                or not isinstance(path, str)
                or not path
                or "\x00" in path
            ):
                raise bad("payload.fields", "names and paths must be non-empty strings")
    template = json_value(raw.get("template"), "payload.template")
    return {"payload_fields": fields, "payload_template": template}


def external_system(raw: Any, name: str = "external_system") -> str | None:
    if raw is None:
        return None
    if not is_name(raw):
        raise bad(name, "must be a name such as booking_engine")
    return raw


def subscription(body: Mapping[str, Any], box: SecretBox, *, creating: bool) -> dict[str, Any]:
    """Column values from a POST (every required field) or a PATCH (only what is given).
    The URL is returned as given; the caller checks it against SSRF."""
    check_fields(
        body,
        SUBSCRIPTION_FIELDS - (set() if creating else {"secret"}),
        {"name", "url", "event_types"} if creating else (),
    )
    out = _identity(body)
    if body.get("auth") is not None or creating:
        out.update(auth(body.get("auth") or {"type": "none"}, box))
    if body.get("retry_policy") is not None:
        out.update(retry_policy(body["retry_policy"]))
    if body.get("max_concurrency") is not None:
        out["max_concurrency"] = number(
            body["max_concurrency"], "max_concurrency", 1, MAX_CONCURRENCY, integer=True
        )
    if body.get("payload") is not None:
        out.update(payload_options(body["payload"]))
    if "external_system" in body:
        out["external_system"] = external_system(body["external_system"])
    if body.get("active") is not None:
        out["active"] = field(body, "active", bool)
    return out


def _identity(body: Mapping[str, Any]) -> dict[str, Any]:
    """Name, URL, event types and filter: what the subscription listens to and where."""
    out: dict[str, Any] = {}
    if "name" in body:
        out["name"] = text(body, "name", MAX_NAME, required=True)
    if "url" in body:
        out["url"] = text(body, "url", MAX_URL, required=True)
    if "event_types" in body:
        out["event_types"] = event_types(body["event_types"])
    if "filter" in body:
        if body["filter"] is not None and not isinstance(body["filter"], dict):
            raise bad("filter", "must be a JSON object (the payload must contain it) or null")
        out["filter"] = json_value(body["filter"], "filter")
    return out
