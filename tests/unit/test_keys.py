"""API-key expiry checks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.auth.keys import ApiKey, Role

NOW = datetime.now(UTC)


def key(expires_at: datetime | None = None, revoked_at: datetime | None = None) -> ApiKey:
    return ApiKey(
        uuid.uuid4(), uuid.uuid4(), "k", Role.PARTNER, "pms", "gwk_abcdefgh", None,
        expires_at, revoked_at, NOW,
    )  # fmt: skip


HOUR = timedelta(hours=1)


@pytest.mark.parametrize(
    ("expires_in", "zone", "revoked", "reason"),
    [
        (None, UTC, False, None),
        (HOUR, UTC, False, None),
        (-timedelta(microseconds=1), UTC, False, "expired_key"),
        (-timedelta(days=400), UTC, False, "expired_key"),
        (-timedelta(seconds=1), timezone(timedelta(hours=5)), False, "expired_key"),
        (HOUR, timezone(timedelta(hours=-5)), False, None),
        (HOUR, UTC, True, "revoked_key"),
        (None, UTC, True, "revoked_key"),
    ],
)
def test_a_key_is_usable_now_exactly_when_usable_at_now_says_so(
    expires_in: timedelta | None, zone: timezone, revoked: bool, reason: str | None
) -> None:
    now = datetime.now(zone)
    k = key(None if expires_in is None else now + expires_in, now if revoked else None)
    assert k.usable_now() == reason == k.usable_at(datetime.now(UTC))


def test_a_key_with_a_naive_expiry_fails_as_before() -> None:
    k = key(datetime.now() + timedelta(hours=1))  # naive: the point of the test
    with pytest.raises(TypeError):
        k.usable_at(datetime.now(UTC))
    with pytest.raises(TypeError):
        k.usable_now()


def test_derived_ids_are_the_uuids_as_text_and_not_part_of_equality() -> None:
    k = key()
    assert (k.id_str, k.tenant_id_str) == (str(k.id), str(k.tenant_id))
    same = ApiKey(*(getattr(k, f) for f in ApiKey.__match_args__))
    assert same == k and hash(same) == hash(k)
    assert "id_str" not in repr(k)
