"""The shapes of the webhook endpoints (subscriptions, events, deliveries, the event-type
catalogue, the public key), declared once as msgspec Structs: they validate the requests
(gateway/webhooks/api.py, catalogue_api.py) and make this feature's part of the OpenAPI
document. What a Struct cannot say itself (a header name that is not one the gateway sets,
a schedule *or* a backoff) is checked in ``__post_init__`` and said in the schema with
``extra_json_schema`` / ``__json_schema_extra__``.

Free JSON (an event's payload, a filter, a payload template, a catalogue schema) is
declared as such: any JSON, nested at most :data:`FREE_DEPTH` levels, with no NUL (U+0000)
in any string or key, which PostgreSQL's jsonb cannot store (the descriptions say so; a
JSON Schema cannot say "no NUL at any depth" without a recursive schema, which client
generators do not take).
"""

from __future__ import annotations

import base64
import re
import secrets
import uuid
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from gateway.auth.keys import Role
from gateway.names import EVENT_TYPE_RE, MAX_EVENT_TYPE
from gateway.web.contract import (
    NO_NUL,
    Answer,
    Body,
    Link,
    Name,
    Operation,
    Page,
    PageQuery,
    Time,
    links_from,
    storable_json,
    whole_numbers,
)
from gateway.web.http import PREFIX
from gateway.webhooks.model import (
    AttemptResult,
    DeliveryStatus,
    EventSource,
    Ordering,
    SignatureScheme,
)

READERS = (Role.ADMIN, Role.VIEWER)
PUBLISHERS = (Role.SERVICE, Role.ADMIN)
ADMIN = (Role.ADMIN,)
SUBS = f"{PREFIX}/webhooks/subscriptions"
DELIVERIES = f"{PREFIX}/webhooks/deliveries"
EVENTS = f"{PREFIX}/events"
TYPES = f"{PREFIX}/webhooks/event-types"
PUBLIC_KEY = f"{PREFIX}/webhooks/public-key"

MAX_EVENT_TYPES = 100
MAX_NAME = 200
MAX_URL = 2048
MAX_TEXT = 4096  # characters of one auth value or header value
MAX_HEADERS = 20
MAX_SCHEDULE_DELAY = 7 * 24 * 3600.0  # seconds: one retry step is at most a week
MAX_ATTEMPTS = 50
DEFAULT_MAX_ATTEMPTS = 8  # as many as the default schedule has steps (mirrors the SQL default)
DEFAULT_TIMEOUT = 15.0  # seconds per attempt (mirrors the SQL default)
MAX_TIMEOUT = 300.0
MIN_TIMEOUT = 0.1
MAX_CONCURRENCY = 1000
MAX_MULTIPLIER = 10.0
MAX_GRACE = 7 * 24 * 3600.0  # seconds the previous secret may keep signing after a rotation
DEFAULT_GRACE = 24 * 3600.0
MIN_RATE = 0.01  # deliveries per second: one every 100 s at the slowest
MAX_RATE = 10_000.0  # mirrors the CHECK in sql/009_webhook_features.sql
MAX_REPLAY = (
    10_000  # failed deliveries one bulk replay call sends again (``more`` says if any are left)
)
MAX_DESCRIPTION = 2000
MAX_SCHEMA_BYTES = 64 * 1024  # a declared event-type schema, serialised
MAX_PAYLOAD_BYTES = 1024 * 1024  # an event's payload, serialised (the body limit)
FREE_DEPTH = 64  # levels of arrays and objects in free JSON
SECRET_BYTES = 24  # random bytes of a generated signing secret (as Svix)

# Headers the gateway sets itself; a subscription's custom headers may not replace them.
RESERVED_HEADERS = (
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
)


def _any_case(words: tuple[str, ...]) -> str:
    """A pattern matching any of ``words`` in any case (JSON Schema regexes take no flags)."""

    def letters(word: str) -> str:
        return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)

    return "^(" + "|".join(letters(w) for w in words) + ")$"


# -- text -------------------------------------------------------------------------------------

# Some character that is not blank (explicit classes: ECMA and Python differ on \s).
NOT_BLANK = r"^[^\x00]*[^\x00 \t\n\r][^\x00]*$"
SINGLE_LINE = r"^[^\x00\r\n]*$"
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME, pattern=NOT_BLANK)]
EventType = Annotated[
    str,
    msgspec.Meta(
        pattern=EVENT_TYPE_RE.pattern,
        max_length=MAX_EVENT_TYPE,
        description="an event type such as reservation.created",
    ),
]
# What tenants publish and declare: webhook.* types are the gateway's own.
OwnEventType = Annotated[
    str,
    msgspec.Meta(
        pattern=EVENT_TYPE_RE.pattern,
        max_length=MAX_EVENT_TYPE,
        extra_json_schema={"not": {"pattern": r"^webhook\."}},
        description="an event type such as reservation.created; webhook.* types are the "
        "gateway's own",
    ),
]
EventPattern = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(\*|[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\*)?)$",
        max_length=MAX_NAME,
        description="an event type, a prefix such as reservation.*, or *",
    ),
]
FREE_JSON = (
    f"any JSON, nested at most {FREE_DEPTH} levels; no NUL (U+0000) in any string or key "
    "(PostgreSQL's jsonb cannot store it)"
)
FreeObject = Annotated[dict[str, Any], msgspec.Meta(description=FREE_JSON)]
FreeValue = Annotated[Any, msgspec.Meta(description=FREE_JSON)]

# -- endpoint URLs ------------------------------------------------------------------------------

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"({_OCTET}\.){{3}}{_OCTET}"
_H = "[0-9a-fA-F]{1,4}"
_IPV6 = (
    rf"(({_H}:){{7}}{_H}|({_H}:){{1,7}}:|({_H}:){{1,6}}:{_H}|({_H}:){{1,5}}(:{_H}){{1,2}}"
    rf"|({_H}:){{1,4}}(:{_H}){{1,3}}|({_H}:){{1,3}}(:{_H}){{1,4}}|({_H}:){{1,2}}(:{_H}){{1,5}}"
    rf"|{_H}:(:{_H}){{1,6}}|:((:{_H}){{1,7}}|:)|::([fF]{{4}}(:0{{1,4}})?:)?{_IPV4}"
    rf"|({_H}:){{1,4}}:{_IPV4})"
)
_LABEL = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# The last label starts with a letter: a name, never a number in disguise (0x7f.1).
_HOSTNAME = rf"({_LABEL}\.)*[A-Za-z]([A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?"
_PORT = r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_PCHAR = r"([A-Za-z0-9._~!$&'()*+,;=:@/-]|%[0-9A-Fa-f]{2})"
URL_PATTERN = (
    rf"^https://({_HOSTNAME}|{_IPV4}|\[{_IPV6}\])(:{_PORT})?(/{_PCHAR}*)?(\?({_PCHAR}|\?)*)?$"
)
URL_RE = re.compile(URL_PATTERN)
# Checked by the endpoint after the SSRF guard (whose refusals name the reason), so the
# pattern is in the document only here (gateway/webhooks/api.py applies URL_RE).
Url = Annotated[
    str,
    msgspec.Meta(
        max_length=MAX_URL,
        extra_json_schema={"pattern": URL_PATTERN, "format": "uri"},
        description="https:// URL of the receiving endpoint (a host name, IPv4 or [IPv6] "
        "address, optional port, path and query; no credentials or fragment). Private, "
        "loopback and link-local addresses are refused unless the gateway allows them "
        "(GATEWAY_WEBHOOK_ALLOW_PRIVATE, GATEWAY_WEBHOOK_ALLOWED_NETWORKS); http:// only "
        "with GATEWAY_WEBHOOK_ALLOW_HTTP",
    ),
]

# -- secrets ------------------------------------------------------------------------------------

_B64 = "[A-Za-z0-9+/]"
# whsec_ + standard base64 of 24 to 64 bytes, exactly (4 characters carry 3 bytes).
_QUAD = f"{_B64}{{4}}"
SECRET_PATTERN = (
    rf"^whsec_(({_QUAD}){{8,20}}({_B64}{{2}}==|{_B64}{{3}}=)?|({_QUAD}){{21}}({_B64}{{2}}==)?)$"
)
Secret = Annotated[
    str,
    msgspec.Meta(
        pattern=SECRET_PATTERN,
        description="whsec_ + base64 of 24 to 64 random bytes (generated when absent)",
    ),
]


def new_secret() -> str:
    """A new signing secret: whsec_ + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


# -- subscriptions: requests ------------------------------------------------------------------

HeaderName = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$",
        extra_json_schema={"not": {"pattern": _any_case(RESERVED_HEADERS)}},
    ),
]
HeaderValue = Annotated[str, msgspec.Meta(max_length=MAX_TEXT, pattern=SINGLE_LINE)]
AuthText = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT, pattern=SINGLE_LINE)]
UserName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_TEXT, pattern=r"^[^\x00\r\n:]*$")
]


class AuthNone(Body, tag="none", tag_field="type"):
    """No auth header."""


class AuthBearer(Body, tag="bearer", tag_field="type"):
    """``Authorization: Bearer <token>`` (stored encrypted, never shown)."""

    token: AuthText


class AuthBasic(Body, tag="basic", tag_field="type"):
    """``Authorization: Basic`` (stored encrypted, never shown)."""

    username: UserName
    password: AuthText


class AuthHeaders(Body, tag="headers", tag_field="type"):
    """Custom headers (values stored encrypted; names shown)."""

    headers: Annotated[
        dict[HeaderName, HeaderValue], msgspec.Meta(min_length=1, max_length=MAX_HEADERS)
    ]

    def __post_init__(self) -> None:
        for name in self.headers:
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header name {name!r} is one the gateway sets itself")


Auth = AuthNone | AuthBearer | AuthBasic | AuthHeaders
Delay = Annotated[float, msgspec.Meta(ge=0, le=MAX_SCHEDULE_DELAY)]
_ATTEMPTS = msgspec.Meta(ge=1, le=MAX_ATTEMPTS)
Attempts = Annotated[
    Annotated[int, _ATTEMPTS] | Annotated[float, _ATTEMPTS],
    msgspec.Meta(extra_json_schema={"type": "integer", "minimum": 1, "maximum": MAX_ATTEMPTS}),
]
_CONCURRENCY = msgspec.Meta(ge=1, le=MAX_CONCURRENCY)
Concurrency = Annotated[
    Annotated[int, _CONCURRENCY] | Annotated[float, _CONCURRENCY],
    msgspec.Meta(
        extra_json_schema={"type": "integer", "minimum": 1, "maximum": MAX_CONCURRENCY},
        description="deliveries in flight at once",
    ),
]


class Backoff(Body):
    """Exponential backoff: initial * multiplier^n seconds, at most ``max``."""

    initial: Annotated[float, msgspec.Meta(ge=0.001, le=MAX_SCHEDULE_DELAY)]
    multiplier: Annotated[float, msgspec.Meta(ge=1, le=MAX_MULTIPLIER)] = 2.0
    max: Annotated[float, msgspec.Meta(ge=0.001, le=MAX_SCHEDULE_DELAY)] = MAX_SCHEDULE_DELAY


class RetryPolicy(Body):
    """Replaced as a whole: what is not given takes its default again. A schedule (the
    delays before each retry) or a backoff, not both; neither: the default schedule."""

    max_attempts: Attempts = DEFAULT_MAX_ATTEMPTS
    timeout: Annotated[float, msgspec.Meta(ge=MIN_TIMEOUT, le=MAX_TIMEOUT)] = DEFAULT_TIMEOUT
    schedule: Annotated[list[Delay], msgspec.Meta(min_length=1, max_length=MAX_ATTEMPTS)] | None = (
        None
    )
    backoff: Backoff | None = None

    __json_schema_extra__: ClassVar[dict[str, Any]] = {
        "not": {
            "required": ["schedule", "backoff"],
            "properties": {"schedule": {"type": "array"}, "backoff": {"type": "object"}},
        }
    }

    def __post_init__(self) -> None:
        whole_numbers(self, "max_attempts")
        if self.schedule is not None and self.backoff is not None:
            raise ValueError("a retry policy takes a schedule or a backoff, not both")

    def columns(self) -> dict[str, Any]:
        b = self.backoff
        return {
            "max_attempts": self.max_attempts,
            "attempt_timeout": float(self.timeout),
            "retry_schedule": None if self.schedule is None else [float(d) for d in self.schedule],
            "backoff_initial": None if b is None else float(b.initial),
            "backoff_multiplier": None if b is None else float(b.multiplier),
            "backoff_max": None if b is None else float(b.max),
        }


OutputName = Annotated[str, msgspec.Meta(min_length=1, pattern=NO_NUL)]
FieldPath = Annotated[str, msgspec.Meta(min_length=1, pattern=NO_NUL)]


class PayloadOptions(Body):
    """What a receiver gets as ``data``: chosen fields (output name -> path in the
    payload) and/or a template (free JSON with {{path}} placeholders)."""

    fields: (
        Annotated[dict[OutputName, FieldPath], msgspec.Meta(min_length=1, max_length=100)] | None
    ) = None
    template: FreeValue = None

    def __post_init__(self) -> None:
        storable_json(self.template, "payload.template", depth=FREE_DEPTH)


GATEWAY_TYPES = "webhook."  # prefix of the event types the gateway publishes itself


def gateway_type(name: str) -> bool:
    """Whether ``name`` is one of the gateway's own (webhook.*) event types."""
    return name.startswith(GATEWAY_TYPES)


def _free(value: Any, name: str) -> None:
    storable_json(value, name, depth=FREE_DEPTH)


class SubscriptionFields(Body):
    """The fields a subscription's POST and PATCH share (all optional here)."""

    filter: FreeObject | msgspec.UnsetType | None = msgspec.UNSET
    auth: Auth | msgspec.UnsetType = msgspec.UNSET
    retry_policy: RetryPolicy | msgspec.UnsetType = msgspec.UNSET
    max_concurrency: Concurrency | msgspec.UnsetType = msgspec.UNSET
    payload: PayloadOptions | msgspec.UnsetType = msgspec.UNSET
    external_system: (
        Annotated[Name, msgspec.Meta(description="the system whose changes it follows")]
        | msgspec.UnsetType
        | None
    ) = msgspec.UNSET
    active: bool | msgspec.UnsetType = msgspec.UNSET
    ordering: Ordering | msgspec.UnsetType = msgspec.UNSET
    coalesce: bool | msgspec.UnsetType = msgspec.UNSET
    suppress_own_changes: (
        Annotated[bool, msgspec.Meta(description="null: the default (on with external_system)")]
        | msgspec.UnsetType
        | None
    ) = msgspec.UNSET
    rate_limit: (
        Annotated[
            float,
            msgspec.Meta(ge=MIN_RATE, le=MAX_RATE, description="deliveries a second; null: none"),
        ]
        | msgspec.UnsetType
        | None
    ) = msgspec.UNSET
    signature: SignatureScheme | msgspec.UnsetType = msgspec.UNSET
    verify: (
        Annotated[bool, msgspec.Meta(description="send a signed test event before saving")]
        | msgspec.UnsetType
    ) = msgspec.UNSET

    def __post_init__(self) -> None:
        whole_numbers(self, "max_concurrency")
        if isinstance(self.filter, dict):
            _free(self.filter, "filter")


class NewSubscription(SubscriptionFields, kw_only=True):
    """POST /webhooks/subscriptions."""

    name: Label
    url: Url
    event_types: Annotated[
        list[EventPattern], msgspec.Meta(min_length=1, max_length=MAX_EVENT_TYPES)
    ]
    secret: Secret | msgspec.UnsetType = msgspec.UNSET


class SubscriptionChange(SubscriptionFields, kw_only=True):
    """PATCH /webhooks/subscriptions/{id}: the fields given change; ``active: true``
    re-enables a disabled subscription."""

    name: Label | msgspec.UnsetType = msgspec.UNSET
    url: Url | msgspec.UnsetType = msgspec.UNSET
    event_types: (
        Annotated[list[EventPattern], msgspec.Meta(min_length=1, max_length=MAX_EVENT_TYPES)]
        | msgspec.UnsetType
    ) = msgspec.UNSET

    __json_schema_extra__: ClassVar[dict[str, Any]] = {"minProperties": 1}


class NewSecret(Body):
    """POST .../rotate-secret (the body is optional)."""

    secret: Secret | msgspec.UnsetType = msgspec.UNSET
    grace_seconds: (
        Annotated[
            float,
            msgspec.Meta(
                ge=0,
                le=MAX_GRACE,
                description=f"seconds the old secret keeps signing (default {DEFAULT_GRACE:g})",
            ),
        ]
        | None
    ) = None


class ReplayWindow(Body):
    """Replay the failed deliveries created in [from, to) (to: now when absent), oldest
    first, at most 10,000 a call; ``more`` in the answer says whether any are left."""

    start: Time = msgspec.field(name="from")
    end: Time | None = msgspec.field(default=None, name="to")


class NewEvent(Body):
    """POST /events."""

    type: OwnEventType
    payload: FreeObject
    idempotency_key: Label | None = None
    origin_system: (
        Annotated[Name, msgspec.Meta(description="the system whose change caused it")] | None
    ) = None

    def __post_init__(self) -> None:
        if gateway_type(self.type):
            raise ValueError(
                "field 'type': webhook.* event types are published by the gateway only"
            )
        storable_json(self.payload, "payload", MAX_PAYLOAD_BYTES, depth=FREE_DEPTH)


class EventTypeIn(Body):
    """PUT /webhooks/event-types/{name}: a description and a JSON Schema (Draft 2020-12
    unless it names its own ``$schema``) that published payloads must match."""

    description: Annotated[str, msgspec.Meta(max_length=MAX_DESCRIPTION, pattern=NOT_BLANK)]
    schema: Annotated[
        dict[str, Any],
        msgspec.Meta(description=f"a JSON Schema (at most 64 KiB as JSON); {FREE_JSON}"),
    ]

    def __post_init__(self) -> None:
        storable_json(self.schema, "schema", MAX_SCHEMA_BYTES, depth=FREE_DEPTH)


class DeliveryQuery(PageQuery):
    subscription_id: uuid.UUID | None = None
    event_id: uuid.UUID | None = None
    status: DeliveryStatus | None = None


# -- answers -----------------------------------------------------------------------------------


class AuthShown(Answer):
    type: Literal["none", "bearer", "basic", "headers"]
    header_names: list[str] | msgspec.UnsetType = msgspec.UNSET


class BackoffShown(Answer):
    initial: float
    multiplier: float
    max: float


class RetryPolicyShown(Answer):
    max_attempts: int
    timeout: float
    schedule: list[float] | None
    backoff: BackoffShown | None


class PayloadShown(Answer):
    fields: dict[str, str] | None
    template: Any


class Subscription(Answer):
    id: uuid.UUID
    name: str
    url: str
    event_types: list[str]
    filter: dict[str, Any] | None
    auth: AuthShown
    retry_policy: RetryPolicyShown
    max_concurrency: int
    payload: PayloadShown
    external_system: str | None
    active: bool
    disabled_reason: str | None
    disabled_at: Time | None
    failing_since: Time | None
    previous_secret_expires_at: Time | None
    created_at: Time
    updated_at: Time
    ordering: Ordering
    coalesce: bool
    suppress_own_changes: bool
    rate_limit: float | None
    paused_until: Time | None
    signature: SignatureScheme


class SubscriptionWithSecret(Subscription):
    """A subscription with its signing secret: in this answer only."""

    secret: str


class SubscriptionList(Answer):
    items: list[Subscription]


class Deleted(Answer):
    id: uuid.UUID
    deleted: bool


class Event(Answer):
    id: uuid.UUID
    type: str
    payload: dict[str, Any]
    idempotency_key: str | None
    source: EventSource
    origin_system: str | None
    created_at: Time


class Published(Answer):
    event: Event
    deliveries: int
    duplicate: bool | msgspec.UnsetType = msgspec.UNSET


class Replayed(Answer):
    replayed: int
    more: bool


class Delivery(Answer):
    id: uuid.UUID
    event_id: uuid.UUID
    subscription_id: uuid.UUID
    webhook_id: str
    event_type: str
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: Time | None
    last_status: int | None
    last_error: str | None
    delivered_at: Time | None
    replay_count: int
    created_at: Time
    updated_at: Time
    entity: str | None
    sequence: int | None
    held: bool
    replaced: int


class Attempt(Answer):
    id: int
    attempt_number: int
    result: AttemptResult
    status_code: int | None
    duration_ms: float
    error: str | None
    response_excerpt: str | None
    attempted_at: Time


class AttemptList(Answer):
    items: list[Attempt]


class EventTypeShown(Answer):
    name: str
    description: str
    schema: dict[str, Any]
    builtin: bool = False
    created_at: Time | None = None
    updated_at: Time | None = None


class EventTypeList(Answer):
    items: list[EventTypeShown]


class EventTypeDeleted(Answer):
    name: str
    deleted: bool


class PublicKey(Answer):
    """The tenant's ed25519 public key, for ``v1a`` signatures (null until a v1a
    subscription exists)."""

    algorithm: Literal["ed25519"]
    public_key: str | None
    signature_prefix: str = "v1a"


WEBHOOKS_DOCUMENT = {
    "type": "object",
    "description": "an OpenAPI 3.1 document whose webhooks are the catalogue's event types",
    "required": ["openapi", "info", "webhooks"],
    "properties": {
        "openapi": {"type": "string"},
        "info": {"type": "object"},
        "webhooks": {"type": "object"},
    },
}

# -- operations --------------------------------------------------------------------------------

ONE_SUB = f"{SUBS}/{{subscription_id}}"
ONE_DELIVERY = f"{DELIVERIES}/{{delivery_id}}"
SUB_ID = {
    "GetSubscription": Link("getSubscription", "subscription_id"),
    "UpdateSubscription": Link("updateSubscription", "subscription_id"),
    "RotateSecret": Link("rotateSubscriptionSecret", "subscription_id"),
    "SendTestEvent": Link("sendTestEvent", "subscription_id"),
    "ReplayFailed": Link("replayFailedDeliveries", "subscription_id"),
    "ListDeliveries": Link("listDeliveries", "subscription_id"),
    "DeleteSubscription": Link("deleteSubscription", "subscription_id"),
}
DELIVERY_ID = {
    "GetDelivery": Link("getDelivery", "delivery_id"),
    "ListAttempts": Link("listDeliveryAttempts", "delivery_id"),
    "ReplayDelivery": Link("replayDelivery", "delivery_id"),
}
FIRST_DELIVERY = links_from(DELIVERY_ID, "$response.body#/items/0/id")
EVENT_ID = {
    "ListDeliveries": Link("listDeliveries", "event_id", "$response.body#/event/id"),
}
TYPE_NAME = {"name": {"type": "string", "pattern": EVENT_TYPE_RE.pattern, "maxLength": 200}}
OWN_TYPE_NAME = {"name": {**TYPE_NAME["name"], "not": {"pattern": r"^webhook\."}}}

OPERATIONS = (
    Operation(
        "listSubscriptions",
        "get",
        SUBS,
        "The tenant's webhook subscriptions (admin, viewer)",
        READERS,
        SubscriptionList,
    ),
    Operation(
        "createSubscription",
        "post",
        SUBS,
        "Create a subscription; the signing secret is in this answer only (admin)",
        ADMIN,
        SubscriptionWithSecret,
        status=201,
        body=NewSubscription,
        errors=(409,),
        links=SUB_ID,
        description="409 unknown_event_type: the tenant has an event-type catalogue and "
        "an event type matches none of it; 409 endpoint_not_verified: verify was asked and "
        "the endpoint did not accept a signed test event.",
    ),
    Operation("getSubscription", "get", ONE_SUB, "One subscription", READERS, Subscription),
    Operation(
        "updateSubscription",
        "patch",
        ONE_SUB,
        "Change a subscription; active=true re-enables it (admin)",
        ADMIN,
        Subscription,
        body=SubscriptionChange,
        errors=(409,),
    ),
    Operation(
        "deleteSubscription",
        "delete",
        ONE_SUB,
        "Delete (soft); unfinished deliveries are cancelled (admin)",
        ADMIN,
        Deleted,
    ),
    Operation(
        "rotateSubscriptionSecret",
        "post",
        f"{ONE_SUB}/rotate-secret",
        "New signing secret (in this answer only); the old one keeps signing for "
        "grace_seconds (admin)",
        ADMIN,
        SubscriptionWithSecret,
        body=NewSecret,
        body_required=False,
    ),
    Operation(
        "sendTestEvent",
        "post",
        f"{ONE_SUB}/test",
        "Send a webhook.test event to this subscription (admin); 409 when it is disabled",
        ADMIN,
        Published,
        status=202,
        errors=(409,),
    ),
    Operation(
        "replayFailedDeliveries",
        "post",
        f"{ONE_SUB}/replay",
        "Replay the failed deliveries created in [from, to), 10,000 a call (admin)",
        ADMIN,
        Replayed,
        status=202,
        body=ReplayWindow,
        errors=(409,),
    ),
    Operation(
        "publishEvent",
        "post",
        EVENTS,
        "Publish an event (service, admin); a repeated idempotency_key answers 200 with "
        "the first event",
        PUBLISHERS,
        Published,
        status=201,
        body=NewEvent,
        errors=(409,),
        other_answers={200: (Published, "Already published with this idempotency key")},
        links=EVENT_ID,
        description="422 schema_violation: the payload does not match its type's schema "
        "in the event-type catalogue; 409 unknown_event_type: the tenant has a catalogue "
        "and the type is not in it.",
    ),
    Operation(
        "listDeliveries",
        "get",
        DELIVERIES,
        "Deliveries, newest first (admin, viewer)",
        READERS,
        Page[Delivery],
        query=DeliveryQuery,
        links=FIRST_DELIVERY,
    ),
    Operation("getDelivery", "get", ONE_DELIVERY, "One delivery", READERS, Delivery),
    Operation(
        "listDeliveryAttempts",
        "get",
        f"{ONE_DELIVERY}/attempts",
        "Every attempt of a delivery, oldest first (admin, viewer)",
        READERS,
        AttemptList,
    ),
    Operation(
        "replayDelivery",
        "post",
        f"{ONE_DELIVERY}/replay",
        "Send a finished delivery again, same webhook-id (admin)",
        ADMIN,
        Delivery,
        status=202,
        errors=(409,),
    ),
    Operation(
        "listEventTypes",
        "get",
        TYPES,
        "The event-type catalogue (declared and built-in types)",
        READERS,
        EventTypeList,
    ),
    Operation(
        "getEventTypesDocument",
        "get",
        f"{TYPES}/openapi.json",
        "The catalogue as an OpenAPI 3.1 document of webhooks",
        READERS,
        WEBHOOKS_DOCUMENT,
    ),
    Operation(
        "putEventType",
        "put",
        f"{TYPES}/{{name}}",
        "Declare (201) or replace (200) an event type (admin)",
        ADMIN,
        EventTypeShown,
        body=EventTypeIn,
        other_answers={201: (EventTypeShown, "Declared")},
        path_types=OWN_TYPE_NAME,
        description="422 invalid_schema: the schema is not a valid JSON Schema.",
    ),
    Operation(
        "deleteEventType",
        "delete",
        f"{TYPES}/{{name}}",
        "Remove an event type from the catalogue (admin)",
        ADMIN,
        EventTypeDeleted,
        path_types=TYPE_NAME,
    ),
    Operation(
        "getPublicKey",
        "get",
        PUBLIC_KEY,
        "The tenant's ed25519 public key (Standard Webhooks v1a)",
        READERS,
        PublicKey,
    ),
)
