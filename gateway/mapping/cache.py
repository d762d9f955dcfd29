"""The in-process mapping cache: bounded (entries and approximate bytes), with a TTL for
found ids and a shorter one for ids with no mapping (negative entries).

Entries live in scopes ``(way, tenant, system)`` — way ``in`` is external id → internal
UUID, ``out`` the reverse — each holding one dict per entity type ``id → (other id | None,
expiry, size)``, so the proxy resolves the ids of a body while walking it, with one dict
lookup per id and no allocation.
When a bound is passed, the oldest inserted entries go first (FIFO; with a TTL, recency
tracking is not worth its cost on the hot path).

Entries are dropped when a change is announced on the ``integration_mappings`` channel
(gateway.mapping.listener) or made through this process. A lookup that raced with a change
must not store what it read before the change: every invalidation bumps ``generation``, and
``put_many`` ignores results read under an older one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from gateway import metrics

IN = "in"  # external id → internal id (requests)
OUT = "out"  # internal id → external id (responses)
ENTRY_OVERHEAD = 240  # bytes an entry costs beyond its strings (tuples, floats, dict slots)

Scope = tuple[str, str, str]  # way, tenant, system
Pair = tuple[str, str]  # entity_type, id
Entry = tuple[str | None, float, int]  # the other id (None: no mapping), expiry, size
Tables = dict[str, dict[str, Entry]]  # entity_type → id → entry, for one scope


@dataclass(frozen=True, slots=True)
class CacheLimits:
    max_entries: int = 200_000
    max_bytes: int = 64 * 1024 * 1024
    ttl: float = 300.0  # seconds a found mapping is trusted without a notification
    negative_ttl: float = 2.0  # seconds "no mapping" is trusted (a new one may appear soon)


def _size(entity_type: str, key: str, value: str | None) -> int:
    return ENTRY_OVERHEAD + len(entity_type) + len(key) + (len(value) if value else 0)


class MappingCache:
    def __init__(self, limits: CacheLimits = CacheLimits()) -> None:
        self.limits = limits
        self._scopes: dict[Scope, Tables] = {}
        self._count = 0
        self._bytes = 0
        self.generation = 0
        metrics.MAPPING_CACHE_ENTRIES.set_function(lambda: self._count)

    def __len__(self) -> int:
        return self._count

    @property
    def bytes(self) -> int:
        return self._bytes

    def tables(self, scope: Scope) -> Tables:
        """The live tables of one scope, for reading only (check each entry's expiry)."""
        found = self._scopes.get(scope)
        if found is None:
            found = self._scopes[scope] = {}
        return found

    def _table(self, scope: Scope, entity_type: str) -> dict[str, Entry]:
        tables = self.tables(scope)
        found = tables.get(entity_type)
        if found is None:
            found = tables[entity_type] = {}
        return found

    def get_many(
        self, scope: Scope, pairs: Iterable[Pair]
    ) -> tuple[dict[Pair, str | None], list[Pair]]:
        """Answers for the pairs held and fresh, and the pairs that must be looked up."""
        now = time.monotonic()
        tables = self.tables(scope)
        found: dict[Pair, str | None] = {}
        missing: list[Pair] = []
        for pair in pairs:
            hit = tables.get(pair[0], {}).get(pair[1])
            if hit is not None and hit[1] > now:
                found[pair] = hit[0]
            else:
                missing.append(pair)
        return found, missing

    def put_many(self, scope: Scope, values: dict[Pair, str | None], generation: int) -> None:
        """Store lookup results, unless a change was announced since they were read."""
        if generation != self.generation:
            return
        now = time.monotonic()
        for (entity_type, key), value in values.items():
            ttl = self.limits.ttl if value is not None else self.limits.negative_ttl
            table = self._table(scope, entity_type)
            self._drop(table, key)
            size = _size(entity_type, key, value)
            table[key] = (value, now + ttl, size)
            self._count += 1
            self._bytes += size
        self._shrink()

    def _shrink(self) -> None:
        limits, evicted = self.limits, 0
        for tables in list(self._scopes.values()):
            for table in tables.values():
                while table and (
                    self._count > limits.max_entries or self._bytes > limits.max_bytes
                ):
                    self._drop(table, next(iter(table)))
                    evicted += 1
        if evicted:
            metrics.MAPPING_CACHE_EVICTIONS.labels("size").inc(evicted)

    def _drop(self, table: dict[str, Entry], key: str) -> int:
        old = table.pop(key, None)
        if old is None:
            return 0
        self._count -= 1
        self._bytes -= old[2]
        return 1

    def invalidate_rows(self, rows: Iterable[tuple[str, str, str, str, str]]) -> None:
        """Drop both directions of each ``(tenant, system, entity_type, internal, external)``."""
        self.generation += 1
        dropped = 0
        for tenant, system, entity_type, internal, external in rows:
            dropped += self._drop(self._table((IN, tenant, system), entity_type), external)
            dropped += self._drop(self._table((OUT, tenant, system), entity_type), internal)
        if dropped:
            metrics.MAPPING_CACHE_EVICTIONS.labels("invalidated").inc(dropped)

    def invalidate_tenants(self, tenants: Iterable[str]) -> None:
        self.generation += 1
        wanted = set(tenants)
        dropped = 0
        for scope in [s for s in self._scopes if s[1] in wanted]:
            for table in self._scopes.pop(scope).values():
                dropped += len(table)
                self._count -= len(table)
                self._bytes -= sum(e[2] for e in table.values())
        if dropped:
            metrics.MAPPING_CACHE_EVICTIONS.labels("invalidated").inc(dropped)

    def clear(self) -> None:
        self.generation += 1
        n = self._count
        self._scopes.clear()
        self._count = self._bytes = 0
        if n:
            metrics.MAPPING_CACHE_EVICTIONS.labels("invalidated").inc(n)
