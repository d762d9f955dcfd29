"""A buffered upstream answer written to the caller as bytes, in one write.

aiohttp's ``web.Response`` builds a header multidict, prepares it (Date, Server, framing,
Connection) and serialises it again for every call. A proxied answer already has its
headers as raw bytes from the upstream pool: :class:`RawAnswer` filters them in one pass
(hop-by-hop ones out, as for requests) and writes status line, headers and body with one
``transport.write``. It keeps aiohttp's framing rules: ``Content-Length`` from the body,
``Date`` and ``Server`` added when the upstream sent none, ``Content-Type:
application/octet-stream`` for a typeless body, ``Connection: close`` (HTTP/1.1) or
``keep-alive`` (HTTP/1.0) by the caller's keep-alive, the standard reason phrase.

aiohttp's request handler takes it as it takes a response (``prepare``, ``write_eof``,
``keep_alive``); streamed and bodiless answers still go through ``web.StreamResponse``.
The bytes leave only after the call's api_logs row is in the write-ahead log (a
:class:`Gate`, the LogWriter): at the end of the event-loop turn, with the turn's line.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Protocol

from aiohttp import web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion10, HttpVersion11

from gateway.proxy.headers import HOP_BY_HOP, REQUEST_ID_HEADER, RawHeader

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_DROP = frozenset(n.encode() for n in HOP_BY_HOP) | {REQUEST_ID_HEADER.lower().encode()}
_SERVER = b"Server: " + SERVER_SOFTWARE.encode() + b"\r\n"
_OCTETS = b"Content-Type: application/octet-stream\r\n"


def answer_head(
    raw: list[RawHeader], request_id: str, body_size: int, names: list[bytes] | None = None
) -> bytes:
    """The header lines for the caller (each ending in CRLF, no status line, no
    Connection): the upstream's minus hop-by-hop ones and those its ``Connection`` names,
    then X-Request-Id, Content-Length and what aiohttp would add. ``names``: the names of
    ``raw`` in lower case, when the caller has them (UpstreamResponse.lower_names)."""
    if names is None:
        names = [name.lower() for name, _ in raw]
    drop = _DROP
    if b"connection" in names:
        for lname, (_, value) in zip(names, raw):  # noqa: B905 (same length; strict= is parsed per call)
            if lname == b"connection":
                drop = drop | {t.strip().lower() for t in value.split(b",")}
    lines: list[bytes] = []
    for lname, header in zip(names, raw):  # noqa: B905 (same length; strict= is parsed per call)
        if lname not in drop:
            lines += (b": ".join(header), b"\r\n")
    lines += (b"X-Request-Id: ", request_id.encode(), b"\r\nContent-Length: %d\r\n" % body_size)
    # A name is among the lines sent when the upstream sent it and it was not dropped.
    if b"date" not in names or b"date" in drop:
        lines += (b"Date: ", rfc822_formatted_time().encode(), b"\r\n")
    if b"server" not in names or b"server" in drop:
        lines.append(_SERVER)
    if body_size and (b"content-type" not in names or b"content-type" in drop):
        lines.append(_OCTETS)
    return b"".join(lines)


class Gate(Protocol):
    """Holds answers until their rows are in the write-ahead log (capture.writer.LogWriter)."""

    def send_after_rows(self, transport: asyncio.WriteTransport, data: bytes) -> None: ...

    def flush_turn(self) -> None: ...


class RawAnswer(web.StreamResponse):
    """A complete answer (status, header lines from :func:`answer_head`, body) for
    aiohttp's request handler to send. A StreamResponse to the type checker and to
    aiohttp, which uses only ``prepare``, ``write_eof``, ``keep_alive`` and ``status``
    of what a handler returns; none of its own state is set up (that is the saving)."""

    def __init__(self, status: int, head: bytes, body: bytes, gate: Gate) -> None:
        # no super().__init__(): none of StreamResponse's own state is used
        self._status = status
        self.body = body
        self._head = head
        self._gate = gate
        self._keep_alive: bool | None = None

    @property
    def keep_alive(self) -> bool | None:
        return self._keep_alive

    async def prepare(self, request: web.BaseRequest) -> None:
        keep = request.keep_alive
        version = request.version
        if keep:
            conn = b"Connection: keep-alive\r\n" if version == HttpVersion10 else b""
        else:
            conn = b"Connection: close\r\n" if version == HttpVersion11 else b""
        self._keep_alive = keep
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        line = b"HTTP/%d.%d %d %s\r\n" % (
            version.major,
            version.minor,
            self.status,
            _REASONS.get(self.status, b""),
        )
        data = b"".join((line, self._head, conn, b"\r\n", self.body))
        if keep:  # written after this turn's write-ahead log line (its row is in it)
            self._gate.send_after_rows(transport, data)
        else:  # the connection closes right after this: the log line now, then the answer
            self._gate.flush_turn()
            transport.write(data)

    async def write_eof(self, data: bytes = b"") -> None:
        return None
