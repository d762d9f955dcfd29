"""Keyset pagination of the admin lists: ``?limit=`` and ``?cursor=`` in,
``{"items": [...], "next_cursor": ...}`` out.

A page asks the database for one row more than it shows: that row's presence says another
page follows, and the key of the last row shown is the next page's cursor. Cursors are
opaque to callers (base64url of a JSON list of strings); one that does not decode answers
400 ``bad_cursor``.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

import orjson
from aiohttp import web

from gateway.errors import ClientError
from gateway.web.http import query_int

DEFAULT_LIMIT = 50  # rows a page shows when the caller gives no limit
MAX_LIMIT = 500

K = TypeVar("K")  # a decoded cursor: the key the page starts after
T = TypeVar("T")  # one fetched row


class Keyset(Generic[K]):
    """One page request: the limit (read at once) and the cursor (decoded by :meth:`after`,
    which each list calls after its own filters, so their errors are reported first)."""

    def __init__(
        self,
        request: web.Request,
        decode: Callable[[str], K],
        default: int = DEFAULT_LIMIT,
        maximum: int = MAX_LIMIT,
    ) -> None:
        limit = query_int(request, "limit", default, 1, maximum)
        assert limit is not None  # a default is given
        self.limit = limit
        self._cursor = request.query.get("cursor") or None  # empty: the first page
        self._decode = decode

    @classmethod
    def of(cls, limit: int, cursor: str | None, decode: Callable[[str], K]) -> Keyset[K]:
        """A page request from a query already read (gateway.web.contract.PageQuery)."""
        page = cls.__new__(cls)
        page.limit, page._cursor, page._decode = limit, cursor or None, decode
        return page

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


def newest_first(request: web.Request) -> TimeKeyset:
    """A page of a list ordered by ``(created_at, id)`` descending."""
    return Keyset(request, decode_time_cursor)


def encode_cursor(*parts: Any) -> str:
    """Times are written in ISO 8601, everything else with ``str``."""
    texts = [p.isoformat() if isinstance(p, datetime) else str(p) for p in parts]
    return base64.urlsafe_b64encode(orjson.dumps(texts)).decode().rstrip("=")


def decode_cursor(raw: str, n: int) -> list[str]:
    """The ``n`` strings a cursor holds, or 400 bad_cursor."""
    try:
        padded = raw + "=" * (-len(raw) % 4)
        parts = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, orjson.JSONDecodeError):
        raise bad_cursor() from None
    if not isinstance(parts, list) or len(parts) != n or not all(isinstance(p, str) for p in parts):
        raise bad_cursor()
    return parts


def decode_time_cursor(raw: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, id) cursor of the newest-first lists, or 400 bad_cursor."""
    at, row_id = decode_cursor(raw, 2)
    try:
        return datetime.fromisoformat(at), uuid.UUID(row_id)
    except ValueError:
        raise bad_cursor() from None


def bad_cursor() -> ClientError:
    return ClientError("cursor is not valid", code="bad_cursor")
