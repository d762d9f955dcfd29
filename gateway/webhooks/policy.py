"""What happens after an attempt: delivered, retried later (and when), or dead. Pure code.

The default schedule is Svix's: attempt 1 at once, then 5 s, 5 min, 30 min, 2 h, 5 h,
10 h, 10 h after each failure, each delay jittered by ±20 %. A subscription may set its own
schedule, or exponential backoff (initial x multiplier^n, capped). 429, 502, 503 and 504
say the endpoint as a whole is overloaded or down: the subscription is paused (nothing of it
is claimed) for the delay, which ``Retry-After`` replaces when the answer carries one. 410
Gone kills the delivery and disables the subscription.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from gateway.webhooks.model import AttemptResult, DeliveryStatus

JITTER = 0.2  # ±20 % on every computed delay, so retries of one outage do not stampede
MAX_RETRY_AFTER = 24 * 3600.0  # seconds: a Retry-After beyond a day is capped to a day
# Answers that back off the whole endpoint (Standard Webhooks' throttling advice).
BACKOFF_STATUSES = frozenset({429, 502, 503, 504})
GONE = 410


class SubscriptionEffect(enum.StrEnum):
    NONE = "none"
    SUCCEEDED = "succeeded"  # clears failing_since
    FAILED = "failed"  # sets failing_since (the store disables it after the configured period)
    GONE = "gone"  # 410: disable at once


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What one attempt saw."""

    result: AttemptResult
    status_code: int | None = None
    duration_ms: float = 0.0
    error: str | None = None
    response_excerpt: str | None = None
    retry_after: float | None = None  # seconds, from the answer's Retry-After


@dataclass(frozen=True, slots=True)
class Decision:
    status: DeliveryStatus
    delay: float  # seconds until the next attempt (pending only)
    effect: SubscriptionEffect
    pause: float | None = None  # seconds the whole subscription waits (endpoint backoff)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    schedule: tuple[float, ...]
    backoff: tuple[float, float, float] | None = None  # initial, multiplier, max

    def base_delay(self, failed_attempt: int) -> float:
        """Seconds before attempt ``failed_attempt + 1``, before jitter."""
        if self.backoff is not None:
            initial, multiplier, maximum = self.backoff
            return float(min(maximum, initial * multiplier ** (failed_attempt - 1)))
        index = min(failed_attempt, len(self.schedule) - 1)
        return float(self.schedule[index])


def jittered(delay: float, rng: random.Random | None = None) -> float:
    r = rng or random
    return max(0.0, delay * (1.0 + r.uniform(-JITTER, JITTER)))


def decide(
    outcome: AttemptOutcome,
    attempt_number: int,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> Decision:
    """The delivery's next status after attempt ``attempt_number`` (1-based)."""
    if outcome.result is AttemptResult.DELIVERED:
        return Decision(DeliveryStatus.DELIVERED, 0.0, SubscriptionEffect.SUCCEEDED)
    if outcome.result is AttemptResult.RELEASED:
        return Decision(DeliveryStatus.PENDING, 0.0, SubscriptionEffect.NONE)
    if outcome.status_code == GONE:
        return Decision(DeliveryStatus.FAILED, 0.0, SubscriptionEffect.GONE)
    backoff = outcome.status_code in BACKOFF_STATUSES
    if backoff and outcome.retry_after is not None:
        delay = min(outcome.retry_after, MAX_RETRY_AFTER)
    else:
        delay = jittered(policy.base_delay(attempt_number), rng)
    pause = delay if backoff else None
    if attempt_number >= policy.max_attempts:
        return Decision(DeliveryStatus.FAILED, 0.0, SubscriptionEffect.FAILED, pause)
    return Decision(DeliveryStatus.PENDING, delay, SubscriptionEffect.FAILED, pause)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
