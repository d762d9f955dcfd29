"""Redaction prefilter micro-benchmark: Redactor.mentions (one search for any quoted field
name, the names factored into a trie pattern) against a split+set prefilter (split the
case-folded body at quotes, check each piece against a set), on the bodies the proxy
benchmarks send, in one run.

    python bench/prefilter.py [--number 20000]

No I/O; results in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import timeit
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import translation
import upstream

from gateway.capture.record import _FOLD, DEFAULT_REDACT_FIELDS, Redactor


def split_prefilter(tokens: frozenset[bytes]) -> Callable[[bytes], bool]:
    """The split+set prefilter's core only (ASCII bodies without escapes, as all three here):
    without the escape and non-ASCII checks mentions() also makes, so it flatters split+set."""

    def mentions(data: bytes) -> bool:
        return not tokens.isdisjoint(data.translate(_FOLD).split(b'"'))

    return mentions


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--number", type=int, default=20000)
    n = p.parse_args().number
    redactor = Redactor(DEFAULT_REDACT_FIELDS)
    split_set = split_prefilter(frozenset(f.encode() for f in DEFAULT_REDACT_FIELDS))
    items = [{"room_id": str(uuid.uuid4()), "nights": 3, "rate": "189.00"} for _ in range(50)]
    bodies = {
        "reservation (bench/run.py answer)": upstream.RESERVATION,
        "50 items (bench/translation.py)": translation.body(),
        "50 items with UUIDs (its upstream leg)": orjson.dumps({"items": items}),
    }
    print(f"{'body':40s} {'bytes':>6s} {'split+set':>10s} {'trie regex':>11s} {'speed-up':>9s}")
    for name, data in bodies.items():
        assert split_set(data) == redactor.mentions(data)
        split_us = timeit.timeit(lambda: split_set(data), number=n) / n * 1e6  # noqa: B023
        trie_us = timeit.timeit(lambda: redactor.mentions(data), number=n) / n * 1e6  # noqa: B023
        print(
            f"{name:40s} {len(data):6d} {split_us:7.2f} us {trie_us:8.2f} us "
            f"{split_us / trie_us:8.2f}x"
        )


if __name__ == "__main__":
    main()
