"""Secrets through the real proxy: query parameters, header-like JSON fields and
``name: value`` lines in text bodies are redacted in api_logs and in the journal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.fixture_types import GatewayClient, GatewayFactory, WaitRows

# A route to the upstream's /upload and /ws, which answer without echoing what was sent:
# whatever of a secret reaches the row came from the request's capture.
VAULT = """
  - name: vault
    path: /vault/{rest...}
    methods: [GET, POST]
    strip_prefix: /vault
    upstream: main
    public: true
    capture:
      redact_fields: [guest_passport]
"""
SECRETS = (
    "gwk_q_s3cr3t",
    "gwk_j_s3cr3t",
    "hunter2",
    "PASSPORT_P12",
    "PIN_s3cr3t",
    "gwk_ws_s3cr3t",
    "gwk_404_s3cr3t",
)


def holds_secret(row: Any) -> bool:
    text = repr(dict(row))
    return any(s in text for s in SECRETS)


async def send_secrets(gw: GatewayClient) -> None:
    """A query, a JSON body and a text body, each carrying secrets beside plain values."""
    query = "api_key=gwk_q_s3cr3t&x=1&Guest-Passport=PASSPORT_P12&PIN-CODE=PIN_s3cr3t&q=a%20b"
    resp = await gw.post(
        f"/vault/upload?{query}",
        data=orjson.dumps({"authorization": "Bearer gwk_j_s3cr3t", "room": 101}),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 200
    resp = await gw.post(
        "/vault/upload?x=2",
        data=b"user: ada\npassword: hunter2\n",
        headers={"Content-Type": "text/plain"},
    )
    assert resp.status == 200


async def test_secrets_never_reach_api_logs(
    gateway_factory: GatewayFactory, wait_rows: WaitRows
) -> None:
    gw = await gateway_factory(VAULT, capture_redact_fields=("pin_code",))
    await send_secrets(gw)
    async with gw.ws_connect("/vault/ws?token=gwk_ws_s3cr3t&room=7") as ws:
        await ws.send_str("close")
        msg = await ws.receive()
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    resp = await gw.get("/nowhere?x_api_key=gwk_404_s3cr3t&page=2")  # no route: default names
    assert resp.status == 404
    rows = await wait_rows(4)
    assert [r for r in rows if holds_secret(r)] == []
    by_query = {r["query"]: r for r in rows}
    json_row = by_query[
        "api_key=[REDACTED]&x=1&Guest-Passport=[REDACTED]&PIN-CODE=[REDACTED]&q=a%20b"
    ]
    assert json_row["request_body"] == {"authorization": "[REDACTED]", "room": 101}
    assert by_query["x=2"]["request_body"] == "user: ada\npassword: [REDACTED]\n"
    ws_row = by_query["token=[REDACTED]&room=7"]
    assert ws_row["status"] == 101 and ws_row["path"] == "/vault/ws"
    assert by_query["x_api_key=[REDACTED]&page=2"]["status"] == 404


async def test_the_journal_holds_only_redacted_rows(
    gateway_factory: GatewayFactory, data_dir: Path
) -> None:
    gw = await gateway_factory(VAULT, capture_redact_fields=("pin_code",), log_queue_max=0)
    await send_secrets(gw)  # no room in memory: each row goes straight to the journal
    files = sorted((data_dir / "journal").glob("*.journal"))
    rows = [row for f in files for row in orjson.loads(f.read_bytes())["rows"]]
    assert len(rows) == 2
    journaled = b"".join(f.read_bytes() for f in files).decode()
    assert not [s for s in SECRETS if s in journaled]
    assert "api_key=[REDACTED]&x=1" in journaled and "user: ada" in journaled
