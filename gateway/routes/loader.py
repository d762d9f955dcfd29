"""routes.yaml → a :class:`RouteTable`, validated as a whole at load.

Every problem is reported at once, each naming the file, the route (index and name) and
the field, e.g.::

    routes.yaml: routes[2] 'guests': field 'methods': unknown HTTP method 'FETCH'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from yarl import URL

from gateway.errors import ConfigError
from gateway.names import is_event_type, is_name
from gateway.pointers import Trie, compile_pointers, parse_pointer
from gateway.routes.matcher import PARAM_RE, RouteTable, compile_path
from gateway.routes.model import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_RETRY_BACKOFF,
    HTTP_METHODS,
    SYNC_DIRECTIONS,
    SYNC_SOURCES,
    AutoMap,
    CaptureOptions,
    EmitRule,
    RateLimit,
    Route,
    SyncOptions,
    Translation,
    Upstream,
)

ROUTE_NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")  # route and upstream names
MAX_RETRIES = 10  # connection retries an upstream may ask for


def load_routes(path: Path | str) -> RouteTable:
    """Read and validate a routes file; raise ConfigError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read routes file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: routes file is not valid UTF-8") from None
    return parse_routes(text, str(path))


def parse_routes(text: str, source: str = "routes.yaml") -> RouteTable:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None
    return _Parser(source).parse(doc)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def fail(self, where: str, msg: str) -> None:
        self.problems.append(f"{self.source}: {where}: {msg}")

    def parse(self, doc: Any) -> RouteTable:
        if not isinstance(doc, dict):
            raise ConfigError(
                f"{self.source}: top level must be a mapping with 'upstreams' and 'routes'"
            )
        self._unknown(doc, {"upstreams", "routes", "syncs"}, "top level")
        upstreams = self._upstreams(doc.get("upstreams"))
        routes = self._routes(doc.get("routes"), upstreams)
        if self.problems:
            raise ConfigError("\n".join(self.problems))
        # ``syncs:`` is validated by gateway.sync.jobs.config (a layer above routes), which
        # the CLI calls with these upstreams: the list is kept here as it was read.
        return RouteTable(tuple(routes), upstreams, sync_specs=doc.get("syncs"))

    def _unknown(self, d: Mapping[str, Any], known: set[str], where: str) -> None:
        for key in d:
            if key not in known:
                self.fail(
                    where, f"unknown field {key!r} (expected one of {', '.join(sorted(known))})"
                )

    def _upstreams(self, raw: Any) -> dict[str, Upstream]:
        if not isinstance(raw, dict) or not raw:
            self.fail("field 'upstreams'", "must be a non-empty mapping of name → upstream")
            return {}
        out = {}
        for name, spec in raw.items():
            where = f"upstreams.{name}"
            if not isinstance(name, str) or not ROUTE_NAME_RE.match(name):
                self.fail(where, "upstream names are lowercase letters, digits, '_', '-', '.'")
                continue
            if isinstance(spec, str):
                spec = {"url": spec}
            if not isinstance(spec, dict):
                self.fail(where, "must be a mapping (or a URL string)")
                continue
            up = self._upstream(name, spec, where)
            if up is not None:
                out[name] = up
        return out

    def _upstream(self, name: str, spec: dict[str, Any], where: str) -> Upstream | None:
        self._unknown(
            spec, {"url", "connect_timeout", "read_timeout", "retries", "retry_backoff"}, where
        )
        url = self._url(spec.get("url"), where)
        ct = self._number(spec, "connect_timeout", where, DEFAULT_CONNECT_TIMEOUT, 0.001, 3600)
        rt = self._number(spec, "read_timeout", where, DEFAULT_READ_TIMEOUT, 0.001, 86400)
        retries = self._int(spec, "retries", where, 0, 0, MAX_RETRIES)
        backoff = self._number(spec, "retry_backoff", where, DEFAULT_RETRY_BACKOFF, 0, 60)
        if url is None:
            return None
        return Upstream(name, url, ct, rt, retries, backoff)

    def _url(self, raw: Any, where: str) -> URL | None:
        if not isinstance(raw, str) or not raw:
            self.fail(f"{where}: field 'url'", "required, e.g. http://127.0.0.1:9001")
            return None
        try:
            url = URL(raw)
        except ValueError as exc:
            self.fail(f"{where}: field 'url'", f"not a URL ({exc})")
            return None
        if url.scheme not in ("http", "https") or not url.host:
            self.fail(f"{where}: field 'url'", f"must be an absolute http(s) URL, got {raw!r}")
            return None
        if url.query_string or url.fragment:
            self.fail(f"{where}: field 'url'", "must not carry a query or fragment")
            return None
        return url

    def _number(
        self, d: Mapping[str, Any], key: str, where: str, default: float, lo: float, hi: float
    ) -> float:
        v = d.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            self.fail(
                f"{where}: field {key!r}", f"must be a number of seconds in [{lo}, {hi}], got {v!r}"
            )
            return default
        return float(v)

    def _int(
        self, d: Mapping[str, Any], key: str, where: str, default: int, lo: int, hi: int
    ) -> int:
        v = d.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            self.fail(f"{where}: field {key!r}", f"must be an integer in [{lo}, {hi}], got {v!r}")
            return default
        return v

    def _routes(self, raw: Any, upstreams: Mapping[str, Upstream]) -> list[Route]:
        if not isinstance(raw, list) or not raw:
            self.fail("field 'routes'", "must be a non-empty list of routes")
            return []
        out: list[Route] = []
        seen: set[str] = set()
        for i, spec in enumerate(raw):
            name = spec.get("name") if isinstance(spec, dict) else None
            where = f"routes[{i}]" + (f" {name!r}" if isinstance(name, str) else "")
            if not isinstance(spec, dict):
                self.fail(where, "must be a mapping")
                continue
            route = self._route(spec, where, upstreams)
            if route is None:
                continue
            if route.name in seen:
                self.fail(f"{where}: field 'name'", f"duplicate route name {route.name!r}")
            seen.add(route.name)
            out.append(route)
        return out

    def _route(self, spec: dict[str, Any], where: str, ups: Mapping[str, Upstream]) -> Route | None:
        known = {
            "name",
            "path",
            "methods",
            "host",
            "strip_prefix",
            "upstream",
            "capture",
            "public",
            "external_systems",
            "rate_limit",
            "sync",
            "translate",
            "emit",
        }
        self._unknown(spec, known, where)
        before = len(self.problems)
        name = spec.get("name")
        if not isinstance(name, str) or not ROUTE_NAME_RE.match(name):
            self.fail(
                f"{where}: field 'name'", "required; lowercase letters, digits, '_', '-', '.'"
            )
        path = self._path(spec.get("path"), where)
        methods = self._methods(spec.get("methods", ["GET"]), where)
        host = spec.get("host")
        if host is not None and (not isinstance(host, str) or not host or "/" in host):
            self.fail(
                f"{where}: field 'host'",
                f"must be a host name such as api.example.com, got {host!r}",
            )
        strip = spec.get("strip_prefix", "")
        if not isinstance(strip, str) or (
            strip
            and (
                not strip.startswith("/") or not isinstance(path, str) or not path.startswith(strip)
            )
        ):
            self.fail(
                f"{where}: field 'strip_prefix'", f"must be a leading part of 'path', got {strip!r}"
            )
        up_name = spec.get("upstream")
        if up_name not in ups:
            known_ups = ", ".join(sorted(ups)) or "none defined"
            self.fail(
                f"{where}: field 'upstream'", f"unknown upstream {up_name!r} (known: {known_ups})"
            )
        public = spec.get("public", False)
        if not isinstance(public, bool):
            self.fail(f"{where}: field 'public'", f"must be true or false, got {public!r}")
        systems = spec.get("external_systems", [])
        if not isinstance(systems, list) or not all(is_name(x) for x in systems):
            self.fail(
                f"{where}: field 'external_systems'",
                "must be a list of names such as booking_engine",
            )
            systems = []
        rate_limit = self._rate_limit(spec.get("rate_limit"), where)
        capture = self._capture(spec.get("capture", {}), where)
        sync = self._sync(spec.get("sync"), where, path)
        translate = _TranslateParser(self, where).parse(spec.get("translate"), path, public)
        emit = self._emit(spec.get("emit"), where, methods, public)
        if len(self.problems) > before or path is None or not isinstance(name, str):
            return None
        return Route(
            name=name,
            path=path,
            methods=methods,
            upstream=ups[str(up_name)],
            regex=compile_path(path),
            host=host.lower() if host else None,
            strip_prefix=strip.rstrip("/"),
            capture=capture,
            public=bool(public),
            external_systems=frozenset(systems),
            rate_limit=rate_limit,
            sync=sync,
            translate=translate,
            emit=emit,
        )

    def _sync(self, raw: Any, where: str, path: str | None) -> SyncOptions | None:
        if raw is None:
            return None
        w = f"{where}: field 'sync'"
        if not isinstance(raw, dict):
            self.fail(w, "must be a mapping such as {entity_type: reservation, entity: path:id}")
            return None
        self._unknown(raw, {"entity_type", "entity", "direction"}, w)
        etype = raw.get("entity_type")
        if not is_name(etype):
            self.fail(f"{w}.entity_type", f"required; a name such as reservation, got {etype!r}")
        direction = raw.get("direction", "inbound")
        if direction not in SYNC_DIRECTIONS:
            self.fail(f"{w}.direction", f"must be one of {', '.join(SYNC_DIRECTIONS)}")
        entity = raw.get("entity")
        source, _, locator = entity.partition(":") if isinstance(entity, str) else ("", "", "")
        params = {m.group(1) for m in PARAM_RE.finditer(path or "")}
        if source not in SYNC_SOURCES or not locator:
            self.fail(
                f"{w}.entity",
                f"must be path:<param>, request:/<pointer> or response:/<pointer>, got {entity!r}",
            )
        elif source == "path" and path is not None and locator not in params:
            self.fail(f"{w}.entity", f"path has no parameter {locator!r}")
        elif source != "path" and not locator.startswith("/"):
            self.fail(f"{w}.entity", f"a JSON pointer starts with '/', got {locator!r}")
        if not isinstance(etype, str) or source not in SYNC_SOURCES:
            return None
        return SyncOptions(etype, source, locator, str(direction))

    def _rate_limit(self, raw: Any, where: str) -> RateLimit | None:
        if raw is None:
            return None
        w = f"{where}: field 'rate_limit'"
        if not isinstance(raw, dict):
            self.fail(w, "must be a mapping such as {requests: 100, per_seconds: 60}")
            return None
        self._unknown(raw, {"requests", "per_seconds"}, w)
        n = self._int(raw, "requests", w, 0, 1, 10_000_000)
        per = self._number(raw, "per_seconds", w, 60.0, 0.001, 86400)
        return RateLimit(n, per) if n >= 1 else None

    def _emit(
        self, raw: Any, where: str, methods: frozenset[str], public: Any
    ) -> tuple[EmitRule, ...]:
        if raw is None:
            return ()
        w = f"{where}: field 'emit'"
        if not isinstance(raw, list) or not raw:
            self.fail(w, "must be a list such as [{event: reservation.created, status: [201]}]")
            return ()
        if public is True:
            self.fail(w, "needs a route with a partner key (events belong to the caller's tenant)")
        return tuple(
            r for i, spec in enumerate(raw) if (r := self._emit_rule(spec, f"{w}[{i}]", methods))
        )

    def _emit_rule(self, spec: Any, w: str, methods: frozenset[str]) -> EmitRule | None:
        if not isinstance(spec, dict):
            self.fail(w, "must be a mapping with 'event' (and optional 'status', 'methods')")
            return None
        self._unknown(spec, {"event", "status", "methods"}, w)
        event = spec.get("event")
        if not is_event_type(event):
            self.fail(
                f"{w}.event", f"required; an event type such as reservation.created, got {event!r}"
            )
            return None
        statuses = spec.get("status", [])
        statuses = [statuses] if isinstance(statuses, int) else statuses
        if not isinstance(statuses, list) or not all(
            isinstance(x, int) and not isinstance(x, bool) and 100 <= x <= 599 for x in statuses
        ):
            self.fail(f"{w}.status", f"must be a status or a list of statuses, got {statuses!r}")
            return None
        wanted = self._methods(spec.get("methods", sorted(methods)), f"{w}.methods")
        if not wanted <= methods:
            self.fail(f"{w}.methods", f"must be among the route's methods {sorted(methods)}")
        return EmitRule(event, frozenset(statuses), wanted)

    def _path(self, raw: Any, where: str) -> str | None:
        if not isinstance(raw, str) or not raw.startswith("/"):
            self.fail(f"{where}: field 'path'", f"required; must start with '/', got {raw!r}")
            return None
        names = [m.group(1) for m in PARAM_RE.finditer(raw)]
        leftover = PARAM_RE.sub("", raw)
        if "{" in leftover or "}" in leftover:
            self.fail(f"{where}: field 'path'", "parameters look like {name} or {name...}")
            return None
        if len(names) != len(set(names)):
            self.fail(f"{where}: field 'path'", "a parameter name is used twice")
            return None
        return raw

    def _methods(self, raw: Any, where: str) -> frozenset[str]:
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            self.fail(f"{where}: field 'methods'", "must be a non-empty list such as [GET, POST]")
            return frozenset()
        out = set()
        for m in raw:
            if not isinstance(m, str) or m.upper() not in HTTP_METHODS:
                self.fail(f"{where}: field 'methods'", f"unknown HTTP method {m!r}")
            else:
                out.add(m.upper())
        return frozenset(out)

    def _capture(self, raw: Any, where: str) -> CaptureOptions:
        w = f"{where}: field 'capture'"
        if not isinstance(raw, dict):
            self.fail(w, "must be a mapping")
            return CaptureOptions()
        keys = {
            "max_body_bytes",
            "request_body",
            "response_body",
            "redact_fields",
            "redact_headers",
        }
        self._unknown(raw, keys, w)
        cap = raw.get("max_body_bytes")
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
            self.fail(f"{w}.max_body_bytes", f"must be a non-negative integer, got {cap!r}")
            cap = None
        flags = {}
        for key in ("request_body", "response_body"):
            v = raw.get(key, True)
            if not isinstance(v, bool):
                self.fail(f"{w}.{key}", f"must be true or false, got {v!r}")
                v = True
            flags[key] = v
        lists = {}
        for key in ("redact_fields", "redact_headers"):
            v = raw.get(key, [])
            if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
                self.fail(f"{w}.{key}", "must be a list of names")
                v = []
            lists[key] = frozenset(x.lower() for x in v)
        return CaptureOptions(
            max_body_bytes=cap,
            request_body=flags["request_body"],
            response_body=flags["response_body"],
            redact_fields=lists["redact_fields"],
            redact_headers=lists["redact_headers"],
        )


TRANSLATE_FIELDS = {
    "path",
    "query",
    "body",
    "request_body",
    "response_body",
    "on_unknown",
    "unknown_status",
    "auto_map",
}


class _TranslateParser:
    """The ``translate`` block of one route; problems go to the file's parser."""

    def __init__(self, parser: _Parser, where: str) -> None:
        self.p = parser
        self.w = f"{where}: field 'translate'"

    def parse(self, raw: Any, path: str | None, public: Any) -> Translation | None:
        if raw is None:
            return None
        if not isinstance(raw, dict):
            self.p.fail(self.w, "must be a mapping (path, query, body, ...)")
            return None
        self.p._unknown(raw, TRANSLATE_FIELDS, self.w)
        if public is True:
            self.p.fail(self.w, "needs a partner key (its external system); remove public: true")
        names = {m.group(1) for m in PARAM_RE.finditer(path or "")}
        path_params = self._names(raw.get("path"), "path", names)
        query_params = self._names(raw.get("query"), "query", None)
        both = self._pointers(raw.get("body"), "body")
        request = both + self._pointers(raw.get("request_body"), "request_body")
        response = both + self._pointers(raw.get("response_body"), "response_body")
        on_unknown = raw.get("on_unknown", "refuse")
        if on_unknown not in ("refuse", "pass"):
            self.p.fail(f"{self.w}.on_unknown", f"must be refuse or pass, got {on_unknown!r}")
        # Requests on a strict route: a value at a pointer that is no id is refused too.
        strict = on_unknown != "pass"
        tries = (
            self._trie(request, "request_body", strict),
            self._trie(response, "response_body", False),
        )
        status = raw.get("unknown_status")
        if status is not None and status not in (404, 422):
            self.p.fail(f"{self.w}.unknown_status", f"must be 404 or 422, got {status!r}")
        return Translation(
            path_params=path_params,
            query_params=query_params,
            request_fields=request,
            response_fields=response,
            refuse_unknown=on_unknown != "pass",
            unknown_status=status if status in (404, 422) else None,
            auto_map=self._auto_map(raw.get("auto_map")),
            request_trie=tries[0],
            response_trie=tries[1],
        )

    def _entity(self, value: Any, where: str) -> bool:
        if not is_name(value):
            self.p.fail(
                where, f"entity type must look like reservation or room_type, got {value!r}"
            )
            return False
        return True

    def _names(self, raw: Any, key: str, allowed: set[str] | None) -> tuple[tuple[str, str], ...]:
        if raw is None:
            return ()
        if not isinstance(raw, dict):
            self.p.fail(f"{self.w}.{key}", "must map parameter names to entity types")
            return ()
        out = []
        for name, entity in raw.items():
            where = f"{self.w}.{key}.{name}"
            if allowed is not None and name not in allowed:
                self.p.fail(where, f"no parameter {{{name}}} in the route's path")
            elif not isinstance(name, str) or not name:
                self.p.fail(where, "parameter names are non-empty strings")
            elif self._entity(entity, where):
                out.append((name, entity))
        return tuple(out)

    def _pointers(self, raw: Any, key: str) -> tuple[tuple[str, str], ...]:
        if raw is None:
            return ()
        if not isinstance(raw, dict):
            self.p.fail(f"{self.w}.{key}", "must map pointers such as /items/*/room_id to types")
            return ()
        out = []
        for pointer, entity in raw.items():
            where = f"{self.w}.{key}.{pointer}"
            try:
                parse_pointer(pointer)
            except ValueError as exc:
                self.p.fail(where, str(exc))
                continue
            if self._entity(entity, where):
                out.append((pointer, entity))
        return tuple(out)

    def _trie(self, fields: tuple[tuple[str, str], ...], key: str, strict: bool) -> Trie:
        try:
            return compile_pointers(fields, strict)
        except ValueError as exc:
            self.p.fail(f"{self.w}.{key}", str(exc))
            return Trie()

    def _auto_map(self, raw: Any) -> AutoMap | None:
        if raw is None:
            return None
        w = f"{self.w}.auto_map"
        if not isinstance(raw, dict):
            self.p.fail(w, "must be a mapping with entity_type, external_id, internal_id")
            return None
        self.p._unknown(raw, {"entity_type", "external_id", "internal_id", "statuses"}, w)
        ok = self._entity(raw.get("entity_type"), f"{w}.entity_type")
        pointers = [
            self._plain_pointer(raw.get(k), f"{w}.{k}") for k in ("external_id", "internal_id")
        ]
        statuses = raw.get("statuses", [201])
        if (
            not isinstance(statuses, list)
            or not statuses
            or not all(
                isinstance(s, int) and not isinstance(s, bool) and 200 <= s <= 299 for s in statuses
            )
        ):
            self.p.fail(f"{w}.statuses", "must be a list of 2xx statuses such as [201]")
            ok = False
        if not ok or pointers[0] is None or pointers[1] is None:
            return None
        return AutoMap(raw["entity_type"], pointers[0], pointers[1], frozenset(statuses))

    def _plain_pointer(self, raw: Any, where: str) -> tuple[str, ...] | None:
        try:
            segments = parse_pointer(raw)
        except ValueError as exc:
            self.p.fail(where, f"required; {exc}")
            return None
        if "*" in segments:
            self.p.fail(where, "must name one value (no '*')")
            return None
        return segments
