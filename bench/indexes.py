"""What each api_logs index costs PostgreSQL per row written, in alternating rounds.

    python bench/indexes.py [--rows 20000] [--rounds 6] [--batch 1000] [--configs NAME ...]

One embedded PostgreSQL (harness.start_cluster), a database migrated by this checkout's
gateway. Each configuration is a table shaped like api_logs (``LIKE api_logs``: its
columns, defaults and CHECKs), partitioned by day like it, with one partition for today,
the primary key (created_at, id) the writer's replays need, and the configuration's other
indexes. Realistic rows (a ~1 KB JSON answer, ten request and eight answer headers, random
request ids, UUIDv7 ids, a few tenants, 2 % errors) are made once and written the way the
gateway writes them: binary COPY into the partitioned parent, ``--batch`` rows a
transaction.

A round TRUNCATEs each table and COPYs ``--rows`` rows into it, the configurations in
order in even rounds and backwards in odd ones (A B C, C B A, ...). CPU is read from /proc
around each load: of the backend that runs the COPY, and of every process of the cluster
(the backend plus the WAL writer, checkpointer and background writer). Printed: median
(lowest-highest) µs of CPU per row for each configuration, and each configuration's median
minus the primary-key-only one's: what its extra indexes cost a row. Sizes of the indexes
after a load: bytes per row.

The rows fit in memory here (a day of a busy gateway is millions of rows: a btree on a
random key such as request_id then also costs page reads and full-page WAL images, which
this short run does not see), so the figures are a lower bound for random-key indexes.
Only processes started here are stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402  (bench/ is no package: harness.py is found through sys.path)

TENANTS = [uuid.UUID(int=i + 1) for i in range(5)]  # a few tenants share the partition
ERROR_EVERY = 50  # one row in 50 is an error answer (2 %)
# Values of bench/upstream.py's reservation replaced per row.
RESERVATION_ID = b"7f1c2a9e-3b4d-4e5f-8a6b-1c2d3e4f5a6b"
CONFIRMATION = b"HX-2026-118832"
GUEST_ID = b"c3d4e5f6-1111-4222-8333-444455556666"


@dataclass(frozen=True)
class Config:
    """A set of indexes besides the primary key; {t} is the table's name."""

    name: str
    indexes: tuple[str, ...]
    # Statements run after the indexes: {t} the table, {p} its day partition.
    partition: tuple[str, ...] = ()


BRIN = "CREATE INDEX ON {t} USING brin (created_at)"
TENANT = "CREATE INDEX ON {t} (tenant_id, created_at)"
REQUEST_ID = "CREATE INDEX ON {t} (request_id)"
REQUEST_ID_HASH = "CREATE INDEX ON {t} USING hash (request_id)"
GIN_BODY = "CREATE INDEX ON {t} USING gin (response_body jsonb_path_ops)"
# Not an index: rows up to ~8 KB kept inline without pglz compression (a ~1 KB JSON body
# is compressed by default: the row passes TOAST's ~2 KB threshold). Disk for CPU.
UNCOMPRESSED = "ALTER TABLE {p} SET (toast_tuple_target = 8160)"
# The same through the columns (set on the parent, inherited by every partition): bodies
# and headers never compressed, moved out of line into TOAST when the row is too big.
EXTERNAL = (
    "ALTER TABLE {t} ALTER COLUMN request_body SET STORAGE EXTERNAL, "
    "ALTER COLUMN response_body SET STORAGE EXTERNAL, "
    "ALTER COLUMN request_headers SET STORAGE EXTERNAL, "
    "ALTER COLUMN response_headers SET STORAGE EXTERNAL"
)

CONFIGS = [
    Config("pk only", ()),
    Config("pk + brin(created_at)", (BRIN,)),
    Config("pk + btree(tenant_id, created_at)", (TENANT,)),
    Config("pk + btree(request_id)", (REQUEST_ID,)),
    Config("pk + hash(request_id)", (REQUEST_ID_HASH,)),
    Config("pk + gin(response_body jsonb_path_ops)", (GIN_BODY,)),
    Config("001: pk + brin + tenant + btree(request_id)", (BRIN, TENANT, REQUEST_ID)),
    Config("008: pk + tenant + btree(request_id)", (TENANT, REQUEST_ID)),
    Config("pk only, rows not compressed (toast_tuple_target 8160)", (), (UNCOMPRESSED,)),
    Config("pk only, bodies and headers STORAGE EXTERNAL", (), (EXTERNAL,)),
    Config(
        "008, rows not compressed (toast_tuple_target 8160)", (TENANT, REQUEST_ID), (UNCOMPRESSED,)
    ),
]


def uuid7(ms: int) -> uuid.UUID:
    rand = int.from_bytes(os.urandom(10), "big") & ((1 << 80) - 1)
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | rand
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return uuid.UUID(int=value)


def make_rows(count: int, columns: Sequence[str]) -> list[tuple[Any, ...]]:
    """``count`` rows like the gateway's for a GET of bench/upstream.py's reservation,
    a millisecond apart, ending now."""
    sys.path.insert(0, str(HERE))
    from upstream import RESERVATION  # the benchmark upstream's ~1 KB answer

    req_headers = orjson.Fragment(
        orjson.dumps(
            [
                ["Host", "127.0.0.1:8080"],
                ["User-Agent", "booking-engine/4.2 (+https://example.com)"],
                ["Accept", "application/json"],
                ["Accept-Encoding", "gzip, deflate"],
                ["Authorization", "[REDACTED]"],
                ["X-Request-Id", "placeholder"],
                ["Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
                ["Connection", "keep-alive"],
                ["X-Forwarded-For", "203.0.113.7"],
                ["Content-Length", "0"],
            ]
        )
    )
    resp_headers = orjson.Fragment(
        orjson.dumps(
            [
                ["Content-Type", "application/json; charset=utf-8"],
                ["Content-Length", str(len(RESERVATION))],
                ["Date", "Fri, 04 Dec 2026 15:00:00 GMT"],
                ["Server", "Python/3.11 aiohttp/3.14"],
                ["X-Request-Id", "placeholder"],
                ["Cache-Control", "no-store"],
                ["Vary", "Accept-Encoding"],
                ["X-Gateway-Upstream-Ms", "1.2"],
            ]
        )
    )
    error_body = orjson.Fragment(b'{"code":"not_found","message":"no such reservation"}')
    end = datetime.now(UTC)
    start_ms = int(end.timestamp() * 1000) - count
    client = ipaddress.ip_address("203.0.113.7")
    rows = []
    for i in range(count):
        ms = start_ms + i
        error = i % ERROR_EVERY == 0
        # Every answer names another reservation (as real ones do: a GIN index sees new
        # keys), the same size as the upstream's.
        body = orjson.Fragment(
            RESERVATION.replace(RESERVATION_ID, str(uuid.UUID(int=i + 1 << 64)).encode())
            .replace(CONFIRMATION, f"HX-2026-{i % 1_000_000:06d}".encode())
            .replace(GUEST_ID, str(uuid.UUID(int=i + 1 << 32)).encode())
        )
        values = {
            "id": uuid7(ms),
            "created_at": datetime.fromtimestamp(ms / 1000, UTC),
            "tenant_id": TENANTS[i % len(TENANTS)],
            "api_key_id": TENANTS[i % len(TENANTS)],
            "external_system": "booking_engine",
            "request_id": os.urandom(16).hex(),
            "route": "reservation",
            "upstream": "pms",
            "method": "GET",
            "path": f"/api/v1/reservations/{uuid.UUID(int=i)}",
            "query": "",
            "request_headers": req_headers,
            "request_body": None,
            "request_body_format": "empty",
            "request_body_size": 0,
            "request_body_truncated": False,
            "response_headers": resp_headers,
            "response_body": error_body if error else body,
            "response_body_format": "json",
            "response_body_size": len(RESERVATION),
            "response_body_truncated": False,
            "status": 404 if error else 200,
            "duration_ms": 2.5 + (i % 7) * 0.1,
            "upstream_ms": 1.2,
            "error_code": None,
            "error_message": None,
            "client_ip": client,
            "user_agent": "booking-engine/4.2 (+https://example.com)",
            "translated": None,
        }
        rows.append(tuple(values[c] for c in columns))
    return rows


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """CPU seconds of each process that still exists, from /proc/PID/schedstat (time on a
    CPU in nanoseconds: finer than /proc/PID/stat's 10 ms ticks)."""
    out = {}
    for pid in pids:
        try:
            out[pid] = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            continue
    return out


async def init(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        format="binary",
        encoder=lambda v: b"\x01" + orjson.dumps(v),
        decoder=lambda b: orjson.loads(b[1:]),
    )


def table_name(index: int) -> str:
    return f"bench_logs_{index}"


async def create_tables(conn: asyncpg.Connection, configs: Sequence[Config]) -> None:
    today = datetime.now(UTC).date()
    start, end = f"{today} 00:00:00+00", f"{today + timedelta(days=1)} 00:00:00+00"
    for i, config in enumerate(configs):
        t = table_name(i)
        await conn.execute(
            f"DROP TABLE IF EXISTS {t}; "
            f"CREATE TABLE {t} (LIKE api_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS, "
            f"PRIMARY KEY (created_at, id)) PARTITION BY RANGE (created_at); "
            f"CREATE TABLE {t}_today PARTITION OF {t} FOR VALUES FROM ('{start}') TO ('{end}')"
        )
        for statement in config.indexes:
            await conn.execute(statement.format(t=t))
        for statement in config.partition:
            await conn.execute(statement.format(t=t, p=f"{t}_today"))


async def load(
    conn: asyncpg.Connection,
    table: str,
    columns: Sequence[str],
    rows: list[tuple[Any, ...]],
    batch: int,
    pids: list[int],
) -> tuple[float, float]:
    """TRUNCATE, then COPY the rows in batches; CPU seconds of (the backend, the cluster)."""
    await conn.execute(f"TRUNCATE {table}")
    await conn.execute("CHECKPOINT")  # each load starts from the same WAL position
    backend = await conn.fetchval("SELECT pg_backend_pid()")
    cluster = [q for p in pids for q in (p, *harness.children(p))]
    before = cpu_seconds(cluster)
    for i in range(0, len(rows), batch):
        async with conn.transaction():
            await conn.copy_records_to_table(table, records=rows[i : i + batch], columns=columns)
    after = cpu_seconds(cluster)
    used = {pid: t - before.get(pid, 0.0) for pid, t in after.items()}
    return used.get(backend, 0.0), sum(used.values())


async def sizes(conn: asyncpg.Connection, table: str) -> dict[str, int]:
    """Bytes of the table's partition (rows, with their TOAST) and of each of its indexes
    (primary key included)."""
    partition = f"{table}_today"
    heap = int(await conn.fetchval("SELECT pg_table_size($1::regclass)", partition))
    rows = await conn.fetch(
        """SELECT i.indexrelid::regclass::text AS name, pg_relation_size(i.indexrelid) AS bytes
           FROM pg_index i WHERE i.indrelid = $1::regclass ORDER BY 1""",
        partition,
    )
    return {f"{partition}_rows": heap} | {r["name"]: int(r["bytes"]) for r in rows}


async def bench(args: argparse.Namespace, dsn: str, postmaster: int) -> None:
    configs = [c for c in CONFIGS if not args.configs or any(s in c.name for s in args.configs)]
    conn = await asyncpg.connect(dsn)
    await init(conn)
    try:
        columns = [
            r["attname"]
            for r in await conn.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = 'api_logs'::regclass "
                "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
            )
        ]
        rows = make_rows(args.rows, columns)
        await create_tables(conn, configs)
        seen: dict[str, list[tuple[float, float]]] = {c.name: [] for c in configs}
        indexed = list(enumerate(configs))
        for r in range(args.rounds):
            for i, config in indexed if r % 2 == 0 else indexed[::-1]:
                backend, cluster = await load(
                    conn, table_name(i), columns, rows, args.batch, [postmaster]
                )
                seen[config.name].append((backend / len(rows) * 1e6, cluster / len(rows) * 1e6))
            print(
                f"round {r + 1}: "
                + "  ".join(f"{c.name} {seen[c.name][-1][1]:.1f}" for c in configs),
                flush=True,
            )
        report(configs, seen)
        print("\nsizes after a load of", len(rows), "rows (bytes per row):")
        for i, config in enumerate(configs):
            found = await sizes(conn, table_name(i))
            text = ", ".join(
                f"{name.removeprefix(table_name(i) + '_today_')} {size / len(rows):.0f}"
                for name, size in found.items()
            )
            print(f"  {config.name}: {text}")
        for i in range(len(configs)):
            await conn.execute(f"DROP TABLE IF EXISTS {table_name(i)}")
    finally:
        await conn.close()


def report(configs: Sequence[Config], seen: dict[str, list[tuple[float, float]]]) -> None:
    base = seen.get("pk only")
    print(
        f"\n{'indexes':56s} {'backend us/row':>18s} {'cluster us/row':>18s} "
        f"{'cluster - pk only':>18s}"
    )
    for c in configs:
        backend = [v[0] for v in seen[c.name]]
        cluster = [v[1] for v in seen[c.name]]
        extra = "-"
        if base is not None:
            diffs = [v[1] - b[1] for v, b in zip(seen[c.name], base, strict=True)]
            extra = f"{statistics.median(diffs):+.1f}"
        b_mid, c_mid = statistics.median(backend), statistics.median(cluster)
        print(
            f"{c.name:56s} {b_mid:7.1f} ({min(backend):.1f}-{max(backend):.1f})"
            f" {c_mid:7.1f} ({min(cluster):.1f}-{max(cluster):.1f}) {extra:>10s}"
        )
    print(
        "(median over rounds, lowest-highest in brackets; cluster: every PostgreSQL process; "
        "last column: the per-round difference to 'pk only', median)"
    )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", type=int, default=20_000, help="rows per load")
    p.add_argument("--rounds", type=int, default=6, help="alternating rounds")
    p.add_argument("--batch", type=int, default=1000, help="rows per COPY (the gateway's 1000)")
    p.add_argument("--configs", nargs="+", default=[], help="substrings of configuration names")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-indexes-"))
    try:
        cluster = harness.start_cluster(tmp)
        db = harness.prepare_database(cluster, "bench_indexes")
        t0 = time.monotonic()
        asyncio.run(bench(args, db.dsn, cluster.postmaster))
        print(f"\n({time.monotonic() - t0:.0f} s)")
    finally:
        harness.stop_embedded(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
