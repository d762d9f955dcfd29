"""SSRF guard for webhook endpoints: checked when a subscription is saved and again at
connect time, on the addresses the name actually resolves to (a DNS answer may change).

Refused unless allowed by configuration: loopback, private (RFC 1918, ULA), carrier-grade
NAT, link-local (cloud metadata 169.254.169.254 included), multicast, reserved and
unspecified addresses, and IPv6 addresses carrying one of them (IPv4-mapped and -compatible,
6to4, Teredo, NAT64). Hosts are judged in canonical form (``canonical_host``): disguises
such as ``127.0.0.1.``, ``%31%32%37.0.0.1``, ``2130706433`` or ``0x7f.1`` are loopback too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Metadata services outside the link-local range (Alibaba Cloud; AWS's IPv6 one is ULA).
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("100.100.100.200")})
CGNAT = ipaddress.ip_network("100.64.0.0/10")  # shared address space, internal to carriers
RESOLVE_TIMEOUT = 3.0  # seconds a DNS lookup may take when a subscription is saved
# IPv6 prefixes whose low 32 bits are an IPv4 address the traffic ends up at.
NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d (RFC 4291 2.5.5.1)
LOW_32_BITS = 0xFFFFFFFF
# A label browsers and inet_aton read as a number: decimal, 0x-hex (even bare "0x"), 0-octal.
_NUMBER = re.compile(r"0x[0-9a-f]*|0[0-7]*|[1-9][0-9]*")
_ENDS_IN_NUMBER = re.compile(r"[0-9]+|0x[0-9a-f]*")


class BlockedAddress(OSError):
    """The endpoint resolves to an address deliveries may not go to (an OSError, so
    aiohttp reports it as a connection error)."""


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    def refuses(self, address: str) -> str | None:
        """None when deliveries may go to ``address``, else why not. An IPv6 address is
        refused when it, or an IPv4 address it carries, is refused; an IPv4-mapped one is
        judged by its IPv4 address alone (it is that address)."""
        ip = _address(address)
        if ip is None:
            return f"{address!r} is not an IP address"
        carried = embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else ()
        for inner in carried:
            reason = self._judge(inner)
            if reason:
                return f"address {ip} carries {inner}, which is {reason}"
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return None
        reason = self._judge(ip)
        return f"address {ip} is {reason}" if reason else None

    def _judge(self, ip: IPAddress) -> str | None:
        if self.allow_private or any(ip in net for net in self.allowed_networks):
            return None
        return _kind(ip)


def _address(text: str) -> IPAddress | None:
    """A resolver's answer (maybe with a zone id), else a literal in any disguise."""
    try:
        return ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        pass
    try:
        return host_address(canonical_host(text))
    except ValueError:
        return None


def canonical_host(raw: str) -> str:
    """A URL host as resolvers and browsers read it: percent-decoded, brackets, zone id and
    one trailing dot removed, IDNA-mapped and lowercased, a numeric IPv4 form (2130706433,
    0x7f.1, 0177.0.0.1, 127.1) written as a dotted quad, an IPv6 one compressed.
    ValueError when it is no usable host (bad encoding, a number out of range)."""
    host = unquote(raw, errors="strict")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:  # only an IPv6 literal has a colon (the port is not part of the host)
        return str(ipaddress.IPv6Address(host.split("%", 1)[0]))
    if not host.isascii():
        host = host.encode("idna").decode("ascii")  # nameprep: fullwidth digits, U+3002
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    last = host.rsplit(".", 1)[-1]
    if _ENDS_IN_NUMBER.fullmatch(last):  # as browsers do: then it must be an IPv4 address
        return str(_numeric_ipv4(host))
    return host


def _numeric_ipv4(host: str) -> ipaddress.IPv4Address:
    """inet_aton's reading: up to four numbers, the last filling the remaining bytes."""
    parts = host.split(".")
    if len(parts) > 4 or not all(_NUMBER.fullmatch(p) for p in parts):
        raise ValueError(f"host {host!r} is not a valid IPv4 address")
    values = [_number(p) for p in parts]
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (5 - len(parts)):
        raise ValueError(f"host {host!r} is not a valid IPv4 address")
    value = last
    for i, byte in enumerate(head):
        value += byte << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _number(label: str) -> int:
    if label.startswith("0x"):
        return int(label[2:] or "0", 16)
    return int(label, 8) if label.startswith("0") else int(label)


def host_address(host: str) -> IPAddress | None:
    """The IP address a canonical host is, or None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo server and client,
    NAT64 well-known prefix, IPv4-compatible); () for a plain IPv6 address."""
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo
    low = ipaddress.IPv4Address(int(ip) & LOW_32_BITS)
    if ip in NAT64_WELL_KNOWN:
        return (low,)
    if ip in IPV4_COMPATIBLE and int(ip) > 1:  # :: and ::1 are themselves, not IPv4
        return (low,)
    return ()


def _kind(ip: IPAddress) -> str | None:
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    checks = (
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local (cloud metadata range)"),
        (ip.is_multicast, "multicast"),
        (ip.is_unspecified, "unspecified"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in CGNAT, "carrier-grade NAT"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
    )
    for hit, kind in checks:
        if hit:
            return kind
    return None


def check_url_shape(raw: str, allow_http: bool) -> URL:
    """Parse an endpoint URL; ValueError with a message for the API when it is not usable."""
    try:
        url = URL(raw)
    except ValueError:
        raise ValueError("'url' is not a URL") from None
    if url.scheme not in ("https", "http") or not url.host:
        raise ValueError("'url' must be an absolute https:// URL")
    if url.scheme == "http" and not allow_http:
        raise ValueError("'url' must use https (http is refused by GATEWAY_WEBHOOK_ALLOW_HTTP)")
    if url.user is not None or url.password is not None:
        raise ValueError("'url' must not carry credentials; use 'auth'")
    if url.fragment:
        raise ValueError("'url' must not carry a fragment")
    return url


async def check_endpoint(url: URL, policy: AddressPolicy) -> None:
    """At creation: refuse names or literal addresses that resolve to refused addresses.

    A name that does not resolve now is accepted (it is checked again at every connect).
    The host is judged in canonical form, so disguised literals are refused too.
    """
    try:
        host = canonical_host(url.raw_host or "")
    except ValueError:
        raise ValueError("'url' has an invalid host") from None
    if host == "localhost" or host.endswith(".localhost"):
        reason = policy.refuses("127.0.0.1")
        if reason:
            raise ValueError(f"'url' is refused: {host} is loopback")
    for address in await _addresses(host, url.port or 443):
        reason = policy.refuses(address)
        if reason:
            raise ValueError(f"'url' is refused: {reason}")


async def _addresses(host: str, port: int) -> list[str]:
    if host_address(host) is not None:
        return [host]
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError):
        return []
    return [str(info[4][0]) for info in infos]


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that drops refused addresses; none left → BlockedAddress."""

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        allowed = [r for r in results if self.policy.refuses(r["host"]) is None]
        if not allowed:
            raise BlockedAddress(f"webhook endpoint {host} resolves only to refused addresses")
        return allowed

    async def close(self) -> None:
        await self.inner.close()


def literal_refusal(url: URL, policy: AddressPolicy) -> str | None:
    """aiohttp does not call the resolver for IP literals: check those (in any disguise)
    before connecting. Names are left to the resolver (GuardedResolver)."""
    try:
        host = canonical_host(url.raw_host or "")
    except ValueError:
        return f"host {url.raw_host!r} is not valid"
    if host_address(host) is None:
        return None
    return policy.refuses(host)


__all__: Sequence[Any] = [
    "AddressPolicy",
    "BlockedAddress",
    "GuardedResolver",
    "canonical_host",
    "check_endpoint",
    "check_url_shape",
    "embedded_ipv4",
    "host_address",
    "literal_refusal",
]
