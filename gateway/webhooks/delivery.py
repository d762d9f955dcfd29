"""The delivery loop that runs in every gateway process.

    claim (FOR UPDATE SKIP LOCKED + lease) → POST each (signed, bounded) → decide
    → complete in batches (attempt rows + delivery status + subscription health)

NOTIFY webhook_deliveries only wakes the claimer; polling every
GATEWAY_WEBHOOK_POLL_INTERVAL is the guarantee. A claim is a lease: a process that dies
mid-attempt leaves deliveries that become due again when the lease expires, so every
delivery is attempted at least once more (same webhook-id). On shutdown, attempts get the
shutdown timeout to finish; the rest are cancelled and handed back (status pending).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
from yarl import URL

from gateway import metrics
from gateway.crypto import SecretBox
from gateway.db.pool import init_connection
from gateway.settings import Settings
from gateway.webhooks import store
from gateway.webhooks.model import AttemptResult, Claimed, DeliveryStatus
from gateway.webhooks.payload import (
    OutcomeReporter,
    PayloadTranslator,
    Signer,
    build_body,
    on_delivery_outcome,
    translate_payload,
)
from gateway.webhooks.policy import (
    AttemptOutcome,
    Decision,
    RetryPolicy,
    SubscriptionEffect,
    decide,
    parse_retry_after,
)
from gateway.webhooks.ssrf import AddressPolicy, BlockedAddress, GuardedResolver, literal_refusal

log = logging.getLogger(__name__)

CHANNEL = "webhook_deliveries"
CLAIM_BATCH = 100  # deliveries leased per claim query
COMPLETE_BATCH = 500  # attempt results written per statement
EXCERPT_MAX = 2048  # bytes of a subscriber's answer kept in webhook_attempts
EXCERPT_READ_TIMEOUT = 1.0  # seconds to read that excerpt after the headers arrived
ERROR_MAX = 500  # characters of an error message kept
LISTEN_CHECK_INTERVAL = 1.0  # seconds between checks that the LISTEN connection is alive
NO_SYSTEM = "none"  # the failed-attempts label of subscriptions without an external system
# The loop's own connections: listener, claimer, completer, gauges, pruning. They commit without
# waiting for the WAL flush (synchronous_commit=off): a claim or a result lost in a
# database crash only means one more attempt (at-least-once), and every delivery stops
# paying an fsync twice. Events themselves are written with the default (durable) commit.
LOOP_POOL_SIZE = 5
LOOP_SERVER_SETTINGS = {"synchronous_commit": "off"}
PRUNE_BATCH = 10_000  # rows deleted per statement when pruning (short transactions)
COMPLETE_LINGER = 0.002  # seconds the completer waits for more results to batch
CONNECTOR_LIMIT = 1000  # connections open to subscribers at once (per process)
POOL_CONNECT_TIMEOUT = 5.0  # seconds to open a loop connection before giving up
DNS_CACHE_TTL = 10  # seconds; short, so the SSRF check sees DNS changes soon
# seconds between sweeps releasing ordered deliveries a concurrent completion left held
# (see store.release_stranded); the release trigger does it at once in every other case
RELEASE_SWEEP_INTERVAL = 2.0


async def loop_pool(dsn: str) -> asyncpg.Pool:
    """Connections for the delivery loop only (asynchronous commit, see above)."""
    return await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=LOOP_POOL_SIZE,
        init=init_connection,
        server_settings=LOOP_SERVER_SETTINGS,
        timeout=POOL_CONNECT_TIMEOUT,
    )


def webhook_session(policy: AddressPolicy) -> aiohttp.ClientSession:
    """The client for subscribers: SSRF-guarded resolver, no cookies, no redirects."""
    connector = aiohttp.TCPConnector(
        limit=CONNECTOR_LIMIT,
        limit_per_host=0,
        resolver=GuardedResolver(policy),
        ttl_dns_cache=DNS_CACHE_TTL,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),  # each attempt has its own timeout
        skip_auto_headers=("User-Agent",),
    )


class Sender:
    """One HTTP attempt: build, sign, POST, read a bounded excerpt, classify."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        signer: Signer,
        policy: AddressPolicy,
        translate: PayloadTranslator = translate_payload,
    ) -> None:
        self.session, self.signer, self.policy = session, signer, policy
        self.translate = translate

    async def attempt(self, d: Claimed) -> AttemptOutcome:
        url = URL(d.url)
        refused = literal_refusal(url, self.policy)
        if refused is not None:
            return AttemptOutcome(AttemptResult.REFUSED, error=f"refused: {refused}")
        data = d.payload
        if d.external_system is not None:
            data = await self.translate(
                data,
                tenant_id=d.tenant_id,
                external_system=d.external_system,
                event_type=d.event_type,
            )
        body = build_body(d, data)
        headers = self.signer.auth_headers(d.auth_type, d.auth_secret)
        headers.update(self.signer.headers(d, body, datetime.now(UTC)))
        started = time.perf_counter()
        outcome = await self._post(url, body, headers, d.attempt_timeout)
        elapsed = (time.perf_counter() - started) * 1000.0
        return AttemptOutcome(
            outcome.result,
            outcome.status_code,
            elapsed,
            outcome.error,
            outcome.response_excerpt,
            outcome.retry_after,
        )

    async def _post(
        self, url: URL, body: bytes, headers: dict[str, str], timeout: float
    ) -> AttemptOutcome:
        try:
            async with asyncio.timeout(timeout):
                resp = await self.session.post(
                    url, data=body, headers=headers, allow_redirects=False
                )
        except TimeoutError:
            return AttemptOutcome(AttemptResult.TIMEOUT, error=f"no answer within {timeout} s")
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, BlockedAddress) or isinstance(
                exc.__cause__, BlockedAddress
            ):
                return AttemptOutcome(AttemptResult.REFUSED, error=str(exc.os_error)[:ERROR_MAX])
            return AttemptOutcome(AttemptResult.CONNECT_ERROR, error=_error_text(exc))
        except (aiohttp.ClientError, OSError) as exc:
            return AttemptOutcome(AttemptResult.CONNECT_ERROR, error=_error_text(exc))
        return await self._answer(resp)

    async def _answer(self, resp: aiohttp.ClientResponse) -> AttemptOutcome:
        try:
            excerpt, complete = await _read_excerpt(resp)
        finally:
            # A fully read answer keeps its connection; a huge or trickling one is cut off.
            if resp.content.at_eof():
                resp.release()
            else:
                resp.close()
        status = resp.status
        ok = 200 <= status < 300
        return AttemptOutcome(
            AttemptResult.DELIVERED if ok else AttemptResult.HTTP_ERROR,
            status,
            error=None if ok else f"endpoint answered {status}",
            response_excerpt=excerpt + ("" if complete else " [truncated]") if excerpt else None,
            retry_after=parse_retry_after(resp.headers.get("Retry-After")),
        )


async def _read_excerpt(resp: aiohttp.ClientResponse) -> tuple[str, bool]:
    buf = bytearray()
    try:
        async with asyncio.timeout(EXCERPT_READ_TIMEOUT):
            while len(buf) < EXCERPT_MAX:
                chunk = await resp.content.read(EXCERPT_MAX - len(buf))
                if not chunk:
                    break
                buf += chunk
    except (TimeoutError, aiohttp.ClientError):
        pass
    text = bytes(buf).decode("utf-8", "replace").replace("\x00", "\ufffd")
    return text, resp.content.at_eof()


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:ERROR_MAX].replace("\x00", "\ufffd")


def _scrub(c: store.Completion) -> store.Completion:
    return dataclasses.replace(c, error="(error text not storable)", excerpt=None)


def retry_policy(d: Claimed, default_schedule: tuple[float, ...]) -> RetryPolicy:
    return RetryPolicy(d.max_attempts, d.retry_schedule or default_schedule, d.backoff)


# One attempt's result for the completer: the row update, the subscription's health
# effect, the subscription, and the seconds its endpoint backs off (429/502/503/504).
Result = tuple[store.Completion, SubscriptionEffect, uuid.UUID, float | None]


class Completer:
    """Writes attempt results in batches; keeps retrying while the database is down."""

    def __init__(
        self, pool: asyncpg.Pool, settings: Settings, on_flush: Callable[[], None]
    ) -> None:
        self.pool, self.settings, self.on_flush = pool, settings, on_flush
        self.queue: asyncio.Queue[Result] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="webhook-completer")

    def submit(
        self,
        c: store.Completion,
        effect: SubscriptionEffect,
        sub: uuid.UUID,
        pause: float | None = None,
    ) -> None:
        self.queue.put_nowait((c, effect, sub, pause))

    async def _run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            if self.queue.empty():
                await asyncio.sleep(COMPLETE_LINGER)
            while len(batch) < COMPLETE_BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                await self._write(batch)
            except Exception:  # a bug: drop the batch (its leases expire, attempts repeat)
                log.exception("webhook results could not be written")
            for _ in batch:
                self.queue.task_done()
            self.on_flush()

    async def _write(self, batch: list[Result]) -> None:
        effects = _merge_effects((effect, sub) for _, effect, sub, _ in batch)
        pauses: dict[uuid.UUID, float] = {}
        for _, _, sub, pause in batch:
            if pause is not None:
                pauses[sub] = max(pause, pauses.get(sub, 0.0))
        done = [c for c, _, _, _ in batch]
        scrubbed = False
        while True:
            try:
                async with self.pool.acquire() as conn:
                    await store.complete(
                        conn, done, effects, self.settings.webhook_disable_after, pauses
                    )
                return
            except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
                # A value PostgreSQL refuses must not block every later result: retry once
                # without the free-text columns, then give up (the leases expire and those
                # deliveries are attempted again).
                log.error("webhook results refused (%s)", type(exc).__name__)
                if scrubbed:
                    return
                done, scrubbed = [_scrub(c) for c in done], True
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("webhook results not written yet (%s); retrying", type(exc).__name__)
                await asyncio.sleep(self.settings.db_retry_interval)

    async def close(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.queue.join()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


EFFECT_RANK = {
    SubscriptionEffect.NONE: 0,
    SubscriptionEffect.FAILED: 1,
    SubscriptionEffect.SUCCEEDED: 2,  # one success in a batch proves the endpoint works
    SubscriptionEffect.GONE: 3,
}


def _merge_effects(pairs: Any) -> dict[uuid.UUID, str]:
    out: dict[uuid.UUID, SubscriptionEffect] = {}
    for effect, sub in pairs:
        if EFFECT_RANK[effect] > EFFECT_RANK[out.get(sub, SubscriptionEffect.NONE)]:
            out[sub] = effect
    return {sub: effect.value for sub, effect in out.items()}


class Dispatcher:
    """Claims due deliveries and runs their attempts, bounded per process and per
    subscription (the claim query enforces each subscription's max_concurrency)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        session: aiohttp.ClientSession,
        box: SecretBox,
        settings: Settings,
        policy: AddressPolicy,
        translate: PayloadTranslator = translate_payload,
        report: OutcomeReporter = on_delivery_outcome,
    ) -> None:
        """``pool``: the loop's own (see LOOP_POOL_SIZE), from :func:`loop_pool`;
        ``translate`` / ``report``: the external-system hooks (gateway/webhooks/payload.py)."""
        self.pool, self.settings = pool, settings
        self.sender = Sender(session, Signer(box), policy, translate)
        self.report = report
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._seq = itertools.count(1)
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False
        self.completer = Completer(pool, settings, self._wake.set)
        self.rng = random.Random()

    def start(self) -> None:
        self.completer.start()
        for name, coro in (
            ("webhook-claimer", self._claim_loop()),
            ("webhook-listener", self._listen_loop()),
            ("webhook-stats", self._stats_loop()),
            ("webhook-prune", self._prune_loop()),
            ("webhook-release", self._release_loop()),
        ):
            self._loops.append(asyncio.create_task(coro, name=name))

    def wake(self) -> None:
        self._wake.set()

    # -- claiming ------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping:
            try:
                await self._claim_round()
            except Exception:  # a bug here must not stop deliveries for good
                log.exception("webhook claim round failed")
                await asyncio.sleep(self.settings.db_retry_interval)

    async def _claim_round(self) -> None:
        """Claim what is due; then wait for a NOTIFY, a freed slot or the poll interval."""
        self._wake.clear()
        free = self.settings.webhook_max_in_flight - len(self._inflight)
        asked = min(free, CLAIM_BATCH)
        got = await self._claim_once(asked) if asked > 0 else 0
        if asked > 0 and got == asked:
            return  # more may be due right now
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.webhook_poll_interval):
                await self._wake.wait()

    async def _release_loop(self) -> None:
        """The sweep of store.release_stranded, on its own: never in the way of claims."""
        while not self._stopping:
            try:
                async with self.pool.acquire() as conn:
                    if await store.release_stranded(conn):
                        self._wake.set()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("webhook release sweep failed: %s", type(exc).__name__)
            await asyncio.sleep(RELEASE_SWEEP_INTERVAL)

    async def _claim_once(self, limit: int) -> int:
        owner = f"{self.worker_id}:{next(self._seq)}"
        try:
            async with self.pool.acquire() as conn:
                claimed = await store.claim(conn, owner, limit, self.settings.webhook_lease_margin)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("webhook claim failed: %s", type(exc).__name__)
            await asyncio.sleep(self.settings.db_retry_interval)
            return 0
        for d in claimed:
            task = asyncio.create_task(self._run_attempt(d))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        return len(claimed)

    # -- one attempt -----------------------------------------------------------------------

    async def _run_attempt(self, d: Claimed) -> None:
        try:
            outcome = await self.sender.attempt(d)
        except asyncio.CancelledError:
            self._finish(d, AttemptOutcome(AttemptResult.RELEASED, error="gateway shut down"))
            raise
        except Exception as exc:  # a bug must not strand the delivery until its lease ends
            log.exception("webhook attempt for delivery %s failed unexpectedly", d.id)
            outcome = AttemptOutcome(AttemptResult.CONNECT_ERROR, error=_error_text(exc))
        self._finish(d, outcome)
        if d.external_system is not None:
            await self._report_outcome(d, outcome)

    def _finish(self, d: Claimed, outcome: AttemptOutcome) -> None:
        policy = retry_policy(d, self.settings.webhook_retry_schedule)
        decision = decide(outcome, d.attempt_number, policy, self.rng)
        self._observe(d, outcome, decision)
        completion = store.Completion(
            d.id,
            d.lease_owner,
            decision.status,
            decision.delay,
            d.attempt_number,
            outcome.result.value,
            outcome.status_code,
            outcome.duration_ms,
            outcome.error,
            outcome.response_excerpt,
        )
        self.completer.submit(completion, decision.effect, d.subscription_id, decision.pause)

    def _observe(self, d: Claimed, outcome: AttemptOutcome, decision: Decision) -> None:
        metrics.WEBHOOK_ATTEMPTS.labels(outcome.result.value).inc()
        if outcome.result is not AttemptResult.RELEASED:
            metrics.WEBHOOK_ATTEMPT_DURATION.observe(outcome.duration_ms / 1000.0)
        if outcome.result not in (AttemptResult.DELIVERED, AttemptResult.RELEASED):
            metrics.WEBHOOK_FAILED_ATTEMPTS.labels(d.external_system or NO_SYSTEM).inc()
        if decision.status is DeliveryStatus.DELIVERED:
            metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
            lag = (datetime.now(UTC) - d.event_created_at).total_seconds()
            metrics.WEBHOOK_DELIVERY_LAG.observe(max(lag, 0.0))
        elif decision.status is DeliveryStatus.FAILED:
            metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
            log.info("webhook delivery %s failed for good: %s", d.id, outcome.error)

    async def _report_outcome(self, d: Claimed, outcome: AttemptOutcome) -> None:
        assert d.external_system is not None
        try:
            await self.report(
                tenant_id=d.tenant_id,
                external_system=d.external_system,
                event_type=d.event_type,
                payload=d.payload,
                delivered=outcome.result is AttemptResult.DELIVERED,
                error=outcome.error,
            )
        except Exception:
            log.exception("sync-status hook failed for delivery %s", d.id)

    # -- wake-ups and gauges ---------------------------------------------------------------

    async def _listen_loop(self) -> None:
        while not self._stopping:
            try:
                async with self.pool.acquire() as conn:
                    await conn.add_listener(CHANNEL, self._notified)
                    try:
                        self._wake.set()  # anything that arrived while not listening
                        while not conn.is_closed() and not self._stopping:
                            await asyncio.sleep(LISTEN_CHECK_INTERVAL)
                    finally:  # also when cancelled: a pooled connection must not keep it
                        if not conn.is_closed():
                            await conn.remove_listener(CHANNEL, self._notified)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await asyncio.sleep(self.settings.db_retry_interval)

    def _notified(self, *args: Any) -> None:
        self._wake.set()

    async def _prune_loop(self) -> None:
        """Delete old finished rows, in batches, every maintenance interval (one process)."""
        while not self._stopping:
            try:
                async with self.pool.acquire() as conn:
                    while True:
                        counts = await store.prune(
                            conn, self.settings.webhook_retention_days, PRUNE_BATCH
                        )
                        if max(counts) < PRUNE_BATCH:
                            break
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("webhook pruning failed: %s", type(exc).__name__)
            await asyncio.sleep(self.settings.maintenance_interval)

    async def _stats_loop(self) -> None:
        while not self._stopping:
            try:
                async with self.pool.acquire() as conn:
                    pending, oldest, disabled = await store.stats(conn)
                metrics.WEBHOOK_PENDING.set(pending)
                metrics.WEBHOOK_OLDEST_PENDING_AGE.set(oldest)
                metrics.WEBHOOK_DISABLED_SUBSCRIPTIONS.set(disabled)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pass  # the next round tries again; gauges keep their last value
            await asyncio.sleep(self.settings.webhook_stats_interval)

    # -- shutdown ----------------------------------------------------------------------------

    async def close(self, timeout: float) -> None:
        """Stop claiming, let attempts finish within ``timeout``, hand back the rest."""
        self._stopping = True
        self._wake.set()
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.completer.close(timeout)
