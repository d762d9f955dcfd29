"""The shapes of names the gateway accepts, written once: routes.yaml, the admin API's
input checks and its OpenAPI ``pattern`` all take them from here. The database's CHECK
constraints (gateway/sql) mirror them.
"""

from __future__ import annotations

import re
from typing import TypeGuard

# Entity types (reservation, room_type) and external systems (booking_engine): at most 63
# characters, so that they fit PostgreSQL identifiers and the CHECKs on every table.
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# Event types such as reservation.created (dot-separated names).
EVENT_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
MAX_EVENT_TYPE = 200  # characters of an event type (the CHECK on webhook_events says the same)


def is_name(value: object) -> TypeGuard[str]:
    """Whether ``value`` is an entity type or external system name (:data:`NAME_RE`)."""
    return isinstance(value, str) and NAME_RE.match(value) is not None


def is_event_type(value: object) -> TypeGuard[str]:
    """Whether ``value`` is an event type (:data:`EVENT_TYPE_RE`, at most 200 characters)."""
    return (
        isinstance(value, str)
        and len(value) <= MAX_EVENT_TYPE
        and EVENT_TYPE_RE.match(value) is not None
    )
