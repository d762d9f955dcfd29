"""The asyncpg pool and its codecs."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

# asyncpg's copy_records_to_table speaks the binary protocol; jsonb's binary form is a
# version byte (1) followed by the JSON text. Without this codec COPY of dicts fails.
JSONB_VERSION = b"\x01"


def _jsonb_encode(value: Any) -> bytes:
    return JSONB_VERSION + orjson.dumps(value)


def _jsonb_decode(data: bytes) -> Any:
    return orjson.loads(data[1:])


async def init_connection(conn: asyncpg.Connection) -> None:
    """Per-connection setup: JSON codecs (binary jsonb, text json)."""
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=_jsonb_encode,
        decoder=_jsonb_decode,
        format="binary",
    )
    await conn.set_type_codec(
        "json",
        schema="pg_catalog",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        format="text",
    )


async def create_pool(dsn: str, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=init_connection,
        # Fail fast when the server is gone instead of hanging the caller.
        timeout=5.0,
        command_timeout=60.0,
    )
