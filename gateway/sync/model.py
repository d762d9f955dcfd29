"""Sync status records and the rules that move them (pure: no I/O, unit-tested).

A *report* says what happened to one entity's synchronisation with one external system:
an attempt started (``in_progress``), a change is waiting (``pending``), it worked
(``succeeded``) or it failed (``failed``). Reports may carry the entity ``version`` they are
about (any increasing number: a revision counter, an ``updated_at`` in milliseconds) and the
``side`` that produced the change (``internal`` = the PMS, ``external`` = the partner):

* a report about a version older than the one last synced is *stale* and refused;
* a change reported by one side while the other side still has an unsynced change made
  since the last agreed version is a *conflict*: the row keeps both versions and takes no
  further reports until someone chooses a side (``resolve``);
* reports without a version (the proxy's own, from traffic) only move the status.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

RETRY_BASE = timedelta(minutes=1)  # first wait before retrying a failed sync; doubles
RETRY_CAP = timedelta(hours=6)  # never wait longer than this between retries
MAX_DOUBLINGS = 16  # 2**16 minutes is past the cap already; keeps the arithmetic small
MAX_ERROR_CHARS = 2000  # error messages are kept this long at most


class Status(enum.StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CONFLICT = "conflict"


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    BIDIRECTIONAL = "bidirectional"


class Side(enum.StrEnum):
    INTERNAL = "internal"
    EXTERNAL = "external"

    @property
    def other(self) -> Side:
        return Side.EXTERNAL if self is Side.INTERNAL else Side.INTERNAL


class Outcome(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    STALE = "stale"
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class EntityKey:
    entity_type: str
    entity_id: uuid.UUID
    external_system: str
    direction: Direction


@dataclass(frozen=True, slots=True)
class Report:
    key: EntityKey
    status: Status  # never CONFLICT: that is the gateway's verdict, not a report
    side: Side
    version: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SyncState:
    """One data_sync_status row (the columns the rules read and write)."""

    status: Status
    version: int | None = None
    pending_side: Side | None = None
    pending_version: int | None = None
    conflict: dict[str, int] | None = None
    last_attempt_at: datetime | None = None
    last_success_at: datetime | None = None
    unsynced_since: datetime | None = None
    error_message: str | None = None
    retry_count: int = 0
    next_retry_at: datetime | None = None

    @classmethod
    def from_row(cls, r: Any) -> SyncState:
        return cls(
            status=Status(r["status"]),
            version=r["version"],
            pending_side=Side(r["pending_side"]) if r["pending_side"] else None,
            pending_version=r["pending_version"],
            conflict=r["conflict"],
            last_attempt_at=r["last_attempt_at"],
            last_success_at=r["last_success_at"],
            unsynced_since=r["unsynced_since"],
            error_message=r["error_message"],
            retry_count=r["retry_count"],
            next_retry_at=r["next_retry_at"],
        )


NEW = SyncState(status=Status.PENDING)
SUCCEEDED = Status.SUCCEEDED


def retry_delay(retry_count: int) -> timedelta:
    """Exponential backoff for the n-th consecutive failure (1-based), capped."""
    exponent = min(max(retry_count - 1, 0), MAX_DOUBLINGS)
    delay: timedelta = RETRY_BASE * (1 << exponent)
    return min(delay, RETRY_CAP)


def apply(state: SyncState | None, report: Report, now: datetime) -> tuple[Outcome, SyncState]:
    """The state after ``report``, and what happened. Refusals return the state unchanged."""
    current = state or NEW
    if current.status is Status.CONFLICT:
        return Outcome.CONFLICT, current
    if report.version is not None:
        verdict = _check_version(current, report)
        if verdict is not None:
            if verdict is Outcome.CONFLICT:
                return verdict, _mark_conflict(current, report, now)
            return verdict, current
    after = _move(current, report, now)
    if state is None:
        return Outcome.CREATED, after
    return (Outcome.UNCHANGED if after == current else Outcome.UPDATED), after


def _check_version(state: SyncState, report: Report) -> Outcome | None:
    v = report.version
    assert v is not None
    synced = state.version
    if synced is not None and (v < synced or (v == synced and report.status is not SUCCEEDED)):
        return Outcome.STALE
    if report.status is Status.SUCCEEDED:
        return None
    if state.pending_side is report.side and state.pending_version is not None:
        return Outcome.STALE if v < state.pending_version else None
    if state.pending_side is report.side.other and state.pending_version is not None:
        return Outcome.CONFLICT  # both sides changed the entity since the last agreed version
    return None


def _mark_conflict(state: SyncState, report: Report, now: datetime) -> SyncState:
    assert report.version is not None and state.pending_version is not None
    versions = {report.side.value: report.version, report.side.other.value: state.pending_version}
    return replace(
        state,
        status=Status.CONFLICT,
        conflict=versions,
        error_message=(
            f"both sides changed the entity since version {state.version}: "
            f"internal {versions['internal']}, external {versions['external']}"
        ),
        unsynced_since=state.unsynced_since or now,
        next_retry_at=None,
    )


def _move(state: SyncState, report: Report, now: datetime) -> SyncState:
    if report.status is Status.SUCCEEDED:
        return _succeeded(state, report, now)
    pending_side, pending_version = state.pending_side, state.pending_version
    if report.version is not None:
        pending_side, pending_version = report.side, report.version
    changed = replace(
        state,
        status=report.status,
        pending_side=pending_side,
        pending_version=pending_version,
        unsynced_since=state.unsynced_since or now,
    )
    if report.status is Status.FAILED:
        retries = state.retry_count + 1
        return replace(
            changed,
            last_attempt_at=now,
            retry_count=retries,
            error_message=_clip(report.error) or "sync failed",
            next_retry_at=now + retry_delay(retries),
        )
    if report.status is Status.IN_PROGRESS:
        return replace(changed, last_attempt_at=now, next_retry_at=None)
    if state.status is Status.PENDING and report.version is None:
        return state  # pending again, nothing new
    return changed


def _succeeded(state: SyncState, report: Report, now: datetime) -> SyncState:
    version = state.version if report.version is None else report.version
    keep_pending = (
        state.pending_version is not None
        and version is not None
        and state.pending_version > version
    )
    return replace(
        state,
        status=Status.PENDING if keep_pending else Status.SUCCEEDED,
        version=version,
        pending_side=state.pending_side if keep_pending else None,
        pending_version=state.pending_version if keep_pending else None,
        last_attempt_at=now,
        last_success_at=now,
        unsynced_since=state.unsynced_since if keep_pending else None,
        error_message=None,
        retry_count=0,
        next_retry_at=None,
    )


def resolve(state: SyncState, side: Side, now: datetime) -> SyncState:
    """Settle a conflict for ``side``: its version becomes the change to sync."""
    if state.status is not Status.CONFLICT or state.conflict is None:
        raise ValueError("the entity is not in conflict")
    return replace(
        state,
        status=Status.PENDING,
        pending_side=side,
        pending_version=state.conflict[side.value],
        conflict=None,
        error_message=None,
        retry_count=0,
        next_retry_at=now,
    )


def retry_now(state: SyncState, now: datetime) -> SyncState:
    """A failed sync made due at once (the reporter picks it up on its next poll)."""
    if state.status is not Status.FAILED:
        raise ValueError(f"only failed entities can be retried; this one is {state.status}")
    return replace(state, status=Status.PENDING, next_retry_at=now)


def _clip(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.replace("\x00", "\ufffd")
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS]
