"""The fast path of body capture: one scan that tells whether a JSON body can be stored
exactly as received, without parsing it into Python objects.

Most bodies a gateway sees are plain: ASCII JSON, no ``\\u`` escapes, no field to redact,
nested a few levels. For those, :class:`PlainJson` answers with one Hyperscan pass (every
redacted name as a quoted key, the ``\\u`` escape, 255 opening brackets: all at once, in
C, a few instructions a byte) and one validation by msgspec (a syntax check that builds no
objects). Anything else takes the exact path of :mod:`gateway.capture.record` (orjson parse,
prefilter, redaction), so the fast path only ever answers "nothing to do here" for a body
the exact path would also have stored unchanged. tests/unit/test_scan.py checks the two
agree on generated bodies.

Why Hyperscan (``hyperscan`` on PyPI, wheels for Linux x86-64/arm64, macOS, Windows): the
alternatives measured per 947-byte answer under callgrind were the stdlib ``re`` trie search
on a case-folded copy (~56k instructions with the fold), RE2 (~32k), Aho-Corasick (~58k),
against ~8k for Hyperscan with every check at once (bench/RESULTS.md, issue 18).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import hyperscan
import msgspec

# A body with this many opening brackets may be nested deeper than orjson serialises (254
# levels): the exact path checks it (record.JSON_BRACKETS_UNCHECKED + 1).
DEEP_BRACKETS = 255
# Larger bodies take the exact path. Below this size no number can hold more digits than
# jsonb's numeric keeps (16383 after the point, with the exponents of at most three digits
# the scan lets through), so what msgspec accepts PostgreSQL accepts too.
MAX_BYTES = 15_000

_RAW = msgspec.json.Decoder(msgspec.Raw)
_NOT_IN_TOKEN = frozenset('"&=\\/')  # separators, and characters JSON may write escaped


def _name_pattern(key: str) -> bytes:
    """A field_key as Hyperscan sees it in a case-folded JSON body: ``_`` stands for ``-``
    or ``_``; letters and digits as they are (the database is caseless); anything else as a
    hex escape."""
    out = []
    for c in key:
        if c == "_":
            out.append("[-_]")
        elif c.isascii() and c.isalnum():
            out.append(c)
        else:
            out.append(f"\\x{ord(c):02x}")
    return "".join(out).encode()


def plain_key(key: str) -> bool:
    """Whether a field_key can be looked for as a quoted piece (the scan's form): printable
    ASCII, no separator, no character JSON may write escaped; record.Redactor's prefilter
    compares the same names whole and looks for the others as substrings."""
    return key.isascii() and key.isprintable() and _NOT_IN_TOKEN.isdisjoint(key)


def _stop(*_: object) -> bool:
    return True  # the first match decides: the exact path takes the body


def _database(patterns: list[bytes]) -> hyperscan.Database:
    """A block-mode database of ``patterns`` (caseless, each reported once), with its own
    scratch: the gateway scans on its event loop's thread only."""
    flags = hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_SINGLEMATCH
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(
        expressions=patterns,
        ids=list(range(len(patterns))),
        elements=len(patterns),
        flags=[flags] * len(patterns),
    )
    db.scratch = hyperscan.Scratch(db)
    return db


# 255 opening brackets, in a database of its own: with the names in one database its
# bounded repeat made the whole scan ~10k instructions a KB dearer; alone it costs ~3k, and
# a body shorter than 510 bytes cannot nest 255 levels, so short bodies skip it.
_DEEP = _database([rb"(?:[^\[{]*[\[{]){%d}" % DEEP_BRACKETS]).scan
_DEEP_MIN_BYTES = 2 * DEEP_BRACKETS


class PlainJson:
    """Whether a body is plain JSON for a set of redacted names (field_keys), in one scan."""

    def __init__(self, keys: Iterable[str]) -> None:
        # A key equal to a name, between quotes (in JSON a key always is; the text and
        # form prefilters of record.Redactor look for more).
        patterns = [b'"' + _name_pattern(k) + b'"' for k in sorted(set(keys))]
        patterns.append(rb"\\u")  # an escape may spell a key, a NUL or a lone surrogate
        # A number with an exponent of four digits or more: PostgreSQL 15 refuses such
        # exponents above 1000 (PostgreSQL 18 at 131072). Followed by what may follow a
        # number, so hex ids in strings ("9e1234-") do not count.
        patterns.append(rb"[0-9]e[-+]?[0-9]{4}[0-9]*(?:[ \t\r\n,\]}]|$)")
        self._scan = _database(patterns).scan

    def __call__(self, data: bytes) -> bool:
        """True when ``data`` is ASCII JSON of at most MAX_BYTES with no ``\\u`` escape,
        fewer than 255 opening brackets, no number with a four-digit exponent, and no key
        named like a redacted field: storable as jsonb as received. (A number beyond a
        double's range, 1e400, is numeric to jsonb and infinity to orjson: such a body's
        lazily parsed ``Body.value`` is None.)
        False says only "take the exact path"."""
        return self.scanned(data) and valid(data)

    def scanned(self, data: bytes) -> bool:
        """:meth:`__call__` without the syntax check (:func:`valid`): for a body that will
        be parsed anyway, whose parse checks its syntax (record.describe_body's ``parse``)."""
        if len(data) > MAX_BYTES or not data.isascii():
            return False
        try:
            self._scan(data, _stop)
            if len(data) >= _DEEP_MIN_BYTES:
                _DEEP(data, _stop)
        except hyperscan.ScanTerminated:
            return False
        return True

    def clean(self, data: bytes) -> bool:
        """The scan alone, for JSON the gateway wrote itself (valid, and nested no deeper
        than orjson writes)."""
        if not data.isascii():
            return False
        try:
            self._scan(data, _stop)
        except hyperscan.ScanTerminated:
            return False
        return True


def valid(data: bytes) -> bool:
    """Whether ``data`` is JSON (msgspec's syntax check, which builds no objects)."""
    try:
        _RAW.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return False
    return True


@functools.lru_cache(maxsize=256)
def plain_json(keys: frozenset[str]) -> PlainJson | None:
    """The shared scanner for a set of field_keys (routes with the same names share one),
    or None when a name cannot be scanned for as a quoted piece (the exact path then takes
    every body)."""
    if not all(plain_key(k) for k in keys):
        return None
    return PlainJson(keys)
