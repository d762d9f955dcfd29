"""What the api_logs write-ahead log costs per call, measured alone (no server, no noise
from other processes): one realistic row (two ~1 KB JSON bodies, headers; as the gateway
builds it) appended per event-loop turn, in turns of 1, 4 and 16 rows.

    python bench/wal.py [--rows 20000]

Prints CPU microseconds per row for each turn size (process CPU time, median of 5 runs).
The whole-gateway figure, with and without the log in alternating rounds, comes from
``python bench/ab.py --env-b GATEWAY_LOG_WAL=false --rounds 16``; both are in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.capture.exchange import CapturePolicy, Exchange
from gateway.capture.record import DEFAULT_REDACT_FIELDS, DEFAULT_REDACT_HEADERS, now_utc
from gateway.capture.wal import Wal
from gateway.routes import CaptureOptions

BODY = (
    b'{"id": "7f1c2a9e", "guest": {"name": "Ada Lovelace", "email": "ada@example.org"}, '
    b'"stay": {"arrival": "2026-12-24", "departure": "2026-12-27", "rooms": ['
    + b", ".join(b'{"room_id": "r%d", "rate": 129.5, "board": "BB"}' % i for i in range(14))
    + b"]}}"
)


def row() -> tuple[object, ...]:
    policy = CapturePolicy.build(
        CaptureOptions(), 65536, DEFAULT_REDACT_FIELDS, DEFAULT_REDACT_HEADERS
    )
    ex = Exchange(
        created_at=now_utc(),
        started=0.0,
        request_id="bench-1",
        method="POST",
        path="/api/v1/reservations/7f1c2a9e",
        query="",
        request_headers=[["Host", "gw"], ["Content-Type", "application/json"]] * 4,
        client_ip="127.0.0.1",
        user_agent="wrk",
        status=200,
    )
    ex.request_body = policy.body(True, BODY, len(BODY), "application/json", "")
    ex.response_body = policy.body(True, BODY, len(BODY), "application/json", "")
    ex.response_headers = [["Content-Type", "application/json"]] * 4
    return ex.to_row(1.0)


def run(rows: int, per_turn: int, directory: Path) -> float:
    wal = Wal(directory)
    batch = [row()] * per_turn
    start = time.process_time()
    for _ in range(rows // per_turn):
        seg = wal.append(batch)
        assert seg is not None
        wal.settle(seg, per_turn)
    used = time.process_time() - start
    wal.close()
    return used / rows * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    args = parser.parse_args()
    print(f"row of {len(repr(row()))} characters; {args.rows} rows per run, 5 runs")
    with tempfile.TemporaryDirectory() as tmp:
        for per_turn in (1, 4, 16):
            runs = [run(args.rows, per_turn, Path(tmp)) for _ in range(5)]
            print(
                f"{per_turn:2d} rows per turn: {statistics.median(runs):5.2f} us CPU per row "
                f"(spread {min(runs):.2f}-{max(runs):.2f})"
            )


if __name__ == "__main__":
    main()
