"""Bytes the mapping cache spends per entry beyond the characters of its ids, measured with
tracemalloc over 100,000 room entries (a 12-character external id and a UUID), with the
scanner's C index kept beside the dict view and without it. gateway/mapping/cache.py's
ENTRY_OVERHEAD (what the byte bound counts per entry) rests on this.

    python bench/cache_memory.py
"""

from __future__ import annotations

import gc
import tracemalloc
import uuid

from gateway.mapping import cache as cache_module
from gateway.mapping import textids
from gateway.mapping.cache import IN, CacheLimits, MappingCache

N = 100_000
CHARS = len("ROOM-0000000") + 36 + len("room")


def per_entry(with_index: bool) -> float:
    built = textids.new_index
    if not with_index:
        textids.new_index = lambda: None
    try:
        cache = MappingCache(CacheLimits(max_entries=10 * N, max_bytes=10**12))
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for j in range(0, N, 10_000):
            batch: dict[tuple[str, str], str | None] = {
                ("room", f"ROOM-{i:07d}"): str(uuid.uuid4()) for i in range(j, j + 10_000)
            }
            cache.put_many((IN, "t", "s"), batch, cache.generation)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        return used / N - CHARS
    finally:
        textids.new_index = built


def main() -> None:
    print(f"ENTRY_OVERHEAD counted: {cache_module.ENTRY_OVERHEAD} bytes")
    beyond = "bytes an entry beyond its characters"
    print(f"measured without the index: {per_entry(False):.0f} {beyond}")
    if textids.AVAILABLE:
        print(f"measured with the index:    {per_entry(True):.0f} {beyond}")


if __name__ == "__main__":
    main()
