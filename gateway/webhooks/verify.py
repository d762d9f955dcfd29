"""Verify on subscribe: one signed ``webhook.test`` POST to a new or changed subscription's
endpoint before it is saved (``verify: true``); anything but a 2xx answer refuses the
change. The attempt is the delivery loop's own (SSRF guard, signature, auth headers,
timeout), on a short-lived client of its own."""

from __future__ import annotations

import dataclasses

from gateway.crypto import SecretBox
from gateway.webhooks.delivery import Sender, webhook_session
from gateway.webhooks.model import AttemptResult, Claimed
from gateway.webhooks.payload import Signer
from gateway.webhooks.ssrf import AddressPolicy

VERIFY_TIMEOUT_MAX = 10.0  # seconds an admin request waits for the endpoint at most


async def verify_endpoint(target: Claimed, box: SecretBox, policy: AddressPolicy) -> str | None:
    """None when the endpoint answered 2xx; otherwise what went wrong (for the 422)."""
    target = dataclasses.replace(
        target, attempt_timeout=min(target.attempt_timeout, VERIFY_TIMEOUT_MAX)
    )
    async with webhook_session(policy) as session:
        outcome = await Sender(session, Signer(box), policy).attempt(target)
    if outcome.result is AttemptResult.DELIVERED:
        return None
    return outcome.error or outcome.result.value
