"""The shapes of the tenant, key and audit endpoints (gateway/admin/api.py), declared once:
they validate the requests and make this feature's part of the OpenAPI document."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, ClassVar

import msgspec

from gateway.auth.keys import Role
from gateway.web.contract import (
    ANY_ROLE,
    Answer,
    Body,
    Link,
    Name,
    Operation,
    Page,
    QueryText,
    SerialPageQuery,
    Text,
    Time,
    whole_numbers,
)
from gateway.web.http import PREFIX

ADMIN = (Role.ADMIN,)
# A tenant's name: 1 to 200 characters, not only spaces, no NUL.
TenantName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\x00]*[^\x00\s][^\x00]*$")
]

MAX_RATE = 1_000_000  # calls a minute a key may be given
MAX_DAYS = 3650  # days a key may live
RatePerMinute = Annotated[
    Annotated[int, msgspec.Meta(ge=1, le=MAX_RATE)]
    | Annotated[float, msgspec.Meta(ge=1, le=MAX_RATE)],
    msgspec.Meta(
        extra_json_schema={"type": "integer", "minimum": 1, "maximum": MAX_RATE},
        description="calls a minute (null: no limit)",
    ),
]
ExpiresInDays = Annotated[
    Annotated[int, msgspec.Meta(ge=1, le=MAX_DAYS)]
    | Annotated[float, msgspec.Meta(ge=1, le=MAX_DAYS)],
    msgspec.Meta(
        extra_json_schema={"type": "integer", "minimum": 1, "maximum": MAX_DAYS},
        description="days until the key expires (null: never)",
    ),
]


class Tenant(Answer):
    id: uuid.UUID
    name: str
    created_at: Time


class TenantChange(Body):
    """PATCH /tenant: the new name (unique among tenants: 409 when taken)."""

    name: TenantName


class Key(Answer):
    """An API key as the API shows it: never its token or hash."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    role: Role
    external_system: str | None
    token_prefix: str
    rate_limit_per_minute: int | None
    expires_at: Time | None
    revoked_at: Time | None
    created_at: Time


class NewKeyAnswer(Key):
    """The created key with its token: shown in this answer only."""

    token: str


class NewKey(Body):
    """POST /keys. A partner key must name its external system."""

    role: Role
    name: Annotated[Text, msgspec.Meta(max_length=200)] = ""
    external_system: Name | None = None
    rate_limit_per_minute: RatePerMinute | None = None
    expires_in_days: ExpiresInDays | None = None

    # A partner key needs its external system (JSON Schema's if/then says it in the document).
    __json_schema_extra__: ClassVar[dict[str, Any]] = {
        "if": {"properties": {"role": {"const": "partner"}}, "required": ["role"]},
        "then": {
            "required": ["external_system"],
            "properties": {"external_system": {"type": "string"}},
        },
    }

    def __post_init__(self) -> None:
        whole_numbers(self, "rate_limit_per_minute", "expires_in_days")
        if self.role is Role.PARTNER and self.external_system is None:
            raise ValueError("a partner key must name its external system (external_system)")


class KeyList(Answer):
    items: list[Key]


class AuditEntry(Answer):
    id: int
    at: Time
    actor: str
    action: str
    object_type: str
    object_id: str | None
    before: Any
    after: Any


class AuditQuery(SerialPageQuery):
    action: QueryText | None = None
    object_type: QueryText | None = None


KEY_ID = {"GetKey": Link("getKey", "key_id"), "RevokeKey": Link("revokeKey", "key_id")}

OPERATIONS = (
    Operation("getTenant", "get", f"{PREFIX}/tenant", "The caller's tenant", ANY_ROLE, Tenant),
    Operation(
        "renameTenant",
        "patch",
        f"{PREFIX}/tenant",
        "Rename the tenant (admin)",
        ADMIN,
        Tenant,
        body=TenantChange,
        errors=(409,),
    ),
    Operation("listKeys", "get", f"{PREFIX}/keys", "The tenant's API keys (admin)", ADMIN, KeyList),
    Operation(
        "createKey",
        "post",
        f"{PREFIX}/keys",
        "Create a key; the token is in this answer only (admin)",
        ADMIN,
        NewKeyAnswer,
        status=201,
        body=NewKey,
        links=KEY_ID,
    ),
    Operation("getKey", "get", f"{PREFIX}/keys/{{key_id}}", "One key (admin)", ADMIN, Key),
    Operation(
        "revokeKey",
        "delete",
        f"{PREFIX}/keys/{{key_id}}",
        "Revoke a key (admin); not the caller's own (409)",
        ADMIN,
        Key,
        errors=(409,),
    ),
    Operation(
        "listAudit",
        "get",
        f"{PREFIX}/audit",
        "The tenant's audit trail, newest first (admin)",
        ADMIN,
        Page[AuditEntry],
        query=AuditQuery,
    ),
)
