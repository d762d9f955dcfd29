"""ID translation of sync job batches (gateway/sync/jobs/runner.py's ``Translate`` hook):
the ids a job's pointers reach in every item of a batch, resolved with one cache call (at
most one database query) and rewritten in place."""

from __future__ import annotations

import uuid
from typing import Any

from gateway.mapping.cache import Pair
from gateway.mapping.flow import Mappings
from gateway.mapping.translate import walk
from gateway.pointers import Leaf, Trie

Missing = list[tuple[str, str, str]]  # (pointer, entity type, id) with no mapping


def batch_translator(mappings: Mappings) -> Any:
    """The sync job runner's ``translate`` hook, bound to this process's mappings."""

    async def translate(
        way: str, tenant_id: uuid.UUID, system: str, trie: Trie, items: list[Any]
    ) -> list[Missing]:
        slots: list[tuple[int, Any, Any, Leaf, str]] = []
        for n, item in enumerate(items):

            def found_at(c: Any, k: Any, leaf: Leaf, v: str, n: int = n) -> None:
                slots.append((n, c, k, leaf, v))

            walk(item, trie, found_at)
        missing: list[Missing] = [[] for _ in items]
        if not slots:
            return missing
        pairs: set[Pair] = {(leaf.entity_type, v) for _, _, _, leaf, v in slots}
        found = await mappings.resolve((way, str(tenant_id), system), pairs)
        for n, container, key, leaf, value in slots:
            other = found.get((leaf.entity_type, value))
            if other is None:
                missing[n].append((leaf.pointer, leaf.entity_type, value))
            else:
                container[key] = other
        return missing

    return translate
