"""Validation cost of one admin request body: POST /admin/v1/mappings (``--body mapping``)
or POST /admin/v1/webhooks/subscriptions (``--body subscription``).

Three ways of turning the request bytes into checked values, each timed in alternating
rounds (A B B A ...) on the same body:

- ``gateway``: what the gateway does now (``gateway.mapping.api.parse_new_mapping`` when it
  exists: msgspec Structs; otherwise the hand-written validators it replaced, run from the
  commit before the change, see bench/RESULTS.md);
- ``msgspec``: a msgspec Struct of the same shape, decoded straight from bytes;
- ``pydantic``: a pydantic v2 model of the same shape (``model_validate_json``).

    python bench/admin_validation.py --rounds 8 --number 20000
    python bench/admin_validation.py --body subscription   # msgspec and pydantic: mapping only
    PYTHONPATH=<checkout before> python bench/admin_validation.py --body subscription

(the last one times the hand-written validators of an older checkout: the gateway is
imported from PYTHONPATH, this script from here).

prints the median and spread of µs per body for each. No database, no HTTP: only the
validation step the issue asks to be no slower.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
import uuid
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any

import msgspec
import orjson

BODY = orjson.dumps(
    {
        "entity_type": "reservation",
        "internal_id": str(uuid.uuid4()),
        "external_system": "booking_engine",
        "external_id": "BE-2026-000123",
        "direction": "inbound",
        "sync_status": "synced",
        "configuration": {"hotel_code": "ALPHA", "credentials": {"user": "u", "password": "p"}},
    }
)
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    BIDIRECTIONAL = "bidirectional"


class SyncStatus(StrEnum):
    PENDING = "pending"
    SYNCED = "synced"
    FAILED = "failed"
    DISABLED = "disabled"


Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
ExternalId = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class NewMappingStruct(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    entity_type: Name
    internal_id: uuid.UUID
    external_system: Name
    external_id: ExternalId
    direction: Direction = Direction.BIDIRECTIONAL
    sync_status: SyncStatus = SyncStatus.SYNCED
    configuration: dict[str, Any] = msgspec.field(default_factory=dict)


def _pydantic() -> Callable[[bytes], object]:
    from pydantic import BaseModel, ConfigDict, Field

    class NewMappingModel(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        entity_type: str = Field(pattern=NAME_PATTERN)
        internal_id: uuid.UUID = Field(strict=False)
        external_system: str = Field(pattern=NAME_PATTERN)
        external_id: str = Field(min_length=1, max_length=256)
        direction: Direction = Field(default=Direction.BIDIRECTIONAL, strict=False)
        sync_status: SyncStatus = Field(default=SyncStatus.SYNCED, strict=False)
        configuration: dict[str, Any] = Field(default_factory=dict)

    return NewMappingModel.model_validate_json


def _msgspec() -> Callable[[bytes], object]:
    decoder = msgspec.json.Decoder(NewMappingStruct)
    return decoder.decode


def _gateway() -> Callable[[bytes], object]:
    api = importlib.import_module("gateway.mapping.api")
    parse = getattr(api, "parse_new_mapping", None)
    if parse is not None:
        return parse  # type: ignore[no-any-return]
    http = importlib.import_module("gateway.web.http")

    def handwritten(data: bytes) -> object:  # the validators of create_mapping before
        body = orjson.loads(data)
        http.check_fields(
            body, api.NEW_FIELDS, ("entity_type", "internal_id", "external_system", "external_id")
        )
        raw = orjson.dumps(body["configuration"])
        assert b"\\u0000" not in raw and len(raw) < 65536
        return (
            api._name(body, "entity_type"),
            api._internal_id(body),
            api._name(body, "external_system"),
            api._external_id(body),
            api._enum(body, "direction", Direction, Direction.BIDIRECTIONAL),
            api._enum(body, "sync_status", SyncStatus, SyncStatus.SYNCED),
        )

    return handwritten


SUBSCRIPTION = orjson.dumps(
    {
        "name": "Channel manager: reservations",
        "url": "https://partner.example.com/hooks/pms?tenant=alpha",
        "event_types": ["reservation.*", "guest.updated"],
        "filter": {"hotel": "ALPHA"},
        "retry_policy": {"max_attempts": 10, "backoff": {"initial": 5, "multiplier": 3}},
        "max_concurrency": 4,
        "payload": {"fields": {"id": "reservation.id", "status": "reservation.status"}},
        "external_system": "channel_manager",
        "ordering": "entity",
        "rate_limit": 50,
        "signature": "v1",
    }
)


def _subscription() -> Callable[[bytes], object]:
    """The gateway's subscription body check: shapes (msgspec) when it has them, else the
    hand-written inputs.py + options.py it replaced. No auth in the body: both would
    encrypt it alike, which is not validation."""
    from cryptography.fernet import Fernet

    from gateway.crypto import SecretBox

    box = SecretBox([Fernet.generate_key()])
    api = importlib.import_module("gateway.webhooks.api")
    parse = getattr(api, "parse_subscription", None)
    if parse is not None:
        return lambda data: parse(data, box)
    inputs = importlib.import_module("gateway.webhooks.inputs")
    options = importlib.import_module("gateway.webhooks.options")

    def handwritten(data: bytes) -> object:
        body = orjson.loads(data)
        if not isinstance(body, dict):
            raise ValueError("not an object")
        values = inputs.subscription(body, box, creating=True)
        values.update(options.subscription_options(body))
        return values, options.wants_verify(body)

    return handwritten


def per_body(parse: Callable[[bytes], object], number: int, body: bytes = BODY) -> float:
    """µs per body over ``number`` calls."""
    start = time.perf_counter()
    for _ in range(number):
        parse(body)
    return (time.perf_counter() - start) / number * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--number", type=int, default=20000)
    ap.add_argument("--body", choices=("mapping", "subscription"), default="mapping")
    args = ap.parse_args()
    import gateway

    print(f"gateway from {gateway.__file__}, body: {args.body}")
    body = BODY
    ways = {"gateway": _gateway(), "msgspec": _msgspec(), "pydantic": _pydantic()}
    if args.body == "subscription":
        body, ways = SUBSCRIPTION, {"gateway": _subscription()}
    for parse in ways.values():
        per_body(parse, 1000, body)  # warm up
    got: dict[str, list[float]] = {name: [] for name in ways}
    names = list(ways)
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]  # A B C, C B A, ...
        for name in order:
            got[name].append(per_body(ways[name], args.number, body))
    for name, values in got.items():
        print(
            f"{name:9s} median {statistics.median(values):6.2f} µs/body "
            f"(spread {min(values):.2f}-{max(values):.2f}, {args.rounds} rounds)"
        )


if __name__ == "__main__":
    main()
