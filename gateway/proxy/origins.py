"""The upstreams of routes.yaml as keep-alive pools (gateway/proxy/upstream.py), one each.

An upstream's timeouts and retries come from its routes.yaml entry: ``connect_timeout``
(TCP and TLS connect, and the wait for a free connection at the pool's limit),
``read_timeout`` (silence while the upstream owes bytes), ``retries`` and
``retry_backoff`` (connect failures of idempotent calls whose body can be sent again,
retried with exponential backoff inside the one proxied call).
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.proxy.upstream import UpstreamPool
from gateway.routes import Upstream

MAX_CONNECTIONS = 1000  # per upstream: open connections, idle or busy


def pool_for(upstream: Upstream) -> UpstreamPool:
    """A pool for ``upstream``; call inside the running loop that will use it."""
    return UpstreamPool(
        str(upstream.url.origin()),
        connect_timeout=upstream.connect_timeout,
        read_timeout=upstream.read_timeout,
        max_connections=MAX_CONNECTIONS,
        connect_retries=upstream.retries,
        retry_backoff=upstream.retry_backoff,
    )


def same_pool(a: Upstream, b: Upstream) -> bool:
    """Whether a pool made for ``a`` serves ``b`` unchanged (a reload keeps it then)."""
    return (
        a.url.origin() == b.url.origin()
        and a.connect_timeout == b.connect_timeout
        and a.read_timeout == b.read_timeout
        and a.retries == b.retries
        and a.retry_backoff == b.retry_backoff
    )


class Origins:
    """The pools of the configured upstreams, by upstream name."""

    def __init__(self, upstreams: Mapping[str, Upstream]) -> None:
        self.upstreams = dict(upstreams)
        self.pools = {name: pool_for(up) for name, up in upstreams.items()}

    def __getitem__(self, name: str) -> UpstreamPool:
        return self.pools[name]

    def replaced(self, upstreams: Mapping[str, Upstream]) -> Origins:
        """Origins for a new set of upstreams that keeps the pools of unchanged ones (the
        others are closed by their owner once no call uses them)."""
        new = Origins.__new__(Origins)
        new.upstreams = dict(upstreams)
        new.pools = {}
        for name, up in upstreams.items():
            old = self.upstreams.get(name)
            if old is not None and same_pool(old, up):
                new.pools[name] = self.pools[name]
            else:
                new.pools[name] = pool_for(up)
        return new
