"""The cached inet codec (gateway/db/pool.py) against PostgreSQL's own reading of inet."""

from __future__ import annotations

import ipaddress

import asyncpg
import pytest

from gateway.db.pool import create_pool

VALUES = [
    "127.0.0.1",
    "203.0.113.7",
    "::1",
    "2001:db8::8a2e:370:7334",
    "::ffff:192.0.2.1",
    "10.0.0.0/8",
    "2001:db8::/32",
    "192.0.2.5/24",
]


@pytest.mark.parametrize("value", VALUES)
async def test_inet_round_trips_and_postgres_reads_what_was_meant(
    database_url: str, value: str
) -> None:
    pool = await create_pool(database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            text, back = await conn.fetchrow("SELECT $1::inet::text, $1::inet", value)
            plain = await asyncpg.connect(database_url)  # asyncpg's own codec
            try:
                expected = await plain.fetchval("SELECT $1::inet", _reference(value))
                expected_text = await plain.fetchval("SELECT $1::inet::text", _reference(value))
            finally:
                await plain.close()
        assert text == expected_text
        assert back == expected and type(back) is type(expected)
        # COPY (binary) is how api_logs rows are written
        async with pool.acquire() as conn:
            await conn.execute("CREATE TEMP TABLE ips (ip inet)")
            await conn.copy_records_to_table("ips", records=[(value,)], columns=["ip"])
            assert await conn.fetchval("SELECT ip::text FROM ips") == expected_text
    finally:
        await pool.close()


def _reference(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | object:
    return ipaddress.ip_interface(value) if "/" in value else ipaddress.ip_address(value)
