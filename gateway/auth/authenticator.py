"""Who is calling: API-key authentication (with a short-lived cache) and per-key rate limits.

A key is read from ``Authorization: Bearer <token>`` or ``X-Api-Key: <token>``. Lookups
are cached per process for ``CACHE_TTL`` seconds (hits and misses), so the proxy does not
query PostgreSQL per call; revoking a key through this process takes effect at once,
through another process within ``CACHE_TTL`` (plus the one lookup that finds out).

A call never waits on the database for a key it knows: an entry past its TTL (up to
``STALE_MAX`` old) still answers while one background lookup refreshes it. A key not known
is looked up with a deadline (``GATEWAY_DB_REQUEST_TIMEOUT``); a database that is down or
hangs past it answers 503 ``auth_unavailable`` for that key, and a known key keeps working
from the cache, however old its entry, until the database answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg

from gateway import metrics
from gateway.auth.keys import TOKEN_RE, ApiKey, hash_token, key_by_token_hash
from gateway.db.pool import REQUEST_DEADLINE, bounded
from gateway.errors import ClientError, ServiceUnavailable, Unauthorized

log = logging.getLogger(__name__)

CACHE_TTL = 10.0  # seconds a key lookup (found or not) is trusted
STALE_MAX = 300.0  # seconds past its TTL an entry still answers while it is refreshed
CACHE_MAX = 50_000  # entries; the cache is cleared when it grows past this (unknown-token floods)
KEY_HEADER = "X-Api-Key"


def token_from(headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The presented token and the header that carried it."""
    auth = headers.get("Authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        value = value.strip()
        if value and scheme.lower() == "bearer":
            return value, "Authorization"
    key = headers.get(KEY_HEADER)
    if key:
        return key.strip(), KEY_HEADER
    return None, None


def refuse(reason: str, exc: ClientError) -> ClientError:
    """Count an authentication/authorisation failure by reason, then hand back the error."""
    metrics.AUTH_FAILURES.labels(reason).inc()
    return exc


class Authenticator:
    def __init__(
        self, pool: asyncpg.Pool, ttl: float = CACHE_TTL, deadline: float = REQUEST_DEADLINE
    ) -> None:
        self._pool = pool
        self._ttl = ttl
        self._deadline = deadline
        self._cache: dict[bytes, tuple[ApiKey | None, float]] = {}
        self._refreshing: dict[bytes, asyncio.Task[ApiKey | None]] = {}
        self._generation = 0  # bumped by forget(): a lookup begun before must not cache

    async def authenticate(self, headers: Mapping[str, str]) -> ApiKey:
        """The caller's key, or Unauthorized (401) with a stable code per reason."""
        token, _ = token_from(headers)
        if token is None:
            raise refuse(
                "missing_key",
                Unauthorized(
                    "an API key is required (Authorization: Bearer <token> or X-Api-Key)",
                    code="missing_api_key",
                ),
            )
        token_hash = hash_token(token)
        hit = self._cache.get(token_hash)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            key = hit[0]  # only tokens that matched TOKEN_RE were ever looked up and cached
        elif not TOKEN_RE.match(token):
            raise refuse(
                "unknown_key", Unauthorized("the API key is not valid", code="invalid_api_key")
            )
        elif hit is not None and hit[0] is not None and hit[1] + STALE_MAX > now:
            key = hit[0]  # known: answer now, refresh behind the call
            self._lookup_once(token_hash, hit)
        else:
            key = await asyncio.shield(self._lookup_once(token_hash, hit))
        if key is None:
            raise refuse(
                "unknown_key", Unauthorized("the API key is not valid", code="invalid_api_key")
            )
        reason = key.usable_now()
        if reason is None:
            return key
        if reason == "revoked_key":
            raise refuse(reason, Unauthorized("the API key was revoked", code="revoked_api_key"))
        raise refuse(reason, Unauthorized("the API key has expired", code="expired_api_key"))

    def _lookup_once(
        self, token_hash: bytes, hit: tuple[ApiKey | None, float] | None
    ) -> asyncio.Task[ApiKey | None]:
        """One lookup per token at a time, however many calls present it meanwhile."""
        task = self._refreshing.get(token_hash)
        if task is None:
            task = asyncio.create_task(self._lookup(token_hash, hit))
            self._refreshing[token_hash] = task
            task.add_done_callback(lambda _: self._refreshing.pop(token_hash, None))
        return task

    async def _lookup(
        self, token_hash: bytes, hit: tuple[ApiKey | None, float] | None
    ) -> ApiKey | None:
        """Read a key from PostgreSQL within the deadline (``hit``: its expired cache
        entry, if any, used when the database is down or hangs)."""
        now, generation = time.monotonic(), self._generation
        try:
            async with bounded(self._pool, self._deadline) as conn:
                key = await key_by_token_hash(conn, token_hash)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # Per failed lookup (a flood of unknown tokens while the database hangs would
            # flood the log): the refusals are in api_logs, the outage in /readyz.
            log.debug("API key lookup failed: %s", type(exc).__name__)
            if hit is not None:  # the database is down: a known key still works
                return hit[0]
            raise ServiceUnavailable(
                "cannot check the API key right now", code="auth_unavailable"
            ) from None
        if generation != self._generation:
            return key  # a key was revoked meanwhile: answer, but do not cache a stale read
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[token_hash] = (key, now + self._ttl)
        return key

    def forget(self, key_id: uuid.UUID) -> None:
        """Drop a key from the cache (after it was revoked through this process)."""
        self._generation += 1
        for h, (key, _) in list(self._cache.items()):
            if key is not None and key.id == key_id:
                del self._cache[h]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token buckets per (key, scope); limits are per process (docs/proxy.md)."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[uuid.UUID, str], _Bucket] = {}

    def take(self, key_id: uuid.UUID, scope: str, requests: int, per_seconds: float) -> float:
        """Spend one request; 0.0 when allowed, else seconds until the next one is."""
        now = time.monotonic()
        rate = requests / per_seconds
        b = self._buckets.get((key_id, scope))
        if b is None:
            b = self._buckets[(key_id, scope)] = _Bucket(float(requests), now)
        b.tokens = min(float(requests), b.tokens + (now - b.stamp) * rate)
        b.stamp = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return 0.0
        return (1.0 - b.tokens) / rate
