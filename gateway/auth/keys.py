"""Tenants and API keys: the store (all their SQL) and token hashing.

Token format: ``gwk_`` + 43 url-safe characters (256 random bits). Only SHA-256 of the
token is stored; the token itself is returned once, by ``create_key``.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from gateway.audit import Actor, audit, audited_update
from gateway.errors import StoreError
from gateway.names import is_name

TOKEN_PREFIX = "gwk_"
TOKEN_RE = re.compile(r"^gwk_[A-Za-z0-9_-]{43}$")
SHOWN_PREFIX_LEN = 12  # "gwk_" + 8 characters: enough to recognise a key, useless to guess it
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class Role(enum.StrEnum):
    PARTNER = "partner"
    SERVICE = "service"
    VIEWER = "viewer"
    ADMIN = "admin"


class KeyStoreError(StoreError):
    """A tenant/key operation was refused (unknown tenant, bad role, ...)."""


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Tenant:
    id: uuid.UUID
    name: str
    created_at: datetime

    @classmethod
    def from_row(cls, r: asyncpg.Record) -> Tenant:
        return cls(r["id"], r["name"], r["created_at"])

    def public(self) -> dict[str, Any]:
        return {"id": str(self.id), "name": self.name, "created_at": self.created_at.isoformat()}


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    role: Role
    external_system: str | None
    token_prefix: str
    rate_limit_per_minute: int | None
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    # Derived once per key object (keys are cached), not once per proxied call.
    id_str: str = field(init=False, repr=False, compare=False)
    tenant_id_str: str = field(init=False, repr=False, compare=False)
    # expires_at in whole microseconds since the epoch (None: no expiry or a naive datetime)
    _expires_us: int | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id_str", str(self.id))
        object.__setattr__(self, "tenant_id_str", str(self.tenant_id))
        exp = self.expires_at
        us = (exp - _EPOCH) // _MICROSECOND if exp is not None and exp.tzinfo else None
        object.__setattr__(self, "_expires_us", us)

    @classmethod
    def from_row(cls, r: asyncpg.Record) -> ApiKey:
        return cls(
            r["id"],
            r["tenant_id"],
            r["name"],
            Role(r["role"]),
            r["external_system"],
            r["token_prefix"],
            r["rate_limit_per_minute"],
            r["expires_at"],
            r["revoked_at"],
            r["created_at"],
        )

    def usable_at(self, now: datetime) -> str | None:
        """None when the key may be used now, else the reason it may not."""
        if self.revoked_at is not None:
            return "revoked_key"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired_key"
        return None

    def usable_now(self) -> str | None:
        """``usable_at(datetime.now(UTC))`` without building a datetime per call: both
        read the system clock floored to the microsecond, so they agree exactly."""
        if self.revoked_at is not None:
            return "revoked_key"
        if self.expires_at is None:
            return None
        if self._expires_us is None:  # a naive expiry: usable_at decides (and raises)
            return self.usable_at(datetime.now(UTC))
        return "expired_key" if self._expires_us <= time.time_ns() // 1000 else None

    def public(self) -> dict[str, Any]:
        """What the API shows: never the token or its hash."""

        def iso(d: datetime | None) -> str | None:
            return d.isoformat() if d else None

        return {
            "id": str(self.id),
            "tenant_id": str(self.tenant_id),
            "name": self.name,
            "role": self.role.value,
            "external_system": self.external_system,
            "token_prefix": self.token_prefix,
            "rate_limit_per_minute": self.rate_limit_per_minute,
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
            "created_at": self.created_at.isoformat(),
        }


KEY_COLUMNS = (
    "id, tenant_id, name, role, external_system, token_prefix, rate_limit_per_minute, "
    "expires_at, revoked_at, created_at"
)


async def create_tenant(
    conn: asyncpg.Connection, name: str, actor: str, actor_key_id: uuid.UUID | None = None
) -> Tenant:
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise KeyStoreError("tenant name must be 1 to 200 characters")
    async with conn.transaction():
        try:
            row = await conn.fetchrow(
                "INSERT INTO tenants (name) VALUES ($1) RETURNING id, name, created_at", name
            )
        except asyncpg.UniqueViolationError:
            raise KeyStoreError(f"a tenant named {name!r} exists already") from None
        tenant = Tenant.from_row(row)
        await audit(
            conn,
            actor=actor,
            actor_key_id=actor_key_id,
            tenant_id=tenant.id,
            action="tenant.create",
            object_type="tenant",
            object_id=str(tenant.id),
            after=tenant.public(),
        )
    return tenant


async def find_tenant(conn: asyncpg.Connection, name_or_id: str) -> Tenant | None:
    try:
        tid = uuid.UUID(name_or_id)
    except ValueError:
        tid = None
    row = await conn.fetchrow(
        """SELECT id, name, created_at FROM tenants
           WHERE deleted_at IS NULL AND (id = $1 OR lower(name) = lower($2))""",
        tid,
        name_or_id,
    )
    return Tenant.from_row(row) if row else None


async def create_key(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    role: str,
    *,
    actor: str,
    actor_key_id: uuid.UUID | None = None,
    name: str = "",
    external_system: str | None = None,
    rate_limit_per_minute: int | None = None,
    expires_in: timedelta | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; return it and its token (the only time the token exists in clear)."""
    try:
        role_ = Role(role)
    except ValueError:
        raise KeyStoreError(f"role must be one of {', '.join(r.value for r in Role)}") from None
    if role_ is Role.PARTNER and not external_system:
        raise KeyStoreError("a partner key must name its external system")
    if external_system is not None and not is_name(external_system):
        raise KeyStoreError(
            "external system: lowercase letters, digits and '_', e.g. booking_engine"
        )
    token = new_token()
    async with conn.transaction():
        row = await conn.fetchrow(
            f"""INSERT INTO api_keys (tenant_id, name, role, external_system, token_prefix,
                    token_hash, rate_limit_per_minute, expires_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, now() + $8::interval)
                RETURNING {KEY_COLUMNS}""",
            tenant_id,
            name,
            role_.value,
            external_system,
            token[:SHOWN_PREFIX_LEN],
            hash_token(token),
            rate_limit_per_minute,
            expires_in,
        )
        key = ApiKey.from_row(row)
        await audit(
            conn,
            actor=actor,
            actor_key_id=actor_key_id,
            tenant_id=tenant_id,
            action="key.create",
            object_type="api_key",
            object_id=str(key.id),
            after=key.public(),
        )
    return key, token


async def revoke_key(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    key_id: uuid.UUID,
    *,
    actor: str,
    actor_key_id: uuid.UUID | None = None,
) -> ApiKey | None:
    """Revoke a key (audited); None when the tenant has no such key."""

    async def lock() -> ApiKey | None:
        row = await conn.fetchrow(
            f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
            key_id,
            tenant_id,
        )
        return ApiKey.from_row(row) if row else None

    async def update() -> ApiKey:
        row = await conn.fetchrow(
            f"""UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()), updated_at = now()
                WHERE id = $1 RETURNING {KEY_COLUMNS}""",
            key_id,
        )
        return ApiKey.from_row(row)

    return await audited_update(
        conn,
        actor=Actor(actor, actor_key_id),
        tenant_id=tenant_id,
        action="key.revoke",
        object_type="api_key",
        object_id=key_id,
        lock=lock,
        update=update,
    )


async def key_by_token_hash(conn: asyncpg.Connection, token_hash: bytes) -> ApiKey | None:
    row = await conn.fetchrow(
        f"""SELECT {KEY_COLUMNS} FROM api_keys k
            WHERE token_hash = $1
              AND EXISTS (SELECT 1 FROM tenants t
                          WHERE t.id = k.tenant_id AND t.deleted_at IS NULL)""",
        token_hash,
    )
    return ApiKey.from_row(row) if row else None


async def list_keys(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> list[ApiKey]:
    rows = await conn.fetch(
        f"SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id",
        tenant_id,
    )
    return [ApiKey.from_row(r) for r in rows]


async def get_key(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, key_id: uuid.UUID
) -> ApiKey | None:
    row = await conn.fetchrow(
        f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 AND tenant_id = $2", key_id, tenant_id
    )
    return ApiKey.from_row(row) if row else None


async def rename_tenant(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    name: str,
    actor: str,
    actor_key_id: uuid.UUID | None = None,
) -> Tenant:
    """Rename a tenant (audited); KeyStoreError when it is gone or the name is taken."""

    async def lock() -> Tenant | None:
        row = await conn.fetchrow(
            "SELECT id, name, created_at FROM tenants WHERE id = $1 FOR UPDATE", tenant_id
        )
        return Tenant.from_row(row) if row else None

    async def update() -> Tenant:
        try:
            row = await conn.fetchrow(
                """UPDATE tenants SET name = $2, updated_at = now() WHERE id = $1
                   RETURNING id, name, created_at""",
                tenant_id,
                name.strip(),
            )
        except asyncpg.UniqueViolationError:
            raise KeyStoreError(f"a tenant named {name.strip()!r} exists already") from None
        return Tenant.from_row(row)

    tenant = await audited_update(
        conn,
        actor=Actor(actor, actor_key_id),
        tenant_id=tenant_id,
        action="tenant.update",
        object_type="tenant",
        object_id=tenant_id,
        lock=lock,
        update=update,
    )
    if tenant is None:
        raise KeyStoreError("tenant not found")
    return tenant
