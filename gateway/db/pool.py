"""The asyncpg pool and its codecs, and connections with a deadline.

A database that hangs (accepts connections, never answers: a frozen server, a stalled
network path) is a different failure from one that is down. ``async with pool.acquire()``
inside ``asyncio.timeout`` does not bound it: when the timeout cancels a query, asyncpg's
release waits for the server to acknowledge the cancel, i.e. for as long as it hangs
(measured: until the server resumed). ``bounded`` closes such a connection's socket
instead, so the caller gets its TimeoutError on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import socket
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import orjson

# Seconds a database call on the request path (API-key and mapping lookups, route events,
# /readyz) may take before its fallback is used (GATEWAY_DB_REQUEST_TIMEOUT).
REQUEST_DEADLINE = 1.0
# Seconds pool.close() may take at shutdown before its connections are dropped unclosed.
CLOSE_DEADLINE = 2.0

# asyncpg's copy_records_to_table speaks the binary protocol; jsonb's binary form is a
# version byte (1) followed by the JSON text. Without this codec COPY of dicts fails.
JSONB_VERSION = b"\x01"


def json_dumps(value: Any) -> bytes:
    """``value`` as JSON: orjson, or msgspec for what orjson refuses but JSON and jsonb
    hold (integers beyond 64 bits, such as an event payload's 2**70)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return msgspec.json.encode(value)


def _jsonb_encode(value: Any) -> bytes:
    return JSONB_VERSION + json_dumps(value)


def _jsonb_decode(data: bytes) -> Any:
    # msgspec, not orjson: orjson reads an integer beyond 64 bits as a float (2**70 would
    # come back rounded); msgspec keeps it an int.
    return msgspec.json.decode(data[1:])


# inet's binary form: family (2 IPv4, 3 IPv6), prefix bits, is-cidr flag, address length,
# the address. asyncpg's own encoder goes through the ipaddress module (~24k instructions
# a row, measured); every api_logs row carries one, and callers are few: cached.
_INET_HEAD = {socket.AF_INET: b"\x02\x20\x00\x04", socket.AF_INET6: b"\x03\x80\x00\x10"}
_INET_FULL = {2: 32, 3: 128}  # prefix bits of a single address, by family


@functools.lru_cache(maxsize=4096)
def _inet_encode(value: str) -> bytes:
    family = socket.AF_INET6 if ":" in value else socket.AF_INET
    try:
        return _INET_HEAD[family] + socket.inet_pton(family, value)
    except OSError:  # a network (a/n), a zone (fe80::1%eth0): the general way
        iface = ipaddress.ip_interface(value)
        code = 2 if iface.version == 4 else 3
        bits = iface.network.prefixlen
        return bytes((code, bits, 0, len(iface.packed))) + iface.packed


def _inet_encode_any(value: Any) -> bytes:
    return _inet_encode(value if isinstance(value, str) else str(value))


def _inet_decode(data: bytes) -> Any:
    """As asyncpg decodes inet: an address, or an interface when a prefix is set."""
    packed = data[4:]
    if data[1] == _INET_FULL[data[0]]:
        return ipaddress.ip_address(packed)
    return ipaddress.ip_interface((packed, data[1]))


async def init_connection(conn: asyncpg.Connection) -> None:
    """Per-connection setup: JSON codecs (binary jsonb, text json), a cached inet codec."""
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
    await conn.set_type_codec(
        "inet",
        schema="pg_catalog",
        encoder=_inet_encode_any,
        decoder=_inet_decode,
        format="binary",
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


@contextlib.asynccontextmanager
async def bounded(pool: asyncpg.Pool, deadline: float) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection whose acquisition and use together end within ``deadline``
    seconds (TimeoutError otherwise), however the server behaves. A connection interrupted
    mid-call (deadline, cancellation) is terminated, not returned to the pool half-used."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    conn = await pool.acquire(timeout=deadline)
    try:
        async with asyncio.timeout_at(end):
            yield conn
    except (TimeoutError, asyncio.CancelledError):
        conn.terminate()
        raise
    finally:
        await pool.release(conn)


async def close_pool(pool: asyncpg.Pool, deadline: float = CLOSE_DEADLINE) -> None:
    """Close gracefully when the server answers, else drop the connections (hung server)."""
    try:
        await asyncio.wait_for(pool.close(), deadline)
    except TimeoutError:
        pool.terminate()
