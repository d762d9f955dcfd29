"""gateway/proxy/server.py: the aiohttp internals it relies on (fail loudly when an aiohttp
release changes them) and the lenient reading of a request head the parser refused."""

from __future__ import annotations

import inspect

from aiohttp import web, web_protocol

from gateway.capture.record import REDACTED
from gateway.proxy.server import (
    GatewayRequestHandler,
    lenient_head,
    log_safe,
    safe_headers,
    unparsed_exchange,
)


def test_the_aiohttp_internals_used_are_still_there() -> None:
    mro = web_protocol.RequestHandler.__mro__
    slots = {name for cls in mro for name in getattr(cls, "__slots__", ())}
    assert {"_messages", "_request_count", "_payload_parser", "_upgraded"} <= slots
    assert "message" in inspect.signature(web_protocol._ErrInfo).parameters
    params = list(inspect.signature(web_protocol.RequestHandler.handle_error).parameters)
    assert params == ["self", "request", "status", "exc", "message"]
    assert inspect.iscoroutinefunction(web.AppRunner._make_server)
    init = inspect.signature(web.Server.__init__).parameters
    assert {"request_factory", "handler_cancellation", "loop", "kwargs"} <= set(init)
    assert "_kwargs" in inspect.getsource(web.Server.__init__)
    for name in ("data_received", "connection_lost", "force_close", "handle_error"):
        assert getattr(GatewayRequestHandler, name) is not getattr(
            web_protocol.RequestHandler, name
        )


def test_lenient_head_reads_what_it_can_and_folds_into_the_header_before() -> None:
    raw = (
        b"get /a%20b?api_key=gwk_x HTTP/9.9\r\nHost: h\r\nAuthorization: Bearer\r\n"
        b" gwk_folded\r\nX-Api-Key gwk_nocolon\r\nX-\x01Bad: v\r\n\r\nbody"
    )
    method, target, headers = lenient_head(raw)
    assert (method, target) == ("get", "/a%20b?api_key=gwk_x")
    assert headers[1] == ("Authorization", "Bearer gwk_folded")
    kept = safe_headers(headers)
    assert "gwk_" not in repr(kept)
    assert kept[2] == ["(invalid line)", REDACTED] and kept[3][1] == REDACTED
    ex = unparsed_exchange(raw, "10.0.0.1")
    assert (ex.method, ex.path, ex.client_ip) == ("get", "/a%20b", "10.0.0.1")
    assert "gwk_" not in ex.query


def test_header_block_is_truncated_and_log_values_are_safe() -> None:
    many = [(f"X-H{i}", "v" * 300) for i in range(100)]
    kept = safe_headers(many)
    assert sum(len(n) + len(v) for n, v in kept) <= 4096 + 20 and kept[-1][0] == "(truncated)"
    assert log_safe("/p\x00\u00e9 x?token=1", 64) == "/p???x"
    assert log_safe("", 8) == "-"
