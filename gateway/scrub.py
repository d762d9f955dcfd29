"""Erasure of one data subject's values from stored text and JSON (pure; no I/O).

A :class:`Needles` holds what to erase: **ids** (a guest's internal UUID, the partners'
external ids for it) are matched as whole tokens — a JSON string or number equal to the
id, or the id in free text between characters that cannot be part of an id — and
**values** (an e-mail address) as case-insensitive substrings. Every match becomes
:data:`ERASED`. The stores of each feature (api_logs, webhook events and attempts) find
candidate rows with :meth:`Needles.like_patterns` and rewrite them with these functions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus

import orjson

ERASED = "[ERASED]"
MIN_VALUE_LENGTH = 5  # shorter literal values would erase unrelated text (422 below this)
MAX_NEEDLES = 1000  # identifiers one erasure may search for (a subject with many mappings)
# Characters that may be part of an id: an id matches only where none of them touches it,
# so erasing "5521" leaves "BE-5521-77" and "155210" alone.
_ID_CHAR = r"[\w.@+-]"


@dataclass(frozen=True, slots=True)
class Erased:
    """What one store changed: rows of a table, in how many short transactions."""

    table: str
    rows: int
    batches: int


@dataclass(frozen=True, slots=True)
class Needles:
    ids: tuple[str, ...] = ()  # whole tokens, case-sensitive
    values: tuple[str, ...] = ()  # substrings, case-insensitive

    @classmethod
    def of(cls, ids: Iterable[str] = (), values: Iterable[str] = ()) -> Needles:
        return cls(tuple(sorted({i for i in ids if i})), tuple(sorted({v for v in values if v})))

    def __bool__(self) -> bool:
        return bool(self.ids or self.values)

    @property
    def count(self) -> int:
        return len(self.ids) + len(self.values)

    def like_patterns(self) -> list[str]:
        """ILIKE patterns that every row holding a needle matches, in its JSON text, its
        percent-encoded query or path, or plain text (a superset: rows are checked again)."""
        out: set[str] = set()
        for needle in (*self.ids, *self.values):
            forms = {
                needle,
                orjson.dumps(needle).decode()[1:-1],
                quote(needle, safe=""),
                quote_plus(needle, safe=""),
            }
            out.update(f"%{_escape_like(f)}%" for f in forms)
        return sorted(out)

    def pattern(self) -> re.Pattern[str]:
        parts = [rf"(?<!{_ID_CHAR}){re.escape(i)}(?!{_ID_CHAR})" for i in self.ids]
        parts += [rf"(?i:{re.escape(v)})" for v in self.values]
        return re.compile("|".join(parts)) if parts else re.compile(r"(?!x)x")


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class Scrubber:
    """Erases one set of needles; counts what it replaced."""

    def __init__(self, needles: Needles) -> None:
        self.needles = needles
        self._re = needles.pattern()
        self._ids = set(needles.ids)

    def text(self, value: str) -> tuple[str, int]:
        return self._re.subn(ERASED, value)

    def json(self, value: Any) -> tuple[Any, int]:
        """A JSON value with every match erased: in strings (keys too) and in numbers equal
        to an id (which become the string ERASED)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bool) or value is None:
            return value, 0
        if isinstance(value, int | float):
            return (ERASED, 1) if _number_text(value) in self._ids else (value, 0)
        if isinstance(value, list):
            items = [self.json(v) for v in value]
            return [v for v, _ in items], sum(n for _, n in items)
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            total = 0
            for k, v in value.items():
                key, n1 = self.text(k)
                new, n2 = self.json(v)
                out[key] = new
                total += n1 + n2
            return out, total
        return value, 0

    def query(self, query: str) -> tuple[str, int]:
        """A query string with matches erased in its decoded names and values."""
        if not query:
            return query, 0
        total = 0
        parts = []
        for pair in query.split("&"):
            name, eq, value = pair.partition("=")
            new_name, n1 = self.text(unquote_plus(name))
            new_value, n2 = self.text(unquote_plus(value))
            if n1 or n2:
                total += n1 + n2
                pair = quote_plus(new_name, safe="[]") + eq + quote_plus(new_value, safe="[]")
            parts.append(pair)
        return "&".join(parts), total

    def path(self, path: str) -> tuple[str, int]:
        """A URL path with matches erased in its decoded segments."""
        total = 0
        segments = []
        for segment in path.split("/"):
            new, n = self.text(unquote_plus(segment))
            if n:
                total += n
                segment = quote(new, safe="[]")
            segments.append(segment)
        return "/".join(segments), total


def _number_text(value: float) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
