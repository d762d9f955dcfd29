"""The COPY writer: exactly-once batches, journal replay, poisoned rows, shutdown drain."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.capture.exchange import Exchange
from gateway.capture.journal import Journal
from gateway.capture.record import Body, now_utc
from gateway.capture.writer import LogWriter
from gateway.db.pool import create_pool


def make_row(request_id: str, body: Any = None) -> tuple[Any, ...]:
    ex = Exchange(
        created_at=now_utc(),
        started=0.0,
        request_id=request_id,
        method="GET",
        path="/x",
        query="",
        request_headers=[["Host", "gw"]],
        client_ip="127.0.0.1",
        user_agent="t",
        status=200,
    )
    if body is not None:
        ex.response_body = Body(body, "json", 10, False)
    return ex.to_row(1.0)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, 1, 4)
    yield p
    await p.close()


async def count(db: asyncpg.Connection, where: str = "true") -> int:
    return int(await db.fetchval(f"SELECT count(*) FROM api_logs WHERE {where}"))


async def test_batches_flush_by_size_and_by_time(
    pool: asyncpg.Pool, db: asyncpg.Connection, tmp_path: Path
) -> None:
    writer = LogWriter(pool, tmp_path / "j", batch_size=5, flush_interval=30)
    writer.start()
    for i in range(5):
        writer.submit(make_row(f"size-{i}"))
    for _ in range(100):
        if await count(db) == 5:
            break
        await asyncio.sleep(0.05)
    assert await count(db) == 5  # the size trigger fired long before the 30 s timer
    writer.submit(make_row("late"))
    await writer.close(5)
    assert await count(db) == 6  # close drains the rest
    assert await db.fetchval("SELECT count(*) FROM api_log_batches") == 2


async def test_replaying_a_committed_batch_writes_nothing(
    pool: asyncpg.Pool, db: asyncpg.Connection, tmp_path: Path
) -> None:
    writer = LogWriter(pool, tmp_path / "j")
    rows = [make_row(f"dup-{i}") for i in range(3)]
    batch = uuid.uuid4()
    await writer._copy(batch, rows)
    # The commit happened but (say) its acknowledgement was lost: the batch is journaled
    # and replayed later. The batch marker makes the replay a no-op.
    writer.journal.write(batch, rows)
    writer.start()
    await writer.close(5)
    assert await count(db) == 3
    assert writer.journal.pending() == []


async def test_journal_left_by_a_previous_process_is_replayed_at_start(
    pool: asyncpg.Pool, db: asyncpg.Connection, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "j")
    for n in range(3):
        journal.write(uuid.uuid4(), [make_row(f"old-{n}-{i}") for i in range(4)])
    (tmp_path / "j" / "garbage.journal").write_bytes(b"{not json")
    writer = LogWriter(pool, tmp_path / "j")
    writer.start()
    await writer.close(5)
    assert await count(db, "request_id LIKE 'old-%'") == 12
    assert journal.pending() == []
    assert (tmp_path / "j" / "rejected" / "garbage.journal").exists()  # kept for a human


async def test_a_poisoned_row_does_not_cost_its_batch(
    pool: asyncpg.Pool, db: asyncpg.Connection, tmp_path: Path
) -> None:
    writer = LogWriter(pool, tmp_path / "j", batch_size=100, flush_interval=0.05)
    writer.start()
    for i in range(10):
        writer.submit(make_row(f"ok-{i}"))
    # A NUL inside a JSON string is refused by jsonb; record.py never produces one, but
    # if something did, only that row's bodies may be lost.
    writer.submit(make_row("poison", body={"a": "x\x00y"}))
    await writer.close(10)
    assert await count(db, "request_id LIKE 'ok-%'") == 10
    row = await db.fetchrow("SELECT * FROM api_logs WHERE request_id = 'poison'")
    assert row is not None and row["response_body"] is None
    assert "PostgreSQL refused" in row["error_message"]
    assert writer.rows_dropped == 0


async def test_unreachable_database_journals_and_close_keeps_rows_on_disk(tmp_path: Path) -> None:
    # A pool to a server that does not exist: every write fails as "unavailable".
    pool = await asyncpg.create_pool(
        "postgresql://postgres@127.0.0.1:9/none", min_size=0, max_size=1, timeout=1
    )
    try:
        writer = LogWriter(
            pool, tmp_path / "j", batch_size=3, flush_interval=0.05, retry_interval=60
        )
        writer.start()
        for i in range(7):
            writer.submit(make_row(f"down-{i}"))
        await writer.close(5)
        assert not writer.database_up
        assert writer.rows_journaled == 7 and writer.rows_dropped == 0
        total = 0
        for path in writer.journal.pending():
            with writer.journal.claim(path) as batch:
                assert batch is not None
                total += len(batch[1])
        assert total == 7
    finally:
        await pool.close()


async def test_full_queue_spills_to_the_journal(
    pool: asyncpg.Pool, db: asyncpg.Connection, tmp_path: Path
) -> None:
    writer = LogWriter(pool, tmp_path / "j", batch_size=1000, flush_interval=60, queue_max=5)
    for i in range(8):  # not started: nothing drains the queue
        writer.submit(make_row(f"spill-{i}"))
    assert writer.queue_depth == 5 and writer.rows_journaled == 3
    writer.start()
    await writer.close(5)
    assert await count(db, "request_id LIKE 'spill-%'") == 8


# -- the write-ahead log (crash window) ---------------------------------------------------


def _die(writer: LogWriter) -> None:
    """What SIGKILL does to a writer: its task and memory are gone, its files (and the
    locks on them) are closed by the kernel; nothing of its shutdown runs."""
    assert writer._task is not None
    writer._task.cancel()
    for seg in list(writer.wal._live):
        os.close(seg.fd)
    writer.wal._live.clear()


async def test_rows_reach_the_write_ahead_log_by_the_end_of_the_turn(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    writer = LogWriter(pool, tmp_path / "j", flush_interval=30)
    writer.start()
    writer.submit(make_row("wal-a"))
    writer.submit(make_row("wal-b"))
    assert not list((tmp_path / "j" / "wal").glob("*.wal"))  # not per call: per turn
    await asyncio.sleep(0)  # the end of this turn
    [segment] = list((tmp_path / "j" / "wal").glob("*.wal"))
    text = segment.read_bytes()
    assert text.count(b"\n") == 1 and b"wal-a" in text and b"wal-b" in text  # one write
    await writer.close(5)
    assert not segment.exists()  # committed: the segment is gone


async def test_an_answer_leaves_only_after_its_row_is_in_the_write_ahead_log(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """send_after_rows holds an answer until the rows submitted before it are written to
    the write-ahead log (the end of the turn), so a SIGKILL in a long busy turn cannot
    lose the row of a call whose caller saw the answer; with no row waiting it goes at
    once. A real socket pair: what the peer can read is what left the process."""
    writer = LogWriter(pool, tmp_path / "j", flush_interval=30)
    writer.start()
    server_side: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda r, w: server_side.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    peer = socket.create_connection(("127.0.0.1", port))
    peer.setblocking(False)

    def peer_reads() -> bytes:
        try:
            return peer.recv(100)
        except BlockingIOError:
            return b""

    try:
        for _ in range(100):
            if server_side:
                break
            await asyncio.sleep(0.01)
        transport = server_side[0].transport
        assert isinstance(transport, asyncio.WriteTransport)
        wal = tmp_path / "j" / "wal"
        writer.submit(make_row("held-1"))
        writer.send_after_rows(transport, b"answer-1;")
        assert peer_reads() == b""  # held: its row is not in the log yet
        assert not list(wal.glob("*.wal"))
        await asyncio.sleep(0)  # the end of the turn: the log line, then the answer
        [segment] = list(wal.glob("*.wal"))
        assert b"held-1" in segment.read_bytes()
        assert peer_reads() == b"answer-1;"
        writer.send_after_rows(transport, b"answer-2;")  # no row waiting: at once
        assert peer_reads() == b"answer-2;"
        writer.submit(make_row("held-3"))
        writer.flush_turn()  # e.g. before a refusal: the line now
        assert b"held-3" in segment.read_bytes()
    finally:
        peer.close()
        for w in server_side:
            w.close()
            await w.wait_closed()
        server.close()
        await server.wait_closed()
        await writer.close(5)


async def test_a_killed_writer_loses_no_row_and_doubles_none(
    pool: asyncpg.Pool, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """Rows still in memory at the kill come back from the write-ahead log at the next
    start; rows already committed (the segment not yet deleted) are not written twice."""
    writer = LogWriter(pool, tmp_path / "j", batch_size=3, flush_interval=30)
    writer.start()
    for i in range(3):
        writer.submit(make_row(f"kill-committed-{i}"))  # a full batch: COPY at once
    for _ in range(100):
        await asyncio.sleep(0.05)
        if await count(db, "request_id LIKE 'kill-committed-%'") == 3:
            break
    for i in range(2):
        writer.submit(make_row(f"kill-memory-{i}"))  # waits for the 30 s timer
    await asyncio.sleep(0)
    _die(writer)
    assert await count(db, "request_id LIKE 'kill-memory-%'") == 0  # lost without the WAL
    assert list((tmp_path / "j" / "wal").glob("*.wal"))

    again = LogWriter(pool, tmp_path / "j", flush_interval=30)
    again.start()
    for _ in range(100):
        await asyncio.sleep(0.05)
        if not list((tmp_path / "j" / "wal").glob("*.wal")):
            break
    await again.close(5)
    rows = await db.fetch("SELECT request_id, count(*) AS n FROM api_logs GROUP BY 1")
    assert {r["request_id"]: r["n"] for r in rows} == {
        **{f"kill-committed-{i}": 1 for i in range(3)},
        **{f"kill-memory-{i}": 1 for i in range(2)},
    }


async def test_a_live_writers_segment_is_not_replayed_by_another(
    pool: asyncpg.Pool, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """Workers share a data directory: a segment whose owner still runs (it holds the
    lock) is left alone, else its rows would be written by both."""
    owner = LogWriter(pool, tmp_path / "j", flush_interval=30)
    owner.start()
    owner.submit(make_row("owned"))
    await asyncio.sleep(0)
    other = LogWriter(pool, tmp_path / "j", flush_interval=30)
    other.start()
    await asyncio.sleep(0.3)
    await other.close(5)
    assert await count(db, "request_id = 'owned'") == 0
    assert list((tmp_path / "j" / "wal").glob("*.wal"))
    await owner.close(5)
    assert await count(db, "request_id = 'owned'") == 1


async def test_a_torn_last_line_is_skipped_and_the_rest_replayed(
    pool: asyncpg.Pool, db: asyncpg.Connection, tmp_path: Path
) -> None:
    writer = LogWriter(pool, tmp_path / "j", flush_interval=30)
    writer.start()
    writer.submit(make_row("torn-ok"))
    await asyncio.sleep(0)
    _die(writer)
    [segment] = list((tmp_path / "j" / "wal").glob("*.wal"))
    with open(segment, "ab") as fh:
        fh.write(
            b'[["0190',
        )  # the process died inside its next write
    again = LogWriter(pool, tmp_path / "j", flush_interval=30)
    again.start()
    await asyncio.sleep(0.5)
    await again.close(5)
    assert await count(db, "request_id = 'torn-ok'") == 1
    assert not segment.exists()
