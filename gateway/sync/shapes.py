"""The shapes of the sync status endpoints (gateway/sync/api.py), declared once: they
validate the requests and make this feature's part of the OpenAPI document."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from gateway.auth.keys import Role
from gateway.sync.model import MAX_ERROR_CHARS, Direction, Side, Status
from gateway.web.contract import (
    NO_NUL,
    Answer,
    Body,
    Link,
    Name,
    Operation,
    PageQuery,
    Query,
    QueryText,
    Time,
    links_from,
    whole_numbers,
)
from gateway.web.http import PREFIX as ADMIN_PREFIX
from gateway.web.pagination import UUID_TEXT

PREFIX = f"{ADMIN_PREFIX}/sync"
MAX_VERSION = 2**63 - 1  # versions are bigint
FEED_LIMIT = 100  # changes one feed page shows when the caller gives no limit
MAX_FEED_LIMIT = 1000
MAX_BATCH = 20_000  # reports in one batch call
MAX_BATCH_BYTES = 16 * 1024 * 1024  # body of one batch call
# A change feed position: transaction id (below 2^63), kind, row id.
FEED_CURSOR = rf"^([0-9]{{1,18}}\.(mapping|sync_status)\.{UUID_TEXT})?$"
MAX_OLDER = 10 * 365 * 86400  # seconds older_than_seconds may ask for
READERS = (Role.ADMIN, Role.VIEWER, Role.SERVICE)
REPORTERS = (Role.ADMIN, Role.SERVICE, Role.PARTNER)
OPERATORS = (Role.ADMIN, Role.SERVICE)
FEED_READERS = (Role.ADMIN, Role.VIEWER, Role.SERVICE, Role.PARTNER)

_VERSION = msgspec.Meta(ge=0, le=MAX_VERSION)
Version = Annotated[
    Annotated[int, _VERSION] | Annotated[float, _VERSION],
    msgspec.Meta(
        extra_json_schema={"type": "integer", "minimum": 0, "maximum": MAX_VERSION},
        description="entity version the report is about (optimistic concurrency)",
    ),
]
ReportedStatus = Literal["pending", "in_progress", "succeeded", "failed"]


class SyncReport(Body):
    """One sync attempt or outcome. ``external_system`` names the system synced with (a
    partner key's own system; a partner key may leave it out)."""

    entity_type: Name
    entity_id: uuid.UUID
    external_system: Name
    direction: Direction
    status: ReportedStatus
    version: Version | None = None
    side: (
        Annotated[
            Side, msgspec.Meta(description="who changed the entity (default: the caller's side)")
        ]
        | None
    ) = None
    error: Annotated[str, msgspec.Meta(max_length=MAX_ERROR_CHARS, pattern=NO_NUL)] | None = None

    def __post_init__(self) -> None:
        whole_numbers(self, "version")


class PartnerReport(SyncReport, kw_only=True):
    """A partner key's report: its own external system when none is given (not in the
    document: the SyncReport shape is what every caller may send)."""

    external_system: Name = ""  # kw_only: a default may come before required fields


class ReportBatch(Body):
    reports: Annotated[list[SyncReport], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class PartnerBatch(Body):
    reports: Annotated[list[PartnerReport], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class Resolution(Body):
    """Resolve a conflict by choosing the side whose version wins."""

    side: Side


class SyncStatusRow(Answer):
    id: uuid.UUID
    tenant_id: uuid.UUID
    entity_type: str
    entity_id: uuid.UUID
    external_system: str
    direction: Direction
    status: Status
    version: int | None
    pending_side: Side | None
    pending_version: int | None
    conflict: dict[str, Any] | None
    last_attempt_at: Time | None
    last_success_at: Time | None
    unsynced_since: Time | None
    error_message: str | None
    retry_count: int
    next_retry_at: Time | None
    created_at: Time
    updated_at: Time


class ReportAnswer(Answer):
    outcome: Literal["created", "updated", "unchanged"]
    status: SyncStatusRow


class Outcomes(Answer):
    created: int
    updated: int
    unchanged: int
    stale: int
    conflict: int


class Refused(Answer):
    index: int
    outcome: Literal["stale", "conflict"]
    id: uuid.UUID


class BatchAnswer(Answer):
    received: int
    outcomes: Outcomes
    refused: list[Refused]


class StatusPage(Answer):
    items: list[SyncStatusRow]
    next_cursor: str | None


class StatusQuery(PageQuery):
    entity_type: QueryText | None = None
    entity_id: uuid.UUID | None = None
    external_system: QueryText | None = None
    direction: Direction | None = None
    status: Status | None = None
    older_than_seconds: (
        Annotated[
            int, msgspec.Meta(ge=0, le=MAX_OLDER, description="out of sync for at least this long")
        ]
        | None
    ) = None
    due: Annotated[bool, msgspec.Meta(description="only those whose retry is due now")] = False


class SystemSummary(Answer):
    external_system: str
    pending: int
    in_progress: int
    succeeded: int
    failed: int
    conflict: int
    oldest_pending: Time | None
    oldest_failed: Time | None
    last_success: Time | None


class Summary(Answer):
    items: list[SystemSummary]


class FeedQuery(Query):
    """The change feed of one external system (a partner key: its own, which it may leave
    out)."""

    __query_codes__: ClassVar[dict[str, str]] = {"cursor": "bad_cursor"}
    external_system: Annotated[str, msgspec.Meta(min_length=1, max_length=63, pattern=NO_NUL)]
    limit: Annotated[
        int, msgspec.Meta(ge=1, le=MAX_FEED_LIMIT, description=f"page size (default {FEED_LIMIT})")
    ] = FEED_LIMIT
    cursor: (
        Annotated[
            str,
            msgspec.Meta(
                pattern=FEED_CURSOR,
                description="next_cursor of the previous poll (empty: the start)",
            ),
        ]
        | None
    ) = None


class PartnerFeedQuery(FeedQuery, kw_only=True):
    external_system: QueryText = ""  # a partner key: its own system when none is given


class Change(Answer):
    """A sync status row, or an integration mapping (then entity_id is its internal id and
    external_id, sync_status are set)."""

    id: uuid.UUID
    entity_type: str
    entity_id: uuid.UUID
    external_system: str
    kind: Literal["sync_status", "mapping"]
    change: Annotated[str, msgspec.Meta(description="id of the change (transaction)")]
    deleted: bool


class ChangePage(Answer):
    items: list[Change]
    next_cursor: str | None


SYNC_ID = {
    "GetStatus": Link("getSyncStatus", "sync_id"),
    "Retry": Link("retrySyncStatus", "sync_id"),
    "Resolve": Link("resolveSyncStatus", "sync_id"),
}
FIRST_ID = links_from(SYNC_ID, "$response.body#/items/0/id")
REPORT_ID = links_from(SYNC_ID, "$response.body#/status/id")
ONE = f"{PREFIX}/status/{{sync_id}}"

OPERATIONS = (
    Operation(
        "reportSync",
        "post",
        f"{PREFIX}/reports",
        "Report one sync attempt or outcome (service, partner, admin)",
        REPORTERS,
        ReportAnswer,
        body=SyncReport,
        errors=(409,),
        links=REPORT_ID,
        description="409 stale_version: older than the version synced; 409 sync_conflict: "
        "both sides changed (resolve it first).",
    ),
    Operation(
        "reportSyncBatch",
        "post",
        f"{PREFIX}/reports/batch",
        "Report many entities at once; stale and conflicting reports are listed, the others "
        "applied (service, partner, admin)",
        REPORTERS,
        BatchAnswer,
        body=ReportBatch,
    ),
    Operation(
        "listSyncStatus",
        "get",
        f"{PREFIX}/status",
        "Sync status of entities, newest first (admin, viewer, service)",
        READERS,
        StatusPage,
        query=StatusQuery,
        links=FIRST_ID,
    ),
    Operation("getSyncStatus", "get", ONE, "One entity's sync status", READERS, SyncStatusRow),
    Operation(
        "retrySyncStatus",
        "post",
        f"{ONE}/retry",
        "Make a failed sync due now (admin, service)",
        OPERATORS,
        SyncStatusRow,
        errors=(409,),
    ),
    Operation(
        "resolveSyncStatus",
        "post",
        f"{ONE}/resolve",
        "Resolve a conflict by choosing a side (admin, service)",
        OPERATORS,
        SyncStatusRow,
        body=Resolution,
        errors=(409,),
    ),
    Operation(
        "getSyncSummary",
        "get",
        f"{PREFIX}/summary",
        "Per external system: counts by status, oldest pending and failed, last success",
        READERS,
        Summary,
    ),
    Operation(
        "listSyncChanges",
        "get",
        f"{PREFIX}/changes",
        "Incremental feed: entities whose sync status or mappings changed since the cursor, "
        "oldest change first; keep next_cursor for the next poll",
        FEED_READERS,
        ChangePage,
        query=FeedQuery,
    ),
)
