"""GATEWAY_ARCHIVE_DIR: a partition past retention is exported (gzip CSV) before its drop,
the export can be loaded back, and a failed export keeps the partition."""

from __future__ import annotations

import csv
import gzip
import io
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from gateway.capture import partitions
from gateway.settings import Settings

TODAY = date(2026, 3, 10)
OLD_DAY = TODAY - timedelta(days=9)  # past a 5-day retention


async def insert_row(conn: asyncpg.Connection, path: str, body: str) -> None:
    at = datetime(OLD_DAY.year, OLD_DAY.month, OLD_DAY.day, 12, tzinfo=UTC)
    await conn.execute(
        """INSERT INTO api_logs (id, created_at, request_id, method, path, request_headers,
               request_body_format, request_body, request_body_size, response_body_format,
               response_body_size, status, duration_ms)
           VALUES (gen_random_uuid(), $1, 'r', 'GET', $2, '[]', 'json', $3::jsonb, 10,
                   'empty', 0, 200, 1)""",
        at,
        path,
        body,
    )


@pytest.fixture
async def old_partition(db: asyncpg.Connection) -> str:
    await partitions.create_partition(db, OLD_DAY)
    await insert_row(db, "/a", '{"note": "comma, \\"quote\\" and\\nnewline"}')
    await insert_row(db, "/b", '{"n": 2}')
    return partitions.partition_name(OLD_DAY)


async def test_partition_is_archived_then_dropped_and_loads_back(
    db: asyncpg.Connection, old_partition: str, tmp_path: Path
) -> None:
    before = await db.fetch(f"SELECT * FROM {old_partition} ORDER BY path")
    archive = tmp_path / "archive"
    result = await partitions.run_maintenance(db, TODAY, 2, 5, archive_dir=archive)
    assert result.dropped == (old_partition,)
    assert OLD_DAY not in await partitions.existing_partitions(db)
    path = archive / f"{old_partition}.csv.gz"
    assert [p.name for p in archive.iterdir()] == [path.name]  # no temporary file left
    text = gzip.decompress(path.read_bytes()).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sorted(r["path"] for r in rows) == ["/a", "/b"]

    # Restore: the day's partition again, then COPY the file back in.
    await partitions.create_partition(db, OLD_DAY)
    await db.copy_to_table("api_logs", source=io.BytesIO(text.encode()), format="csv", header=True)
    after = await db.fetch(f"SELECT * FROM {old_partition} ORDER BY path")
    assert [dict(r) for r in after] == [dict(r) for r in before]


async def test_failed_archive_keeps_the_partition(
    db: asyncpg.Connection, old_partition: str, tmp_path: Path
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the archive folder should be")
    with pytest.raises(OSError):
        await partitions.run_maintenance(db, TODAY, 2, 5, archive_dir=blocked)
    assert OLD_DAY in await partitions.existing_partitions(db)
    assert await db.fetchval(f"SELECT count(*) FROM {old_partition}") == 2


def test_archive_dir_setting() -> None:
    assert Settings.from_env({}).archive_dir is None
    got = Settings.from_env({"GATEWAY_ARCHIVE_DIR": "/var/archive/gw"}).archive_dir
    assert got == Path("/var/archive/gw")
