"""Numbered SQL migrations (gateway/sql/NNN_name.sql) and the runner that applies them.

Applied versions are recorded in ``schema_migrations``. Several processes may start at
once: the runner holds an advisory lock so exactly one applies, the others then see it done.

Two databases (GATEWAY_LOGS_DATABASE_URL, docs/capture.md#a-database-of-its-own): the
control database gets every migration, in order, as it always has (so its history stays
one sequence; api_logs there is an empty parent without partitions once the logs live
elsewhere). The logs database gets the **logs set** only: the migrations that touch
nothing but ``api_logs``/``api_log_batches``, recorded in its own ``schema_migrations``.
A migration is in the logs set when its first line is :data:`LOGS_MARKER`; the ones
shipped before the marker existed are listed in :data:`SHIPPED_LOGS_SQL`. A migration
that touches both kinds of table must not be written: split it in two files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

MIGRATION_LOCK_KEY = 0x6761_7465_0001  # "gate" + 1: advisory lock id for migrations
FILE_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
# First line of a migration that touches api_logs (and api_log_batches) only: it is also
# applied to a separate logs database.
LOGS_MARKER = "-- gateway-migration: logs"
# Shipped before LOGS_MARKER existed (and never edited once shipped): their api_logs SQL.
# None: the whole file. 003 also creates control tables: only its api_logs statement.
SHIPPED_LOGS_SQL: dict[int, str | None] = {
    1: None,  # 001_api_logs.sql
    3: "ALTER TABLE api_logs ADD COLUMN translated jsonb;",  # the end of 003
}


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    logs_sql: str | None = None  # what the logs database gets; None: not in the logs set


def _logs_part(version: int, sql: str) -> str | None:
    if sql.lstrip().startswith(LOGS_MARKER):
        return sql
    if version in SHIPPED_LOGS_SQL:
        return SHIPPED_LOGS_SQL[version] or sql
    return None


def load_migrations() -> list[Migration]:
    """Every migration, in order (what the control database gets)."""
    out = []
    for entry in resources.files("gateway.sql").iterdir():
        m = FILE_RE.match(entry.name)
        if m:
            version, sql = int(m.group(1)), entry.read_text(encoding="utf-8")
            out.append(Migration(version, m.group(2), sql, _logs_part(version, sql)))
    out.sort(key=lambda mig: mig.version)
    return out


def logs_migrations() -> list[Migration]:
    """The logs set, each with its api_logs SQL only (what a separate logs database gets)."""
    return [
        Migration(m.version, m.name, m.logs_sql)
        for m in load_migrations()
        if m.logs_sql is not None
    ]


def latest_version(logs: bool = False) -> int:
    """The version a current control database (or, ``logs``, logs database) is at."""
    migs = logs_migrations() if logs else load_migrations()
    return migs[-1].version if migs else 0


async def migrate(conn: asyncpg.Connection, logs: bool = False) -> list[int]:
    """Apply every pending migration (``logs``: of the logs set); return the versions
    applied now."""
    applied_now = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for mig in logs_migrations() if logs else load_migrations():
            if mig.version in done:
                continue
            async with conn.transaction():
                await conn.execute(mig.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    mig.version,
                    mig.name,
                )
            applied_now.append(mig.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied_now


async def current_version(conn: asyncpg.Connection) -> int:
    """The highest applied version, 0 when nothing is applied yet."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))
