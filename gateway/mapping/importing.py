"""Bulk import input: CSV or JSON lines → checked rows (pure; the merge SQL is in store.py).

Columns / keys: ``entity_type``, ``internal_id``, ``external_system``, ``external_id``
(required), ``direction``, ``sync_status`` (optional; empty means "as it is", or the
default for new rows). A CSV body starts with a header line naming its columns.

Rows are checked here, then duplicates inside the same body are settled (an exact repeat
counts as unchanged; the same external id for two internal ids, or the reverse, makes
the later line a conflict naming the earlier one) before anything reaches the database.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.mapping.store import Direction, SyncStatus
from gateway.names import is_name
from gateway.pointers import MAX_ID_LENGTH

REQUIRED = ("entity_type", "internal_id", "external_system", "external_id")
OPTIONAL = ("direction", "sync_status")
DIRECTIONS = frozenset(d.value for d in Direction)
STATUSES = frozenset(s.value for s in SyncStatus)
MAX_LISTED = 1000  # conflicts and errors listed in a report; the counts are always complete


class ImportFormatError(ValueError):
    """The body as a whole cannot be read (wrong header, not UTF-8)."""


@dataclass(frozen=True, slots=True)
class ImportRow:
    line: int
    entity_type: str
    internal_id: uuid.UUID
    external_system: str
    external_id: str
    direction: str | None
    sync_status: str | None

    def record(self) -> tuple[Any, ...]:
        """The staging table's column order (store.STAGING_COLUMNS)."""
        return (
            self.line,
            self.entity_type,
            self.internal_id,
            self.external_system,
            self.external_id,
            self.direction,
            self.sync_status,
        )

    def public(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "entity_type": self.entity_type,
            "internal_id": str(self.internal_id),
            "external_system": self.external_system,
            "external_id": self.external_id,
        }


@dataclass(slots=True)
class Parsed:
    rows: list[ImportRow]
    errors: list[dict[str, Any]]
    error_count: int = 0

    def error(self, line: int, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_LISTED:
            self.errors.append({"line": line, "message": message})


def parse(data: bytes, content_type: str) -> Parsed:
    """Dispatch on the media type: ``text/csv`` or JSON lines (``application/x-ndjson``)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ImportFormatError("the body is not UTF-8") from None
    if "\x00" in text:
        raise ImportFormatError("the body must not contain NUL characters")
    if content_type == "text/csv":
        return _rows(_csv_records(text))
    return _rows(_jsonl_records(text))


def _csv_records(text: str) -> Iterator[tuple[int, Any]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return
    names = [h.strip() for h in header]
    unknown = sorted(set(names) - set(REQUIRED) - set(OPTIONAL))
    missing = [n for n in REQUIRED if n not in names]
    if unknown or missing or len(set(names)) != len(names):
        raise ImportFormatError(
            f"CSV header must name {', '.join(REQUIRED)} (optional: {', '.join(OPTIONAL)})"
            + (f"; unknown column {unknown[0]!r}" if unknown else "")
        )
    for values in reader:
        if not values or values == [""]:
            continue
        if len(values) != len(names):
            yield reader.line_num, f"expected {len(names)} values, got {len(values)}"
            continue
        yield reader.line_num, dict(zip(names, values, strict=True))


def _jsonl_records(text: str) -> Iterator[tuple[int, Any]]:
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield n, orjson.loads(line)
        except orjson.JSONDecodeError:
            yield n, "not valid JSON"


def _rows(records: Iterable[tuple[int, Any]]) -> Parsed:
    out = Parsed([], [])
    for line, record in records:
        if isinstance(record, str):
            out.error(line, record)
            continue
        row = _row(line, record)
        if isinstance(row, str):
            out.error(line, row)
        else:
            out.rows.append(row)
    return out


def _row(line: int, record: Any) -> ImportRow | str:
    """A checked row, or the reason it is refused."""
    problem = _shape_problem(record)
    if problem is not None:
        return problem
    try:
        internal = uuid.UUID(record["internal_id"])
    except ValueError:
        return "internal_id must be a UUID"
    direction, status = record.get("direction") or None, record.get("sync_status") or None
    if direction is not None and direction not in DIRECTIONS:
        return f"direction must be one of {', '.join(sorted(DIRECTIONS))}"
    if status is not None and status not in STATUSES:
        return f"sync_status must be one of {', '.join(sorted(STATUSES))}"
    return ImportRow(
        line,
        record["entity_type"],
        internal,
        record["external_system"],
        record["external_id"],
        direction,
        status,
    )


def _shape_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return "each line must be a JSON object"
    unknown = sorted(set(record) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        return f"unknown field {unknown[0]!r}"
    for name in REQUIRED:
        if not isinstance(record.get(name), str) or not record[name]:
            return f"field {name!r} is required (a non-empty string)"
    if not is_name(record["entity_type"]):
        return "entity_type: lowercase letters, digits and '_', e.g. reservation"
    if not is_name(record["external_system"]):
        return "external_system: lowercase letters, digits and '_', e.g. booking_engine"
    if len(record["external_id"]) > MAX_ID_LENGTH:
        return f"external_id is longer than {MAX_ID_LENGTH} characters"
    return None


@dataclass(slots=True)
class Settled:
    unique: list[ImportRow]
    repeats: int  # exact repeats of an earlier line: unchanged
    conflicts: list[dict[str, Any]]


def settle_duplicates(rows: list[ImportRow]) -> Settled:
    """Keep the first line for each id; later lines that disagree with it are conflicts."""
    by_external: dict[tuple[str, str, str], ImportRow] = {}
    by_internal: dict[tuple[str, str, uuid.UUID], ImportRow] = {}
    out = Settled([], 0, [])
    for row in rows:
        ek = (row.external_system, row.entity_type, row.external_id)
        ik = (row.external_system, row.entity_type, row.internal_id)
        first = by_external.get(ek) or by_internal.get(ik)
        if first is None:
            by_external[ek], by_internal[ik] = row, row
            out.unique.append(row)
        elif first.internal_id == row.internal_id and first.external_id == row.external_id:
            out.repeats += 1
        else:
            out.conflicts.append(
                {
                    **row.public(),
                    "reason": "conflicts with an earlier line of this import",
                    "conflicting": {"line": first.line, **first.public()},
                }
            )
    return out
