"""The header filters at the proxy boundary: equal to a plain "keep what is not dropped"
loop over the headers."""

from __future__ import annotations

from aiohttp.test_utils import make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.proxy.headers import (
    GATEWAY_SET,
    HOP_BY_HOP,
    IDENTITY_PREFIX,
    KEY_ID_HEADER,
    TENANT_HEADER,
    WEBSOCKET_HANDSHAKE,
    downstream_response_headers,
    upstream_request_headers,
    valid_host,
)


def reference_upstream(
    headers: CIMultiDictProxy[str], websocket: bool, identity: dict[str, str] | None
) -> list[tuple[str, str]]:
    """The filter written the slow, obvious way (the gateway's former implementation)."""
    conn = {t.strip().lower() for v in headers.getall("Connection", ()) for t in v.split(",")}
    drop = HOP_BY_HOP | GATEWAY_SET | conn | {"x-api-key"}
    if websocket:
        drop |= WEBSOCKET_HANDSHAKE
    out = []
    for name, value in headers.items():
        lname = name.lower()
        if lname in drop or lname.startswith(IDENTITY_PREFIX):
            continue
        scheme, _, token = value.partition(" ")
        if lname == "authorization" and scheme.lower() == "bearer":
            if token.strip().startswith("gwk_"):
                continue
        out.append((name, value))
    out += list((identity or {}).items())
    return [*out, ("X-Forwarded-For", "127.0.0.1"), ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Host", "gw.example"), ("X-Request-Id", "rid")]  # fmt: skip


NAMES = [
    "Accept",
    "authorization",
    "Authorization",
    "X-Api-Key",
    "Connection",
    "Keep-Alive",
    "X-Custom",
    "x-custom",
    "X-Gateway-Tenant-Id",
    "X-Forwarded-For",
    "X-Request-Id",
    "Sec-WebSocket-Key",
    "Transfer-Encoding",
    "Set-Cookie",
    "Content-Length",
    "TE",
]
VALUES = [
    "1",
    "Bearer gwk_abc",
    "bearer  gwk_x ",
    "Basic YTpi",
    "Bearer other",
    "x-custom",
    "close, X-Custom",
    "keep-alive",
]


@settings(max_examples=400, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), max_size=8),
    websocket=st.booleans(),
    with_identity=st.booleans(),
)
def test_upstream_headers_equal_the_plain_filter(
    pairs: list[tuple[str, str]], websocket: bool, with_identity: bool
) -> None:
    headers = CIMultiDict([("Host", "gw.example"), *pairs])
    request = make_mocked_request("GET", "/x", headers=headers)
    identity = {TENANT_HEADER: "t", KEY_ID_HEADER: "k"} if with_identity else None
    got = upstream_request_headers(request, "rid", (), websocket=websocket, identity=identity)
    expected = reference_upstream(request.headers, websocket, identity)
    expected = [(n, "" if n == "X-Forwarded-For" and not request.remote else v)
                for n, v in expected]  # fmt: skip
    assert [(n.decode(), v.decode()) for n, v in got] == expected


@settings(max_examples=300, deadline=None)
@given(pairs=st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), max_size=8))
def test_downstream_headers_drop_hop_by_hop_and_connection_listed_names(
    pairs: list[tuple[str, str]],
) -> None:
    headers = CIMultiDictProxy(CIMultiDict(pairs))
    conn = {t.strip().lower() for v in headers.getall("Connection", ()) for t in v.split(",")}
    expected = [(n, v) for n, v in pairs if n.lower() not in HOP_BY_HOP | conn]
    assert list(downstream_response_headers(pairs).items()) == expected


def test_valid_host_follows_rfc_3986_and_9110() -> None:
    good = ("x", "api.example.com", "api.example.com:8443", "127.0.0.1:80", "[::1]", "[::1]:443")
    for host in (*good, "[v1.fe:x]", "a-b_c~d.e", "%41x", "x:"):
        assert valid_host(host), host
    bad = ("a b\tc", "a b", "ex ample.com", "a\tb", "[::1", "[zz::1]", "::1", "a:b")
    for host in (*bad, "a:80:90", "a/b", "a@b", "a?b", "a#b", "\u00fcber.example", 'a"b', "a%zz"):
        assert not valid_host(host), host
