"""ID translation on the JSON text: the ids a trie names are found by the C scanner
(``gateway/_idscan.c``), looked up in the mapping cache, and written back in place; every
other byte of the body stays as the partner (or the upstream) sent it.

The parsed-value walk (:mod:`gateway.mapping.translate`) stays the reference and the
fallback: a trie has no :func:`program` when the scanner is not built (no C compiler at
install), and the scanner answers None for a body it cannot decide the same way for
certain: not JSON, a value a strict route must refuse (the walk names the problem), an
escaped id or key, a key named twice, ``*`` over an object. The walk then decides, with
the same result (tests/unit/test_textids.py holds the two paths equal on generated bodies).
"""

from __future__ import annotations

from typing import NamedTuple

from gateway.pointers import WILDCARD, Leaf, Trie, is_index

try:
    from gateway import _idscan
    from gateway._idscan import Index as Index
except ImportError:  # pragma: no cover - built without a C compiler
    AVAILABLE = False
else:
    AVAILABLE = True
UNSUPPORTED = False  # Trie.compiled of a trie the scanner cannot walk


class Program(NamedTuple):
    """A trie compiled for the scanner, its leaves in the scanner's numbering and their
    entity types: ``scanner.scan(body, indexes, done)`` takes an :class:`Index` per leaf, in
    this order (gateway.mapping.flow.Flow._text), and answers a :class:`Found` or None."""

    scanner: _idscan.Program
    leaves: tuple[Leaf, ...]
    entity_types: tuple[str, ...]


class Found(NamedTuple):
    """The ids of one body, looked up in an :class:`Index` per leaf (``Program.scanner``):
    ``spans`` their places in document order, packed for :func:`splice`; ``hits[i]`` how
    many ids at ``leaves[i]`` had a replacement. When every id had one, ``out`` is the new
    body (the body itself when it held no id) and ``values``/``news`` are None; otherwise
    ``values[i]`` are the ids at ``leaves[i]`` in document order, ``news[i][k]`` the
    replacement of ``values[i][k]`` or None, and ``out`` None."""

    leaves: tuple[Leaf, ...]
    values: list[list[str]] | None
    spans: bytes
    news: list[list[str | None]] | None
    hits: list[int]
    out: bytes | None


def new_index() -> Index | None:
    """An empty :class:`Index` (for the mapping cache to keep beside a view), or None when
    the scanner is not built."""
    return _idscan.Index() if AVAILABLE else None


def program(trie: Trie) -> Program | None:
    """The trie compiled for the scanner (once, kept on the trie), or None when the
    scanner is not built, the trie is empty, or a node mixes ``*`` with named segments."""
    compiled = trie.compiled
    if compiled is None:
        compiled = trie.compiled = _compile(trie) if AVAILABLE and trie else UNSUPPORTED
    return compiled or None


def _compile(root: Trie) -> Program | bool:
    nodes: list[Trie] = [root]
    leaves: list[Leaf] = []
    rows: list[tuple[bool, int | None, list[tuple[bytes, int, int]]]] = []
    for node in nodes:  # grows while walked: breadth first, the root is node 0
        star: int | None = None
        entries: list[tuple[bytes, int, int]] = []
        for seg, sub in node.items():
            if type(sub) is Leaf:
                child = ~len(leaves)
                leaves.append(sub)
            else:
                child = len(nodes)
                nodes.append(sub)  # type: ignore[arg-type]
            if seg == WILDCARD:
                star = child
            else:
                entries.append((seg.encode("utf-8", "surrogatepass"), child, _index(seg)))
        if (star is not None and entries) or len(entries) > 64:
            return UNSUPPORTED  # a value walked by two children: the parsed walk does it
        rows.append((node.strict, star, entries))
    kept = tuple(leaves)
    return Program(
        _idscan.Program(rows, kept, Found, tuple(leaf.record for leaf in kept)),
        kept,
        tuple(leaf.entity_type for leaf in kept),
    )


def _index(seg: str) -> int:
    return int(seg) if is_index(seg) and len(seg) < 19 else -1


def splice(body: bytes, found: Found, news: list[list[str | None]]) -> bytes:
    """``body`` with the i-th id at each leaf replaced by ``news[leaf][i]`` (None keeps it)."""
    return _idscan.splice(body, found.spans, news)


def in_order(found: Found) -> list[tuple[int, int]]:
    """``(leaf number, position among that leaf's ids)`` of every id, in document order
    (for naming the first unknown id the way the parsed walk would)."""
    spans = memoryview(found.spans).cast("I")
    seen = [0] * len(found.leaves)
    out = []
    for k in range(2, len(spans), 3):
        leaf = spans[k]
        out.append((leaf, seen[leaf]))
        seen[leaf] += 1
    return out
