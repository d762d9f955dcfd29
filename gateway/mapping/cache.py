"""The in-process mapping cache: bounded (entries and approximate bytes), LRU, with a TTL
for found ids and a shorter one for ids with no mapping (negative entries).

Keys are ``(way, tenant, system, entity_type, id)`` where way is ``in`` (external id →
internal UUID) or ``out`` (internal UUID → external id); the value is the other id or None.
Entries are dropped when a change is announced on the ``integration_mappings`` channel
(see gateway.mapping.listener) or made through this process.

A lookup that raced with a change must not store what it read before the change: every
invalidation bumps ``generation``, and ``put_many`` ignores results read under an older one.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from gateway import metrics

IN = "in"  # external id → internal id (requests)
OUT = "out"  # internal id → external id (responses)
ENTRY_OVERHEAD = 240  # bytes a cache entry costs beyond its strings (tuple, floats, dict slot)

Key = tuple[str, str, str, str, str]  # way, tenant, system, entity_type, id


@dataclass(frozen=True, slots=True)
class CacheLimits:
    max_entries: int = 200_000
    max_bytes: int = 64 * 1024 * 1024
    ttl: float = 300.0  # seconds a found mapping is trusted without a notification
    negative_ttl: float = 2.0  # seconds "no mapping" is trusted (a new one may appear soon)


def _size(key: Key, value: str | None) -> int:
    return ENTRY_OVERHEAD + sum(len(p) for p in key) + (len(value) if value else 0)


class MappingCache:
    def __init__(self, limits: CacheLimits = CacheLimits()) -> None:
        self.limits = limits
        self._entries: OrderedDict[Key, tuple[str | None, float, int]] = OrderedDict()
        self._bytes = 0
        self.generation = 0
        metrics.MAPPING_CACHE_ENTRIES.set_function(lambda: len(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def get_many(self, keys: Iterable[Key]) -> tuple[dict[Key, str | None], list[Key]]:
        """Answers for the keys held and fresh, and the keys that must be looked up."""
        now = time.monotonic()
        found: dict[Key, str | None] = {}
        missing: list[Key] = []
        expired = 0
        entries = self._entries
        for key in keys:
            hit = entries.get(key)
            if hit is not None:
                if hit[1] > now:
                    found[key] = hit[0]
                    entries.move_to_end(key)
                    continue
                self._drop(key)
                expired += 1
            missing.append(key)
        if expired:
            metrics.MAPPING_CACHE_EVICTIONS.labels("expired").inc(expired)
        return found, missing

    def put_many(self, values: dict[Key, str | None], generation: int) -> None:
        """Store lookup results, unless a change was announced since they were read."""
        if generation != self.generation:
            return
        now = time.monotonic()
        for key, value in values.items():
            ttl = self.limits.ttl if value is not None else self.limits.negative_ttl
            self._drop(key)
            size = _size(key, value)
            self._entries[key] = (value, now + ttl, size)
            self._bytes += size
        self._shrink()

    def _shrink(self) -> None:
        evicted = 0
        while self._entries and (
            len(self._entries) > self.limits.max_entries or self._bytes > self.limits.max_bytes
        ):
            _, (_, _, size) = self._entries.popitem(last=False)
            self._bytes -= size
            evicted += 1
        if evicted:
            metrics.MAPPING_CACHE_EVICTIONS.labels("size").inc(evicted)

    def _drop(self, key: Key) -> bool:
        old = self._entries.pop(key, None)
        if old is None:
            return False
        self._bytes -= old[2]
        return True

    def invalidate_rows(self, rows: Iterable[tuple[str, str, str, str, str]]) -> None:
        """Drop both directions of each ``(tenant, system, entity_type, internal, external)``."""
        self.generation += 1
        dropped = 0
        for tenant, system, entity_type, internal, external in rows:
            dropped += self._drop((IN, tenant, system, entity_type, external))
            dropped += self._drop((OUT, tenant, system, entity_type, internal))
        if dropped:
            metrics.MAPPING_CACHE_EVICTIONS.labels("invalidated").inc(dropped)

    def invalidate_tenants(self, tenants: Iterable[str]) -> None:
        self.generation += 1
        wanted = set(tenants)
        doomed = [k for k in self._entries if k[1] in wanted]
        for key in doomed:
            self._drop(key)
        if doomed:
            metrics.MAPPING_CACHE_EVICTIONS.labels("invalidated").inc(len(doomed))

    def clear(self) -> None:
        self.generation += 1
        n = len(self._entries)
        self._entries.clear()
        self._bytes = 0
        if n:
            metrics.MAPPING_CACHE_EVICTIONS.labels("invalidated").inc(n)
