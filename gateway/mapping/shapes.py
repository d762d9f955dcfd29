"""The shapes of the ID mapping endpoints (gateway/mapping/api.py), declared once: they
validate the requests and make this feature's part of the OpenAPI document."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec

from gateway.auth.keys import Role
from gateway.mapping.store import Direction, Origin, SyncStatus
from gateway.pointers import MAX_ID_LENGTH
from gateway.web.contract import (
    ANY_ROLE,
    NO_NUL,
    Answer,
    Body,
    JsonObject,
    Link,
    Name,
    Operation,
    Page,
    PageQuery,
    QueryText,
    Time,
    storable_json,
)
from gateway.web.http import PREFIX

WRITERS = (Role.ADMIN, Role.SERVICE)  # internal services may record mappings too
BASE = f"{PREFIX}/mappings"
# The CSV header in the documented column order (the importer also takes another order).
CSV_PATTERN = (
    r"^entity_type,internal_id,external_system,external_id(,direction)?(,sync_status)?"
    r"(\r?\n[^\x00]*)?$"
)
MAX_CONFIGURATION = 65536  # bytes of one mapping's configuration, as JSON
ExternalId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH, pattern=NO_NUL)]
Configuration = Annotated[
    JsonObject,
    msgspec.Meta(
        description="free JSON (at most 64 KiB); its 'credentials' value (any JSON) is "
        'stored encrypted and shown as "[ENCRYPTED]"'
    ),
]


class Mapping(Answer):
    id: uuid.UUID
    tenant_id: uuid.UUID
    entity_type: str
    internal_id: uuid.UUID
    external_system: str
    external_id: str
    direction: Direction
    sync_status: SyncStatus
    configuration: dict[str, Any]
    origin: Origin
    created_at: Time
    updated_at: Time
    deleted_at: Time | None


class NewMapping(Body):
    """POST /mappings."""

    entity_type: Name
    internal_id: uuid.UUID
    external_system: Name
    external_id: ExternalId
    direction: Direction = Direction.BIDIRECTIONAL
    sync_status: SyncStatus = SyncStatus.SYNCED
    configuration: Configuration = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        storable_json(self.configuration, "configuration", MAX_CONFIGURATION)


class MappingChange(Body):
    """PATCH /mappings/{id}: the fields given change (none may be null); configuration
    replaces the stored one, whose credentials stay when "credentials" is absent or
    "[ENCRYPTED]"."""

    external_id: ExternalId | msgspec.UnsetType = msgspec.UNSET
    internal_id: uuid.UUID | msgspec.UnsetType = msgspec.UNSET
    direction: Direction | msgspec.UnsetType = msgspec.UNSET
    sync_status: SyncStatus | msgspec.UnsetType = msgspec.UNSET
    configuration: Configuration | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self) -> None:
        if not isinstance(self.configuration, msgspec.UnsetType):
            storable_json(self.configuration, "configuration", MAX_CONFIGURATION)


class MappingQuery(PageQuery):
    entity_type: QueryText | None = None
    external_system: QueryText | None = None
    external_id: QueryText | None = None
    internal_id: uuid.UUID | None = None
    direction: Direction | None = None
    sync_status: SyncStatus | None = None
    include_deleted: Annotated[bool, msgspec.Meta(description="also soft-deleted rows")] = False


class MappingConflictAnswer(Answer):
    """409: an id is already mapped; ``conflicting`` is the live mapping holding it."""

    code: str
    message: str
    conflicting: Mapping | None
    request_id: str | None = None


class ImportLineError(Answer):
    line: int
    message: str


class ImportReport(Answer):
    """What a bulk import did: counts, the first 1,000 conflicts (the row, the reason and
    the conflicting mapping or earlier line) and invalid lines."""

    received: int
    created: int
    unchanged: int
    conflicting: int
    invalid: int
    conflicts: list[dict[str, Any]]
    errors: list[ImportLineError]


MAPPING_ID = {
    "GetMapping": Link("getMapping", "mapping_id"),
    "UpdateMapping": Link("updateMapping", "mapping_id"),
    "DeleteMapping": Link("deleteMapping", "mapping_id"),
}
CONFLICT = {409: MappingConflictAnswer}
ONE = f"{BASE}/{{mapping_id}}"

OPERATIONS = (
    Operation(
        "listMappings",
        "get",
        BASE,
        "The tenant's ID mappings, newest first",
        ANY_ROLE,
        Page[Mapping],
        query=MappingQuery,
    ),
    Operation(
        "createMapping",
        "post",
        BASE,
        "Create a mapping (admin, service)",
        WRITERS,
        Mapping,
        status=201,
        body=NewMapping,
        errors=(409,),
        error_answers=CONFLICT,
        links=MAPPING_ID,
    ),
    Operation(
        "importMappings",
        "post",
        f"{BASE}/import",
        "Bulk import (admin, service): CSV with a header line, or JSON lines",
        WRITERS,
        ImportReport,
        description="Columns entity_type, internal_id, external_system, external_id, "
        "optional direction, sync_status. Idempotent; never overwrites.",
        body_media={
            "text/csv": {"type": "string", "pattern": CSV_PATTERN},
            "application/x-ndjson": {"type": "string", "pattern": NO_NUL},
        },
    ),
    Operation("getMapping", "get", ONE, "One mapping", ANY_ROLE, Mapping),
    Operation(
        "updateMapping",
        "patch",
        ONE,
        "Change a live mapping (admin, service)",
        WRITERS,
        Mapping,
        body=MappingChange,
        errors=(409,),
        error_answers=CONFLICT,
    ),
    Operation(
        "deleteMapping", "delete", ONE, "Soft-delete a mapping (admin, service)", WRITERS, Mapping
    ),
)
