"""The sync status rules: staleness, conflicts, retries, resolution (pure)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from gateway.errors import ConfigError
from gateway.routes import parse_routes
from gateway.sync.model import (
    RETRY_CAP,
    Direction,
    EntityKey,
    Outcome,
    Report,
    Side,
    Status,
    apply,
    resolve,
    retry_delay,
    retry_now,
)
from gateway.sync.traffic import pointer_get

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
KEY = EntityKey("reservation", uuid.uuid4(), "booking_engine", Direction.BIDIRECTIONAL)


def rep(
    status: Status, side: Side = Side.INTERNAL, version: int | None = None, error: str | None = None
) -> Report:
    return Report(KEY, status, side, version, error)


def test_first_report_creates_and_success_clears_failure_state() -> None:
    outcome, s = apply(None, rep(Status.FAILED, error="timeout"), T0)
    assert outcome is Outcome.CREATED
    assert s.status is Status.FAILED and s.retry_count == 1 and s.error_message == "timeout"
    assert s.next_retry_at == T0 + retry_delay(1) and s.unsynced_since == T0
    outcome, s = apply(s, rep(Status.FAILED, error="again"), T0 + timedelta(minutes=2))
    assert outcome is Outcome.UPDATED and s.retry_count == 2
    assert s.unsynced_since == T0, "lag is measured from the first failure"
    outcome, s = apply(s, rep(Status.SUCCEEDED), T0 + timedelta(minutes=3))
    assert s.status is Status.SUCCEEDED and s.retry_count == 0 and s.error_message is None
    assert s.last_success_at == T0 + timedelta(minutes=3) and s.unsynced_since is None
    outcome, again = apply(s, rep(Status.SUCCEEDED), T0 + timedelta(minutes=3))
    assert outcome is Outcome.UNCHANGED and again == s


def test_reports_older_than_the_synced_version_are_stale() -> None:
    _, s = apply(None, rep(Status.SUCCEEDED, version=5), T0)
    assert s.version == 5
    for status in (Status.SUCCEEDED, Status.PENDING, Status.FAILED):
        outcome, after = apply(s, rep(status, version=4), T0)
        assert outcome is Outcome.STALE and after == s
    outcome, _ = apply(s, rep(Status.PENDING, version=5), T0)
    assert outcome is Outcome.STALE, "a change must be newer than what is synced"
    outcome, s2 = apply(s, rep(Status.PENDING, version=6), T0)
    assert outcome is Outcome.UPDATED and s2.pending_version == 6
    outcome, _ = apply(s2, rep(Status.PENDING, version=6), T0)
    assert outcome is Outcome.UNCHANGED
    outcome, _ = apply(s2, rep(Status.IN_PROGRESS, version=5), T0)
    assert outcome is Outcome.STALE


def test_both_sides_changing_is_a_conflict_until_resolved() -> None:
    _, s = apply(None, rep(Status.SUCCEEDED, version=3), T0)
    _, s = apply(s, rep(Status.PENDING, Side.INTERNAL, version=4), T0)
    outcome, s = apply(s, rep(Status.PENDING, Side.EXTERNAL, version=7), T0)
    assert outcome is Outcome.CONFLICT and s.status is Status.CONFLICT
    assert s.conflict == {"internal": 4, "external": 7}
    assert "version 3" in (s.error_message or "")
    outcome, same = apply(s, rep(Status.SUCCEEDED, version=9), T0)
    assert outcome is Outcome.CONFLICT and same == s, "no report passes a conflict"
    resolved = resolve(s, Side.EXTERNAL, T0)
    assert resolved.status is Status.PENDING and resolved.conflict is None
    assert (resolved.pending_side, resolved.pending_version) == (Side.EXTERNAL, 7)
    _, done = apply(resolved, rep(Status.SUCCEEDED, Side.EXTERNAL, version=7), T0)
    assert done.status is Status.SUCCEEDED and done.version == 7 and done.pending_side is None
    with pytest.raises(ValueError):
        resolve(done, Side.INTERNAL, T0)


def test_success_of_an_older_change_keeps_a_newer_one_pending() -> None:
    _, s = apply(None, rep(Status.PENDING, version=10), T0)
    _, s = apply(s, rep(Status.PENDING, version=11), T0)
    outcome, s = apply(s, rep(Status.SUCCEEDED, version=10), T0)
    assert outcome is Outcome.UPDATED
    assert s.status is Status.PENDING and s.version == 10 and s.pending_version == 11


def test_retry_now_and_backoff() -> None:
    _, s = apply(None, rep(Status.FAILED, error="x"), T0)
    due = retry_now(s, T0)
    assert due.status is Status.PENDING and due.next_retry_at == T0
    with pytest.raises(ValueError):
        retry_now(due, T0)
    assert retry_delay(1) < retry_delay(2) < retry_delay(3)
    assert retry_delay(10_000) == RETRY_CAP


def test_pointer_lookup() -> None:
    doc = {"a": {"b": [{"id": 1}, {"id": 2}]}, "x/y": 3, "t~": 4}
    assert pointer_get(doc, "/a/b/1/id") == 2
    assert pointer_get(doc, "/x~1y") == 3 and pointer_get(doc, "/t~0") == 4
    assert pointer_get(doc, "/a/b/9/id") is None and pointer_get(doc, "/a/b/x") is None
    assert pointer_get("text", "/a") is None


def test_sync_route_options_are_validated() -> None:
    base = """
upstreams: {main: http://127.0.0.1:1}
routes:
  - name: r
    path: /reservations/{id}
    upstream: main
    sync: %s
"""
    ok = parse_routes(base % "{entity_type: reservation, entity: 'path:id', direction: outbound}")
    sync = ok.routes[0].sync
    assert sync is not None and (sync.source, sync.locator, sync.direction) == (
        "path",
        "id",
        "outbound",
    )
    for bad, words in (
        ("{entity_type: reservation, entity: 'path:nope'}", "sync'.entity: path has no parameter"),
        ("{entity_type: Reservation, entity: 'path:id'}", "sync'.entity_type"),
        ("{entity_type: reservation, entity: 'body:/id'}", "sync'.entity: must be path:"),
        ("{entity_type: reservation, entity: 'request:id'}", "JSON pointer starts with '/'"),
        ("{entity_type: reservation, entity: 'path:id', direction: up}", "sync'.direction"),
        ("{entity_type: reservation, entity: 'path:id', when: 201}", "unknown field 'when'"),
    ):
        with pytest.raises(ConfigError) as err:
            parse_routes(base % bad, "routes.yaml")
        assert "routes.yaml: routes[0] 'r': field 'sync" in str(err.value)
        assert words in str(err.value), str(err.value)
