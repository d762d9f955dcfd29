"""Header handling at the proxy boundary: hop-by-hop, X-Forwarded-*, request ids, client IP."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.errors import BadRequest
from gateway.randomness import random_bytes
from gateway.settings import IPNetwork

# RFC 9110 §7.6.1 hop-by-hop headers, plus the ones aiohttp computes for each hop.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
# Set by the gateway itself; a caller's values are replaced, never trusted blindly.
GATEWAY_SET = frozenset(
    {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id"}
)
WEBSOCKET_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
REQUEST_ID_HEADER = "X-Request-Id"
# Identity the gateway vouches for, sent to upstreams; a caller's own values are dropped.
TENANT_HEADER = "X-Gateway-Tenant-Id"
SYSTEM_HEADER = "X-Gateway-External-System"
KEY_ID_HEADER = "X-Gateway-Key-Id"
IDENTITY_PREFIX = "x-gateway-"
# Dropped from every request sent upstream (the partner's own key header included).
_UPSTREAM_DROP = HOP_BY_HOP | GATEWAY_SET | {"x-api-key"}
_UPSTREAM_DROP_WEBSOCKET = _UPSTREAM_DROP | WEBSOCKET_HANDSHAKE
# The same as raw (lower-case) header names: the request's headers are filtered undecoded.
_UPSTREAM_DROP_B = frozenset(n.encode() for n in _UPSTREAM_DROP)
_UPSTREAM_DROP_WEBSOCKET_B = frozenset(n.encode() for n in _UPSTREAM_DROP_WEBSOCKET)
_IDENTITY_PREFIX_B = IDENTITY_PREFIX.encode()
RawHeader = tuple[bytes, bytes]
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")
# Host = uri-host [ ":" port ] (RFC 9110 §7.2): an [IPv6] or [IPvFuture] literal, or a
# reg-name (IPv4 addresses included) of unreserved, sub-delims and %XX (RFC 3986 §3.2.2).
_REG_NAME = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*"
_IP_FUTURE = r"v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+"
HOST_RE = re.compile(rf"(?:\[(?:(?P<ipv6>[0-9A-Fa-f:.]+)|{_IP_FUTURE})\]|{_REG_NAME})(?::[0-9]*)?")


def request_id_from(headers: CIMultiDictProxy[str]) -> str:
    """Keep the caller's X-Request-Id when it is sane, otherwise mint one."""
    rid = headers.get(REQUEST_ID_HEADER)
    if rid is not None and REQUEST_ID_RE.match(rid):
        return rid
    return random_bytes(16).hex()  # as random as uuid4().hex, without building a UUID


def valid_host(value: str) -> bool:
    """Whether a Host value is a host with an optional port (RFC 3986 / RFC 9110)."""
    found = HOST_RE.fullmatch(value)
    if found is None:
        return False
    ipv6 = found.group("ipv6")
    if ipv6 is None:
        return True
    try:
        ipaddress.IPv6Address(ipv6)
    except ValueError:
        return False
    return True


def check_host(headers: CIMultiDictProxy[str]) -> None:
    """400 ``bad_host`` for a Host value with characters or a shape no host[:port] has:
    it would reach the upstream as X-Forwarded-Host and steer host-based routing."""
    host = headers.get("Host")
    if host is not None and not valid_host(host):
        raise BadRequest("the Host header is not a valid host[:port]", code="bad_host")


def _connection_tokens(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    conn = headers.getall("Connection", ())
    if not conn:
        return frozenset()
    return frozenset(t.strip().lower() for v in conn for t in v.split(","))


def is_trusted(peer: str | None, trusted: Iterable[IPNetwork]) -> bool:
    if not peer:
        return False
    try:
        addr = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(addr in net for net in trusted)


def client_ip(request: web.BaseRequest, trusted: tuple[IPNetwork, ...]) -> str | None:
    """The caller's address: the peer, or the nearest untrusted X-Forwarded-For hop."""
    peer = request.remote or None
    if not trusted:
        # TCP peers are IP literals; anything else (a unix socket) has no address to log.
        return peer if peer and (peer[0].isdigit() or ":" in peer) else None
    if not is_trusted(peer, trusted):
        return _ip_or_none(peer)
    hops = [h.strip() for v in request.headers.getall("X-Forwarded-For", ()) for h in v.split(",")]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # a garbage hop ends what we can believe
        if not is_trusted(hop, trusted):
            return hop
    return peer


def _ip_or_none(value: str | None) -> str | None:
    if not value:
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return None
    return value


def upstream_request_headers(
    request: web.BaseRequest,
    request_id: str,
    trusted: tuple[IPNetwork, ...],
    websocket: bool = False,
    identity: dict[str, str] | None = None,
    drop_encoding: bool = False,
) -> list[RawHeader]:
    """The caller's headers, as received (bytes, original case, repeats kept), minus
    hop-by-hop ones and gateway credentials, plus X-Forwarded-*, X-Request-Id and the
    X-Gateway-* identity of an authenticated caller: one pass over the raw headers, no
    decoding. ``drop_encoding`` also drops Accept-Encoding (an answer to be translated
    must come uncompressed)."""
    headers = request.headers
    drop = _UPSTREAM_DROP_WEBSOCKET_B if websocket else _UPSTREAM_DROP_B
    if "Connection" in headers:
        drop = drop | {t.encode("latin-1") for t in _connection_tokens(headers)}
    if drop_encoding:
        drop = drop | {b"accept-encoding"}
    out: list[RawHeader] = []
    for name, value in request.raw_headers:
        lname = name.lower()
        if lname in drop or lname.startswith(_IDENTITY_PREFIX_B):
            continue
        if lname == b"authorization" and _is_gateway_credential_b(value):
            continue  # the partner's gateway key never reaches the upstream
        out.append((name, value))
    # Every name added below was dropped above, so adding equals setting.
    if identity:
        out += [(n.encode(), v.encode("utf-8", "surrogateescape")) for n, v in identity.items()]
    peer = request.remote or ""
    from_trusted = bool(trusted) and is_trusted(peer, trusted)
    prior = ", ".join(headers.getall("X-Forwarded-For", ())) if from_trusted else ""
    proto = headers.get("X-Forwarded-Proto") if from_trusted else None
    host = headers.get("X-Forwarded-Host") if from_trusted else None
    out += (
        (b"X-Forwarded-For", _enc(f"{prior}, {peer}" if prior else peer)),
        (b"X-Forwarded-Proto", _enc(proto or request.scheme)),
        (b"X-Forwarded-Host", _enc(host or request.host)),
        (b"X-Request-Id", request_id.encode()),
    )
    return out


def as_multidict(headers: Iterable[RawHeader]) -> CIMultiDict[str]:
    """Raw header pairs as aiohttp's client takes them (the WebSocket relay's handshake)."""
    return CIMultiDict(decode_headers(headers))


def _enc(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


def _is_gateway_credential_b(value: bytes) -> bool:
    scheme, _, token = value.partition(b" ")
    return scheme.lower() == b"bearer" and token.strip().startswith(b"gwk_")


def downstream_response_headers(headers: Sequence[tuple[str, str]]) -> CIMultiDict[str]:
    """The upstream's answer headers without hop-by-hop ones (the server sets framing)."""
    drop = HOP_BY_HOP
    for name, value in headers:
        if name.lower() == "connection":
            drop = drop | frozenset(t.strip().lower() for t in value.split(","))
    return CIMultiDict((n, v) for n, v in headers if n.lower() not in drop)


def decode_headers(raw: Iterable[RawHeader]) -> list[tuple[str, str]]:
    """Raw header pairs as text, the way aiohttp decodes them (UTF-8, undecodable bytes
    kept as surrogates so they go out again unchanged)."""
    return [(n.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for n, v in raw]
