"""answer_head: the header lines a buffered answer goes to the caller with."""

from __future__ import annotations

from gateway.proxy.answer import answer_head


def lines(head: bytes) -> list[tuple[bytes, bytes]]:
    assert head.endswith(b"\r\n")
    out = []
    for line in head[:-2].split(b"\r\n"):
        name, _, value = line.partition(b": ")
        out.append((name, value))
    return out


def test_hop_by_hop_and_connection_named_headers_are_dropped_others_kept_as_sent() -> None:
    raw = [
        (b"Content-Type", b"application/json"),
        (b"Connection", b"keep-alive, X-Trace"),
        (b"X-Trace", b"1"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Content-Length", b"999"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Set-Cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"X-Request-Id", b"the-upstream-s"),
        (b"X-Name", "Zoë".encode()),  # non-ASCII bytes pass unchanged
        (b"Date", b"Thu, 03 Dec 2026 10:00:00 GMT"),
        (b"Server", b"pms"),
    ]
    got = lines(answer_head(raw, "rid-1", 12))
    assert got == [
        (b"Content-Type", b"application/json"),
        (b"Set-Cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"X-Name", "Zoë".encode()),
        (b"Date", b"Thu, 03 Dec 2026 10:00:00 GMT"),
        (b"Server", b"pms"),
        (b"X-Request-Id", b"rid-1"),
        (b"Content-Length", b"12"),
    ]


def test_date_server_and_a_content_type_are_added_as_aiohttp_would() -> None:
    got = dict(lines(answer_head([], "r", 3)))
    assert got[b"Content-Length"] == b"3" and got[b"X-Request-Id"] == b"r"
    assert got[b"Date"].endswith(b" GMT") and got[b"Server"].startswith(b"Python/")
    assert got[b"Content-Type"] == b"application/octet-stream"
    assert b"Content-Type" not in dict(lines(answer_head([], "r", 0)))  # no body, no type
