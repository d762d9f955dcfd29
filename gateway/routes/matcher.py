"""Which route answers a request: the first, in file order, whose host, path and method
match. Path templates (``/rooms/{room_id}``) are compiled to regular expressions at load."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import MethodNotAllowed, RouteNotFound
from gateway.routes.model import Route, Upstream

PARAM_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(\.\.\.)?\}")


@dataclass(frozen=True, slots=True)
class RouteMatch:
    route: Route
    params: Mapping[str, str]


class RouteTable:
    """Routes in file order; the first whose host, path and method match wins."""

    def __init__(
        self,
        routes: tuple[Route, ...],
        upstreams: Mapping[str, Upstream],
        sync_specs: Any = None,
    ) -> None:
        self.routes = routes
        self.upstreams = dict(upstreams)
        self.sync_specs = sync_specs  # the file's raw ``syncs:`` list (gateway.sync.jobs.config)

    def __iter__(self) -> Iterator[Route]:
        return iter(self.routes)

    def match(self, method: str, raw_path: str, host: str | None) -> RouteMatch:
        """Find the route; raise RouteNotFound (404) or MethodNotAllowed (405)."""
        allowed: set[str] = set()
        hostname = (host or "").split(":", 1)[0].lower()
        for route in self.routes:
            if route.host is not None and not _host_matches(route.host, hostname):
                continue
            m = route.regex.fullmatch(raw_path)
            if m is None:
                continue
            if method in route.methods or (method == "HEAD" and "GET" in route.methods):
                return RouteMatch(route, m.groupdict())
            allowed |= route.methods
        if allowed:
            raise MethodNotAllowed(
                f"method {method} is not allowed on {raw_path}", tuple(sorted(allowed))
            )
        raise RouteNotFound(f"no route matches {method} {raw_path}")


def _host_matches(pattern: str, hostname: str) -> bool:
    if pattern.startswith("*."):
        return hostname.endswith(pattern[1:])
    return hostname == pattern


def compile_path(pattern: str) -> re.Pattern[str]:
    """``/rooms/{room_id}`` → one segment; ``/files/{rest...}`` → the rest of the path."""
    out = []
    pos = 0
    for m in PARAM_RE.finditer(pattern):
        out.append(re.escape(pattern[pos : m.start()]))
        name, rest = m.group(1), m.group(2)
        out.append(f"(?P<{name}>.+)" if rest else f"(?P<{name}>[^/]+)")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out))
