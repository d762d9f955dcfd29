"""integration_mappings: the records and all their SQL.

Driver errors are wrapped here: a uniqueness clash becomes :class:`MappingConflict`
naming the live row that holds the id, anything else :class:`MappingStoreError`.
Credentials arrive already encrypted (gateway.mapping.api holds the SecretBox).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway.audit import Actor as Actor  # re-exported: callers name store.Actor
from gateway.audit import audit, audit_change
from gateway.errors import StoreError

ENCRYPTED = "[ENCRYPTED]"  # what answers show instead of stored credentials
EXTERNAL_INDEX = "integration_mappings_external_live"
INTERNAL_INDEX = "integration_mappings_internal_live"


class Direction(enum.StrEnum):
    """Mirrors the CHECK on integration_mappings.direction."""

    INBOUND = "inbound"  # partner → PMS only: used to translate requests
    OUTBOUND = "outbound"  # PMS → partner only: used to translate responses
    BIDIRECTIONAL = "bidirectional"


class SyncStatus(enum.StrEnum):
    PENDING = "pending"
    SYNCED = "synced"
    FAILED = "failed"
    DISABLED = "disabled"


class Origin(enum.StrEnum):
    API = "api"
    IMPORT = "import"
    AUTO = "auto"  # recorded by the proxy after a create (routes.yaml auto_map)
    SQL = "sql"


class MappingStoreError(StoreError):
    """A mapping operation failed in the database."""


class MappingConflict(MappingStoreError):
    """The external or internal id is held by another live mapping (named by ``existing``)."""

    def __init__(self, message: str, existing: Mapping | None) -> None:
        super().__init__(message)
        self.existing = existing


@dataclass(frozen=True, slots=True)
class Mapping:
    id: uuid.UUID
    tenant_id: uuid.UUID
    entity_type: str
    internal_id: uuid.UUID
    external_system: str
    external_id: str
    direction: Direction
    sync_status: SyncStatus
    configuration: dict[str, Any]
    has_credentials: bool
    origin: Origin
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None

    @classmethod
    def from_row(cls, r: asyncpg.Record) -> Mapping:
        return cls(
            r["id"],
            r["tenant_id"],
            r["entity_type"],
            r["internal_id"],
            r["external_system"],
            r["external_id"],
            Direction(r["direction"]),
            SyncStatus(r["sync_status"]),
            r["configuration"],
            r["has_credentials"],
            Origin(r["origin"]),
            r["created_at"],
            r["updated_at"],
            r["deleted_at"],
        )

    def public(self) -> dict[str, Any]:
        """What the API shows: credentials never in clear."""
        config = dict(self.configuration)
        if self.has_credentials:
            config["credentials"] = ENCRYPTED
        return {
            "id": str(self.id),
            "tenant_id": str(self.tenant_id),
            "entity_type": self.entity_type,
            "internal_id": str(self.internal_id),
            "external_system": self.external_system,
            "external_id": self.external_id,
            "direction": self.direction.value,
            "sync_status": self.sync_status.value,
            "configuration": config,
            "origin": self.origin.value,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "deleted_at": self.deleted_at.isoformat() if self.deleted_at else None,
        }

    def cache_row(self) -> tuple[str, str, str, str, str]:
        """(tenant, system, entity_type, internal, external): what a cache must forget."""
        return (
            str(self.tenant_id),
            self.external_system,
            self.entity_type,
            str(self.internal_id),
            self.external_id,
        )


COLUMNS = (
    "id, tenant_id, entity_type, internal_id, external_system, external_id, direction, "
    "sync_status, configuration, credentials IS NOT NULL AS has_credentials, origin, "
    "created_at, updated_at, deleted_at"
)


@dataclass(frozen=True, slots=True)
class NewMapping:
    entity_type: str
    internal_id: uuid.UUID
    external_system: str
    external_id: str
    direction: Direction = Direction.BIDIRECTIONAL
    sync_status: SyncStatus = SyncStatus.SYNCED
    configuration: dict[str, Any] | None = None
    credentials: str | None = None  # SecretBox token


MAPPING_OBJECT = "integration_mapping"  # object_type in the audit trail


# -- the proxy's lookups (one query per request phase) -------------------------------------


async def lookup_internal(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    system: str,
    pairs: Sequence[tuple[str, str]],
) -> list[tuple[str, str, str]]:
    """External ids → internal ids for ``(entity_type, external_id)`` pairs, in one query.
    Only mappings usable inbound (inbound or bidirectional) count."""
    rows = await _fetch(
        conn,
        """SELECT m.entity_type, m.external_id, m.internal_id::text AS internal_id
           FROM unnest($3::text[], $4::text[]) AS q(entity_type, external_id)
           JOIN integration_mappings m USING (entity_type, external_id)
           WHERE m.tenant_id = $1 AND m.external_system = $2 AND m.deleted_at IS NULL
             AND m.direction <> 'outbound'""",
        tenant_id,
        system,
        [p[0] for p in pairs],
        [p[1] for p in pairs],
    )
    return [(r["entity_type"], r["external_id"], r["internal_id"]) for r in rows]


async def lookup_external(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    system: str,
    pairs: Sequence[tuple[str, str]],
) -> list[tuple[str, str, str]]:
    """Internal ids → external ids (outbound or bidirectional mappings), in one query."""
    rows = await _fetch(
        conn,
        """SELECT m.entity_type, m.internal_id::text AS internal_id, m.external_id
           FROM unnest($3::text[], $4::uuid[]) AS q(entity_type, internal_id)
           JOIN integration_mappings m USING (entity_type, internal_id)
           WHERE m.tenant_id = $1 AND m.external_system = $2 AND m.deleted_at IS NULL
             AND m.direction <> 'inbound'""",
        tenant_id,
        system,
        [p[0] for p in pairs],
        [p[1] for p in pairs],
    )
    return [(r["entity_type"], r["internal_id"], r["external_id"]) for r in rows]


async def _fetch(conn: asyncpg.Connection, sql: str, *args: Any) -> list[asyncpg.Record]:
    try:
        rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
    except asyncpg.PostgresError as exc:
        raise MappingStoreError(f"mapping query failed: {type(exc).__name__}") from exc
    return rows


# -- single rows -----------------------------------------------------------------------


async def create(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    new: NewMapping,
    actor: Actor,
    origin: Origin = Origin.API,
) -> Mapping:
    """Insert a live mapping (audited); MappingConflict names the row holding either id."""
    try:
        async with conn.transaction():
            row = await conn.fetchrow(
                f"""INSERT INTO integration_mappings (tenant_id, entity_type, internal_id,
                        external_system, external_id, direction, sync_status, configuration,
                        credentials, origin)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {COLUMNS}""",
                tenant_id,
                new.entity_type,
                new.internal_id,
                new.external_system,
                new.external_id,
                new.direction.value,
                new.sync_status.value,
                new.configuration or {},
                new.credentials,
                origin.value,
            )
            made = Mapping.from_row(row)
            await audit_change(
                conn, actor, tenant_id, "mapping.create", MAPPING_OBJECT, made.id, None, made
            )
    except asyncpg.UniqueViolationError as exc:
        # The transaction is rolled back by now, so the clashing row can be read.
        raise await _conflict(conn, tenant_id, new, exc) from None
    return made


async def _conflict(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    new: NewMapping,
    exc: asyncpg.UniqueViolationError,
) -> MappingConflict:
    by_external = getattr(exc, "constraint_name", None) == EXTERNAL_INDEX
    column = "external_id" if by_external else "internal_id"
    value: Any = new.external_id if by_external else new.internal_id
    row = await conn.fetchrow(
        f"""SELECT {COLUMNS} FROM integration_mappings
            WHERE tenant_id = $1 AND external_system = $2 AND entity_type = $3
              AND deleted_at IS NULL AND {column} = $4""",
        tenant_id,
        new.external_system,
        new.entity_type,
        value,
    )
    existing = Mapping.from_row(row) if row else None
    what = f"external id {new.external_id!r}" if by_external else f"internal id {new.internal_id}"
    return MappingConflict(
        f"{new.entity_type} {what} of {new.external_system} is already mapped"
        + (f" (mapping {existing.id})" if existing else ""),
        existing,
    )


async def get(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, mapping_id: uuid.UUID
) -> Mapping | None:
    row = await conn.fetchrow(
        f"SELECT {COLUMNS} FROM integration_mappings WHERE id = $1 AND tenant_id = $2",
        mapping_id,
        tenant_id,
    )
    return Mapping.from_row(row) if row else None


async def list_page(
    conn: asyncpg.Connection, where_sql: str, args: Sequence[Any], limit: int
) -> list[Mapping]:
    """One page, newest first; ``where_sql`` is built by the API from fixed clauses."""
    rows = await conn.fetch(
        f"""SELECT {COLUMNS} FROM integration_mappings WHERE {where_sql}
            ORDER BY created_at DESC, id DESC LIMIT {int(limit)}""",
        *args,
    )
    return [Mapping.from_row(r) for r in rows]


UPDATABLE = ("external_id", "internal_id", "direction", "sync_status", "configuration")


async def update(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    mapping_id: uuid.UUID,
    changes: dict[str, Any],
    actor: Actor,
) -> Mapping | None:
    """Change a live mapping (audited). ``changes`` keys: UPDATABLE and ``credentials``
    (a SecretBox token, or None to remove them). None when there is no such live mapping."""
    before = await get(conn, tenant_id, mapping_id)
    if before is None or before.deleted_at is not None:
        return None
    sets, args = _set_clauses(changes)
    if not sets:
        return before
    try:
        async with conn.transaction():
            row = await conn.fetchrow(
                f"""UPDATE integration_mappings SET {sets}, updated_at = now()
                    WHERE id = $1 AND deleted_at IS NULL RETURNING {COLUMNS}""",
                mapping_id,
                *args,
            )
            if row is None:  # deleted meanwhile
                return None
            after = Mapping.from_row(row)
            await audit_change(
                conn, actor, tenant_id, "mapping.update", MAPPING_OBJECT, after.id, before, after
            )
    except asyncpg.UniqueViolationError as exc:
        probe = NewMapping(
            before.entity_type,
            changes.get("internal_id", before.internal_id),
            before.external_system,
            changes.get("external_id", before.external_id),
        )
        raise await _conflict(conn, tenant_id, probe, exc) from None
    return after


def _set_clauses(changes: dict[str, Any]) -> tuple[str, list[Any]]:
    sets, args = [], []
    for name in (*UPDATABLE, "credentials"):
        if name in changes:
            value = changes[name]
            args.append(value.value if isinstance(value, enum.Enum) else value)
            sets.append(f"{name} = ${len(args) + 1}")
    return ", ".join(sets), args


async def soft_delete(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, mapping_id: uuid.UUID, actor: Actor
) -> Mapping | None:
    async with conn.transaction():
        row = await conn.fetchrow(
            f"""UPDATE integration_mappings SET deleted_at = now(), updated_at = now()
                WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL RETURNING {COLUMNS}""",
            mapping_id,
            tenant_id,
        )
        if row is None:
            return None
        gone = Mapping.from_row(row)
        await audit_change(
            conn, actor, tenant_id, "mapping.delete", MAPPING_OBJECT, gone.id, None, gone
        )
    return gone


async def record_auto(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    new: NewMapping,
    actor: Actor,
) -> tuple[Mapping | None, Mapping | None]:
    """Auto-mapping after a create: ``(made, None)``, or ``(None, existing)`` when either
    id is already mapped (never overwritten), or ``(None, None)`` when it vanished since."""
    try:
        return await create(conn, tenant_id, new, actor, Origin.AUTO), None
    except MappingConflict as exc:
        return None, exc.existing
    except asyncpg.PostgresError as exc:
        raise MappingStoreError(f"auto-mapping failed: {type(exc).__name__}") from exc


# -- bulk import: COPY into a staging table, then merge with SQL ------------------------------

STAGING_COLUMNS = (
    "line",
    "entity_type",
    "internal_id",
    "external_system",
    "external_id",
    "direction",
    "sync_status",
)
IMPORT_LOCK = 0x6761_7465_0003  # advisory lock class: one import per tenant at a time


@dataclass(slots=True)
class MergeResult:
    created: int
    unchanged: int
    conflicts: list[dict[str, Any]]  # every database conflict (the API caps what it lists)


async def merge_import(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    records: list[tuple[Any, ...]],
    actor: Actor,
    counts: dict[str, int],
) -> MergeResult:
    """Stage rows (STAGING_COLUMNS order, ids unique within the batch) and merge them in
    one transaction: existing identical rows are unchanged, clashes are reported with the
    holding row, everything else is inserted. Nothing is ever overwritten. The same
    transaction appends one audit row: ``counts`` (what the caller settled before) plus
    what the merge did."""
    try:
        async with conn.transaction():
            await _stage(conn, tenant_id, records)
            unchanged, conflicts = await _classify(conn, tenant_id)
            created = await _insert_staged(conn, tenant_id)
            expected = len(records) - unchanged - len(conflicts)
            for _ in range(expected - created):  # lost a race with a concurrent create
                conflicts.append({"reason": "changed concurrently; import again to see it"})
            done = {"created": created, "unchanged": unchanged, "conflicting": len(conflicts)}
            await _audit_import(conn, tenant_id, actor, _sum_counts(counts, done))
    except asyncpg.PostgresError as exc:
        raise MappingStoreError(f"bulk import failed: {type(exc).__name__}") from exc
    return MergeResult(created, unchanged, conflicts)


async def _stage(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, records: list[tuple[Any, ...]]
) -> None:
    """One import per tenant at a time; rows COPYed into a table dropped at commit."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1::int, hashtext($2))",
        IMPORT_LOCK & 0x7FFF_FFFF,
        str(tenant_id),
    )
    await conn.execute(
        """CREATE TEMP TABLE mapping_import (
               line integer, entity_type text, internal_id uuid, external_system text,
               external_id text, direction text, sync_status text) ON COMMIT DROP"""
    )
    await conn.copy_records_to_table("mapping_import", records=records, columns=STAGING_COLUMNS)
    await conn.execute("ANALYZE mapping_import")  # the merge joins need its row count


def _sum_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in {*a, *b}}


async def _classify(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> tuple[int, list[Any]]:
    """Staged rows that meet a live mapping: identical ones are unchanged, others conflict.
    Both are removed from the staging table so that only new rows remain."""
    rows = await conn.fetch(
        """SELECT s.line, s.entity_type, s.internal_id, s.external_system, s.external_id,
                  s.direction, s.sync_status,
                  x.id AS x_id, x.internal_id AS x_internal, x.external_id AS x_external,
                  x.direction AS x_direction, x.sync_status AS x_status,
                  i.id AS i_id, i.internal_id AS i_internal, i.external_id AS i_external
           FROM mapping_import s
           LEFT JOIN integration_mappings x
             ON x.tenant_id = $1 AND x.deleted_at IS NULL
            AND x.external_system = s.external_system AND x.entity_type = s.entity_type
            AND x.external_id = s.external_id
           LEFT JOIN integration_mappings i
             ON i.tenant_id = $1 AND i.deleted_at IS NULL
            AND i.external_system = s.external_system AND i.entity_type = s.entity_type
            AND i.internal_id = s.internal_id
           WHERE x.id IS NOT NULL OR i.id IS NOT NULL
           ORDER BY s.line""",
        tenant_id,
    )
    unchanged = 0
    conflicts = []
    for r in rows:
        problem = _clash(r)
        if problem is None:
            unchanged += 1
        else:
            conflicts.append(problem)
    if rows:
        await conn.execute(
            "DELETE FROM mapping_import WHERE line = ANY($1::int[])", [r["line"] for r in rows]
        )
    return unchanged, conflicts


def _clash(r: asyncpg.Record) -> dict[str, Any] | None:
    """None when the staged row equals the live one (asked-for attributes included)."""
    same_row = r["x_id"] is not None and r["x_id"] == r["i_id"]
    if (
        same_row
        and r["direction"] in (None, r["x_direction"])
        and (r["sync_status"] in (None, r["x_status"]))
    ):
        return None
    if same_row:
        reason = (
            f"already mapped with direction {r['x_direction']!r} and sync_status "
            f"{r['x_status']!r}; change it with PATCH"
        )
        holder = (r["x_id"], r["x_internal"], r["x_external"])
    elif r["x_id"] is not None:
        reason = "external id already mapped to another internal id"
        holder = (r["x_id"], r["x_internal"], r["x_external"])
    else:
        reason = "internal id already mapped to another external id"
        holder = (r["i_id"], r["i_internal"], r["i_external"])
    return {
        "line": r["line"],
        "entity_type": r["entity_type"],
        "internal_id": str(r["internal_id"]),
        "external_system": r["external_system"],
        "external_id": r["external_id"],
        "reason": reason,
        "conflicting": {
            "mapping_id": str(holder[0]),
            "internal_id": str(holder[1]),
            "external_id": holder[2],
        },
    }


async def _insert_staged(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> int:
    count = await conn.fetchval(
        """WITH made AS (
               INSERT INTO integration_mappings (tenant_id, entity_type, internal_id,
                   external_system, external_id, direction, sync_status, origin)
               SELECT $1, entity_type, internal_id, external_system, external_id,
                      coalesce(direction, 'bidirectional'), coalesce(sync_status, 'synced'),
                      'import'
               FROM mapping_import ORDER BY line
               ON CONFLICT DO NOTHING
               RETURNING 1)
           SELECT count(*) FROM made""",
        tenant_id,
    )
    return int(count)


async def _audit_import(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, actor: Actor, report: dict[str, Any]
) -> None:
    """One audit row per import: the counts, not the rows."""
    await audit(
        conn,
        actor=actor.name,
        actor_key_id=actor.key_id,
        tenant_id=tenant_id,
        action="mapping.import",
        object_type="integration_mapping",
        object_id=None,
        after=report,
    )
