"""Keyset pagination of the admin lists: ``?limit=`` and ``?cursor=`` in,
``{"items": [...], "next_cursor": ...}`` out.

A page asks the database for one row more than it shows: that row's presence says another
page follows, and the key of the last row shown is the next page's cursor. Cursors are
the key's parts joined by ``.`` (times as microseconds since 1970, ids as written): every
string the documented pattern allows (:data:`TIME_CURSOR`, ...) decodes, so a cursor the
document accepts is never refused; one outside it answers 400 ``bad_cursor``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from gateway.errors import ClientError

DEFAULT_LIMIT = 50  # rows a page shows when the caller gives no limit
MAX_LIMIT = 500
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
UUID_TEXT = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# (created_at, id): microseconds since 1970 (17 digits reach past the year 5000) and an id.
# Empty: the first page.
TIME_CURSOR = rf"^([0-9]{{1,17}}\.{UUID_TEXT})?$"
SERIAL_CURSOR = r"^([0-9]{1,18})?$"  # a bigint id (18 digits stay below 2^63)
_TIME_CURSOR_RE = re.compile(TIME_CURSOR)

K = TypeVar("K")  # a decoded cursor: the key the page starts after
T = TypeVar("T")  # one fetched row


class Keyset(Generic[K]):
    """One page request: the limit and the cursor of a query already read
    (gateway.web.contract.PageQuery); the cursor is decoded by :meth:`after`, which each
    list calls after its own filters, so their errors are reported first."""

    def __init__(self, limit: int, cursor: str | None, decode: Callable[[str], K]) -> None:
        self.limit = limit
        self._cursor = cursor or None  # empty: the first page
        self._decode = decode

    @classmethod
    def of(cls, limit: int, cursor: str | None, decode: Callable[[str], K]) -> Keyset[K]:
        """A page request from a query already read (gateway.web.contract.PageQuery)."""
        return cls(limit, cursor, decode)

    @property
    def fetch(self) -> int:
        """Rows to ask the database for: one more than the page shows."""
        return self.limit + 1

    def after(self) -> K | None:
        """The key the page starts after (None: the first page); 400 bad_cursor."""
        return None if self._cursor is None else self._decode(self._cursor)

    def page(
        self,
        rows: Sequence[T],
        item: Callable[[T], Any],
        key: Callable[[T], Sequence[Any]],
    ) -> dict[str, Any]:
        """The answer for ``rows`` (at most :attr:`fetch` of them, in list order): the
        items shown, and the cursor of the next page when there is one."""
        shown = rows[: self.limit]
        more = len(rows) > self.limit
        return {
            "items": [item(r) for r in shown],
            "next_cursor": encode_cursor(*key(shown[-1])) if more else None,
        }


TimeKeyset = Keyset[tuple[datetime, uuid.UUID]]  # lists by (created_at, id) descending


def encode_cursor(*parts: Any) -> str:
    """The parts joined by ``.``: times as microseconds since 1970, the rest with ``str``."""
    texts = [str((p - EPOCH) // MICROSECOND) if isinstance(p, datetime) else str(p) for p in parts]
    return ".".join(texts)


def decode_cursor(raw: str, pattern: re.Pattern[str]) -> list[str]:
    """The parts of a cursor that matches ``pattern``, or 400 bad_cursor."""
    if not pattern.match(raw):
        raise bad_cursor()
    return raw.split(".")


def decode_time_cursor(raw: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, id) cursor of the newest-first lists, or 400 bad_cursor."""
    at, row_id = decode_cursor(raw, _TIME_CURSOR_RE)
    return EPOCH + int(at) * MICROSECOND, uuid.UUID(row_id)


def bad_cursor() -> ClientError:
    return ClientError("cursor is not valid", code="bad_cursor")
