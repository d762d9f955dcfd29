"""Webhook payloads in each subscriber's own ids (internal UUIDs → the external system's).

Events carry no schema, so id fields are found by a documented convention:

* the top-level ``id`` is an id of the event's entity type (``reservation.created`` →
  ``reservation``);
* a field named ``<entity>_id`` holds an id of ``<entity>`` (``guest_id`` → ``guest``);
* ``id`` inside an object held by a field ``<entity>`` (``"guest": {"id": …}``), or by a
  list field ``<entity>s`` (``"rooms": [{"id": …}]``), is an id of ``<entity>``.

Only UUID strings are looked up, all of one payload in one cache call (at most one
database query); values with no outbound mapping for the system stay as they are.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from gateway.db.pool import json_dumps
from gateway.mapping.cache import OUT, Pair
from gateway.mapping.flow import Mappings

MAX_DEPTH = 32  # payload nesting followed at most (deeper values are left alone)

Slot = tuple[Any, Any, str, str]  # container, key, entity type, value


def _is_uuid(value: Any) -> bool:
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def id_slots(payload: Any, event_type: str) -> list[Slot]:
    """Where the payload's id fields are, with their entity types (see module docstring)."""
    slots: list[Slot] = []
    if isinstance(payload, dict) and _is_uuid(payload.get("id")):
        slots.append((payload, "id", event_type.split(".", 1)[0], payload["id"]))
    _walk(payload, None, slots, 0)
    return slots


def _walk(value: Any, owner: str | None, slots: list[Slot], depth: int) -> None:
    if depth > MAX_DEPTH:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                continue
            if key.endswith("_id") and len(key) > 3 and _is_uuid(item):
                slots.append((value, key, key[:-3], item))
            elif key == "id" and owner is not None and _is_uuid(item):
                slots.append((value, key, owner, item))
            else:
                _walk(item, key, slots, depth + 1)
    elif isinstance(value, list):
        singular = owner[:-1] if owner and owner.endswith("s") else owner
        for item in value:
            _walk(item, singular, slots, depth + 1)


def payload_translator(mappings: Mappings) -> Callable[..., Any]:
    """The webhook delivery loop's ``translate`` hook, bound to this process's mappings."""

    async def translate(
        payload: Any, *, tenant_id: uuid.UUID, external_system: str, event_type: str
    ) -> Any:
        if not id_slots(payload, event_type):
            return payload
        # a copy (the event itself stays internal); msgspec keeps integers beyond 64 bits
        payload = msgspec.json.decode(json_dumps(payload))
        slots = id_slots(payload, event_type)
        pairs: set[Pair] = {(et, value) for _, _, et, value in slots}
        found = await mappings.resolve((OUT, str(tenant_id), external_system), pairs)
        for container, key, et, value in slots:
            external = found.get((et, value))
            if external is not None:
                container[key] = external
        return payload

    return translate
