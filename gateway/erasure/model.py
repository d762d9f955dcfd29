"""The erasure API's shapes (msgspec Structs: validation and OpenAPI schema from one
declaration) and the steps the app wires in."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

import asyncpg
import msgspec

from gateway.names import NAME_RE
from gateway.scrub import MIN_VALUE_LENGTH, Erased, Needles

MAX_ID_LENGTH = 256  # as integration_mappings.external_id
MAX_VALUE_LENGTH = 1000

Name = Annotated[str, msgspec.Meta(pattern=NAME_RE.pattern)]
EntityId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
Value = Annotated[str, msgspec.Meta(min_length=MIN_VALUE_LENGTH, max_length=MAX_VALUE_LENGTH)]


class ErasureRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Either ``entity_type`` + ``id`` (+ ``external_system`` when the id is a partner's),
    or ``value`` (a literal such as an e-mail address)."""

    entity_type: Name | None = None
    id: EntityId | None = None
    external_system: Name | None = None
    value: Value | None = None
    dry_run: bool = False


class TableCount(msgspec.Struct):
    table: str
    rows: int
    batches: int


class ErasureResult(msgspec.Struct):
    """What an erasure changed (``dry_run``: would change). No erased value is in it."""

    erasure_id: uuid.UUID
    dry_run: bool
    identifiers: int  # distinct values searched for (the subject's ids, or 1 value)
    rows: int  # rows changed in all tables
    tables: list[TableCount]


ResolveIds = Callable[
    [asyncpg.Connection, uuid.UUID, str, str, str | None], Awaitable[tuple[str, ...]]
]
EraseStep = Callable[[uuid.UUID, Needles, bool], Awaitable[list[Erased]]]


@dataclass(frozen=True, slots=True)
class Steps:
    """Wired by the app: the subject's ids (mapping), then each store's erase function."""

    resolve: ResolveIds
    erase: tuple[EraseStep, ...]
