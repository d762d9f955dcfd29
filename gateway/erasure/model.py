"""The erasure API's shapes (msgspec Structs: validation and OpenAPI schema from one
declaration) and the steps the app wires in."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import asyncpg
import msgspec

from gateway.scrub import MIN_VALUE_LENGTH, Erased, Needles
from gateway.web.contract import NO_NUL, Answer, Body, Name

MAX_ID_LENGTH = 256  # as integration_mappings.external_id
MAX_VALUE_LENGTH = 1000

EntityId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH, pattern=NO_NUL)]
Value = Annotated[
    str,
    msgspec.Meta(min_length=MIN_VALUE_LENGTH, max_length=MAX_VALUE_LENGTH, pattern=NO_NUL),
]


class ErasureRequest(Body, omit_defaults=True):
    """Either ``entity_type`` + ``id`` (+ ``external_system`` when the id is a partner's),
    or ``value`` (a literal such as an e-mail address)."""

    entity_type: Name | None = None
    id: EntityId | None = None
    external_system: Name | None = None
    value: Value | None = None
    dry_run: bool = False

    # The two ways of naming the subject, for the document (__post_init__ checks them).
    __json_schema_extra__: ClassVar[dict[str, Any]] = {
        "oneOf": [
            {
                "title": "ErasureByEntity",
                "required": ["entity_type", "id"],
                "properties": {
                    "entity_type": {"type": "string"},
                    "id": {"type": "string"},
                    "value": {"type": "null"},
                },
            },
            {
                "title": "ErasureByValue",
                "required": ["value"],
                "properties": {
                    "value": {"type": "string"},
                    "entity_type": {"type": "null"},
                    "id": {"type": "null"},
                    "external_system": {"type": "null"},
                },
            },
        ]
    }

    def __post_init__(self) -> None:
        by_entity = self.entity_type is not None or self.id is not None
        if by_entity == (self.value is not None):
            raise ValueError("give either entity_type and id, or value")
        if by_entity and (self.entity_type is None or self.id is None):
            raise ValueError("entity_type and id go together")
        if self.external_system is not None and not by_entity:
            raise ValueError("external_system goes with entity_type and id")


class TableCount(Answer):
    table: str
    rows: int
    batches: int


class ErasureResult(Answer):
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
