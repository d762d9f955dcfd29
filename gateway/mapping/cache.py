"""The in-process mapping cache: bounded (entries and approximate bytes), with a TTL for
found ids and a shorter one for ids with no mapping (negative entries).

Entries live in scopes ``(way, tenant, system)`` — way ``in`` is external id → internal
UUID, ``out`` the reverse — each holding one :class:`Table` per entity type: ``entries``,
``id → (other id | None, expiry, size)``, and ``fresh``, ``id → other id`` for the found
ids only. The proxy rewrites the ids of a body while walking it with one lookup per id in
``fresh`` (:meth:`MappingCache.fresh`), with no expiry check per id: found entries all
live for the same TTL and are inserted in time order, so ``fresh`` is in expiry order, and
it is pruned from its front whenever its oldest entry expires.
When a bound is passed, the oldest inserted entries go first (FIFO; with a TTL, recency
tracking is not worth its cost on the hot path).

Entries are dropped when a change is announced on the ``integration_mappings`` channel
(gateway.mapping.listener) or made through this process. A lookup that raced with a change
must not store what it read before the change: every invalidation bumps ``generation``, and
``put_many`` ignores results read under an older one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway import metrics
from gateway.mapping import textids

if TYPE_CHECKING:
    from gateway.mapping.textids import Index

IN = "in"  # external id → internal id (requests)
OUT = "out"  # internal id → external id (responses)
# Bytes an entry costs beyond its characters: two str headers, the tuple, the float, its
# slots in `entries`, `fresh` and the scanner's index; measured with tracemalloc over
# 100,000 entries (bench/cache_memory.py): 299 without the index, 383 with it (its table
# is 25-50 % full: 64-128 bytes an entry).
ENTRY_OVERHEAD = 400

Scope = tuple[str, str, str]  # way, tenant, system
Pair = tuple[str, str]  # entity_type, id
Entry = tuple[str | None, float, int]  # the other id (None: no mapping), expiry, size
NOTHING: Mapping[str, str] = {}
_EMPTY_INDEX = textids.new_index()  # never written to


@dataclass(frozen=True, slots=True)
class CacheLimits:
    max_entries: int = 200_000
    max_bytes: int = 64 * 1024 * 1024
    ttl: float = 300.0  # seconds a found mapping is trusted without a notification
    negative_ttl: float = 2.0  # seconds "no mapping" is trusted (a new one may appear soon)


def _size(entity_type: str, key: str, value: str | None) -> int:
    return ENTRY_OVERHEAD + len(entity_type) + len(key) + (len(value) if value else 0)


class Table:
    """The ids of one entity type in one scope (see the module docstring)."""

    __slots__ = ("entries", "fresh", "index", "until")

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        # The found entries, in insertion (= expiry) order; all fresh while now < until.
        self.fresh: dict[str, str] = {}
        # The same entries for the JSON text scanner (looked up on an id's bytes), or None
        # when it is not built; changed only through add_fresh and drop_fresh.
        self.index = textids.new_index()
        self.until = math.inf  # the expiry of the oldest entry in fresh, or earlier

    def add_fresh(self, key: str, value: str) -> None:
        self.fresh[key] = value
        if self.index is not None:
            self.index.set(key, value)

    def drop_fresh(self, key: str) -> None:
        if self.fresh.pop(key, None) is not None and self.index is not None:
            self.index.discard(key)

    def prune(self, now: float) -> None:
        """Drop the expired entries from the front of ``fresh`` (they stay in ``entries``,
        where every read checks the expiry, until replaced or evicted)."""
        fresh, entries, gone = self.fresh, self.entries, []
        self.until = math.inf
        for key in fresh:
            expiry = entries[key][1]
            if expiry > now:
                self.until = expiry
                break
            gone.append(key)
        for key in gone:
            self.drop_fresh(key)


class MappingCache:
    def __init__(self, limits: CacheLimits = CacheLimits()) -> None:
        self.limits = limits
        self._scopes: dict[Scope, dict[str, Table]] = {}
        self._count = 0
        self._bytes = 0
        self.generation = 0
        metrics.MAPPING_CACHE_ENTRIES.set_function(lambda: self._count)

    def __len__(self) -> int:
        return self._count

    @property
    def bytes(self) -> int:
        return self._bytes

    def fresh(self, scope: Scope, now: float, entity_type: str) -> Mapping[str, str]:
        """``id → other id`` for every found mapping of the type still fresh at ``now``:
        the live dict, for reading only and only until the cache is next changed."""
        table = self._held(scope, entity_type)
        if table is None:
            return NOTHING
        if now >= table.until:
            table.prune(now)
        return table.fresh

    def fresh_indexes(self, scope: Scope, now: float, entity_types: tuple[str, ...]) -> list[Index]:
        """:meth:`fresh` of each entity type as an :class:`~gateway.mapping.textids.Index`,
        for the JSON text scanner (only called where it is built)."""
        tables = self._scopes.get(scope)
        out = []
        for entity_type in entity_types:
            table = tables.get(entity_type) if tables is not None else None
            if table is None or table.index is None:
                assert _EMPTY_INDEX is not None  # built, as the caller's scanner is
                out.append(_EMPTY_INDEX)
                continue
            if now >= table.until:
                table.prune(now)
            out.append(table.index)
        return out

    def _held(self, scope: Scope, entity_type: str) -> Table | None:
        tables = self._scopes.get(scope)
        return tables.get(entity_type) if tables is not None else None

    def _table(self, scope: Scope, entity_type: str) -> Table:
        tables = self._scopes.get(scope)
        if tables is None:
            tables = self._scopes[scope] = {}
        found = tables.get(entity_type)
        if found is None:
            found = tables[entity_type] = Table()
        return found

    def get_many(
        self, scope: Scope, pairs: Iterable[Pair]
    ) -> tuple[dict[Pair, str | None], list[Pair]]:
        """Answers for the pairs held and fresh, and the pairs that must be looked up."""
        now = time.monotonic()
        tables = self._scopes.get(scope, {})
        found: dict[Pair, str | None] = {}
        missing: list[Pair] = []
        for pair in pairs:
            table = tables.get(pair[0])
            hit = table.entries.get(pair[1]) if table is not None else None
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
        expired = 0
        for (entity_type, key), value in values.items():
            ttl = self.limits.ttl if value is not None else self.limits.negative_ttl
            table = self._table(scope, entity_type)
            old = table.entries.get(key)
            if old is not None:  # looked up again because it had expired, or raced
                expired += old[1] <= now
                self._drop(table, key)
            size = _size(entity_type, key, value)
            table.entries[key] = (value, now + ttl, size)
            if value is not None and key:  # inserted last: expires last (one TTL)
                # (an empty id is never looked up: the walk skips it, and so must the view)
                table.add_fresh(key, value)
                table.until = min(table.until, now + ttl)
            self._count += 1
            self._bytes += size
        if expired:
            metrics.MAPPING_CACHE_EVICTIONS.labels("expired").inc(expired)
        self._shrink()

    def _shrink(self) -> None:
        limits, evicted = self.limits, 0
        for tables in list(self._scopes.values()):
            for table in tables.values():
                while table.entries and (
                    self._count > limits.max_entries or self._bytes > limits.max_bytes
                ):
                    self._drop(table, next(iter(table.entries)))
                    evicted += 1
        if evicted:
            metrics.MAPPING_CACHE_EVICTIONS.labels("size").inc(evicted)

    def _drop(self, table: Table, key: str) -> int:
        old = table.entries.pop(key, None)
        if old is None:
            return 0
        if old[0] is not None:
            table.drop_fresh(key)  # absent when pruned
        self._count -= 1
        self._bytes -= old[2]
        return 1

    def invalidate_rows(self, rows: Iterable[tuple[str, str, str, str, str]]) -> None:
        """Drop both directions of each ``(tenant, system, entity_type, internal, external)``."""
        self.generation += 1
        dropped = 0
        for tenant, system, entity_type, internal, external in rows:
            for scope, key in (((IN, tenant, system), external), ((OUT, tenant, system), internal)):
                table = self._held(scope, entity_type)  # nothing cached: nothing to drop
                if table is not None:
                    dropped += self._drop(table, key)
        if dropped:
            metrics.MAPPING_CACHE_EVICTIONS.labels("invalidated").inc(dropped)

    def invalidate_tenants(self, tenants: Iterable[str]) -> None:
        self.generation += 1
        wanted = set(tenants)
        dropped = 0
        for scope in [s for s in self._scopes if s[1] in wanted]:
            for table in self._scopes.pop(scope).values():
                dropped += len(table.entries)
                self._count -= len(table.entries)
                self._bytes -= sum(e[2] for e in table.entries.values())
        if dropped:
            metrics.MAPPING_CACHE_EVICTIONS.labels("invalidated").inc(dropped)

    def clear(self) -> None:
        self.generation += 1
        n = self._count
        self._scopes.clear()
        self._count = self._bytes = 0
        if n:
            metrics.MAPPING_CACHE_EVICTIONS.labels("invalidated").inc(n)
