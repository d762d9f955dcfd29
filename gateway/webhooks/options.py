"""Admin API input for the subscription options of issue 21 (ordering, coalescing, echo
suppression, rate limit, signature scheme, verify on subscribe): checked field by field,
each problem a 422 naming the field. Kept apart from inputs.py, which only lists the names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from gateway.web.http import field
from gateway.webhooks.inputs import bad, number
from gateway.webhooks.model import Ordering, SignatureScheme

OPTION_FIELDS = frozenset(
    {"ordering", "coalesce", "suppress_own_changes", "rate_limit", "signature", "verify"}
)
MIN_RATE = 0.01  # deliveries per second: one every 100 s at the slowest
MAX_RATE = 10_000.0  # mirrors the CHECK in sql/009_webhook_features.sql
E = TypeVar("E", Ordering, SignatureScheme)


def subscription_options(body: Mapping[str, Any]) -> dict[str, Any]:
    """Column values of the options present in ``body`` (POST or PATCH)."""
    out: dict[str, Any] = {}
    if body.get("ordering") is not None:
        out["ordering"] = _choice(body["ordering"], "ordering", Ordering).value
    if body.get("coalesce") is not None:
        out["coalesce_updates"] = field(body, "coalesce", bool)
    if "suppress_own_changes" in body:  # null: back to the default
        out["suppress_own_changes"] = field(body, "suppress_own_changes", bool, nullable=True)
    if "rate_limit" in body:  # null: no limit
        raw = body["rate_limit"]
        out["rate_limit"] = (
            None if raw is None else float(number(raw, "rate_limit", MIN_RATE, MAX_RATE))
        )
    if body.get("signature") is not None:
        out["signature_scheme"] = _choice(body["signature"], "signature", SignatureScheme).value
    return out


def wants_verify(body: Mapping[str, Any]) -> bool:
    """``verify: true``: send a signed test event before saving (see api.py)."""
    return bool(field(body, "verify", bool, nullable=True))


def _choice(raw: Any, name: str, kind: type[E]) -> E:
    try:
        return kind(raw)
    except ValueError:
        allowed = ", ".join(k.value for k in kind)
        raise bad(name, f"must be one of {allowed}") from None
