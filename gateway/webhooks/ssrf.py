"""SSRF guard for webhook endpoints: checked when a subscription is saved and again at
connect time, on the addresses the name actually resolves to (a DNS answer may change).

Refused unless allowed by configuration: loopback, private (RFC 1918, ULA), carrier-grade
NAT, link-local (cloud metadata 169.254.169.254 included), multicast, reserved and
unspecified addresses, and IPv4-mapped forms of them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Metadata services outside the link-local range (Alibaba Cloud; AWS's IPv6 one is ULA).
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("100.100.100.200")})
CGNAT = ipaddress.ip_network("100.64.0.0/10")  # shared address space, internal to carriers
RESOLVE_TIMEOUT = 3.0  # seconds a DNS lookup may take when a subscription is saved


class BlockedAddress(OSError):
    """The endpoint resolves to an address deliveries may not go to (an OSError, so
    aiohttp reports it as a connection error)."""


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    def refuses(self, address: str) -> str | None:
        """None when deliveries may go to ``address``, else why not."""
        try:
            ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return f"{address!r} is not an IP address"
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if self.allow_private or any(ip in net for net in self.allowed_networks):
            return None
        kind = _kind(ip)
        return f"address {ip} is {kind}" if kind else None


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
    """
    host = url.raw_host or ""
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        reason = policy.refuses("127.0.0.1")
        if reason:
            raise ValueError(f"'url' is refused: {host} is loopback")
    for address in await _addresses(host, url.port or 443):
        reason = policy.refuses(address)
        if reason:
            raise ValueError(f"'url' is refused: {reason}")


async def _addresses(host: str, port: int) -> list[str]:
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
        return [host.strip("[]")]
    except ValueError:
        pass
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
    """aiohttp does not call the resolver for IP literals: check those before connecting."""
    host = url.raw_host or ""
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    return policy.refuses(host.strip("[]"))


__all__: Sequence[Any] = [
    "AddressPolicy",
    "BlockedAddress",
    "GuardedResolver",
    "check_endpoint",
    "check_url_shape",
    "literal_refusal",
]
