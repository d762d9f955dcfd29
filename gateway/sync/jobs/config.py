"""routes.yaml ``syncs:`` → frozen :class:`SyncJob` objects.

Validated as a whole, like routes: every problem is reported at once, each naming the
file, the job (index and name) and the field, e.g.::

    routes.yaml: syncs[0] 'rates-out': field 'schedule': give exactly one of interval, cron

A job has two ends. ``outbound`` (PMS → partner): the source is an upstream path that
returns entities changed since a cursor, the target an external URL (auth from environment
variables, stored encrypted). ``inbound`` (partner → PMS): the source is an external URL,
the target an upstream path. Items cross in the receiving side's ids (``translate``).
"""

from __future__ import annotations

import enum
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from croniter import croniter
from yarl import URL

from gateway.errors import ConfigError
from gateway.names import is_name
from gateway.pointers import Trie, compile_pointers, parse_pointer
from gateway.routes import ROUTE_NAME_RE, Upstream

MIN_INTERVAL = 1.0  # seconds; a job polled faster than this is a stream, not a batch
MAX_INTERVAL = 31 * 86400.0
DEFAULT_BATCH_SIZE = 500
MAX_BATCH_SIZE = 10_000
DEFAULT_MAX_RETRIES = 8  # automatic retries of a failed item before it waits for a person
MAX_RETRIES = 100
DEFAULT_TIMEOUT = 30.0  # seconds for one request to either end
MAX_TIMEOUT = 600.0
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
INTERVAL_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HEADER_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token
PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")
SYSTEM_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
JOB_FIELDS = {
    "name",
    "tenant",
    "external_system",
    "entity_type",
    "direction",
    "interval",
    "cron",
    "batch_size",
    "max_retries",
    "source",
    "target",
    "translate",
    "on_unknown",
}
SOURCE_FIELDS = {
    "upstream",
    "path",
    "url",
    "auth",
    "timeout",
    "items",
    "id",
    "version",
    "next_cursor",
    "cursor_param",
    "limit_param",
}
TARGET_FIELDS = {"upstream", "path", "url", "auth", "timeout", "items_field", "failed"}
FAILED_FIELDS = {"items", "id", "error"}


class JobDirection(enum.StrEnum):
    OUTBOUND = "outbound"  # PMS → partner
    INBOUND = "inbound"  # partner → PMS


class AuthType(enum.StrEnum):
    NONE = "none"
    BEARER = "bearer"
    BASIC = "basic"
    HEADERS = "headers"


@dataclass(frozen=True, slots=True)
class Schedule:
    """Every ``interval`` seconds, or at the times of a cron expression (UTC)."""

    interval: float | None = None
    cron: str | None = None

    def next_after(self, now: datetime) -> datetime:
        if self.cron is not None:
            nxt: datetime = croniter(self.cron, now).get_next(datetime)
            return nxt
        assert self.interval is not None
        return now + timedelta(seconds=self.interval)

    def describe(self) -> str:
        return f"cron {self.cron}" if self.cron is not None else f"every {self.interval:g}s"


@dataclass(frozen=True, slots=True)
class Auth:
    """How the job authenticates to the external end; values come from the environment at
    start and are stored encrypted (never in routes.yaml)."""

    type: AuthType = AuthType.NONE
    username: str | None = None
    secret_env: str | None = None  # bearer: the token; basic: the password
    header_envs: tuple[tuple[str, str], ...] = ()  # (header, environment variable)

    def secret(self, environ: Mapping[str, str]) -> dict[str, Any] | None:
        """The JSON object stored encrypted (the webhook subscriptions' shape)."""
        if self.type is AuthType.BEARER:
            return {"token": environ[self.secret_env or ""]}
        if self.type is AuthType.BASIC:
            return {"username": self.username, "password": environ[self.secret_env or ""]}
        if self.type is AuthType.HEADERS:
            return {"headers": {name: environ[env] for name, env in self.header_envs}}
        return None


@dataclass(frozen=True, slots=True)
class End:
    """One end of a job: an internal upstream and path, or an external URL."""

    upstream: Upstream | None = None
    path: str = ""
    external_url: URL | None = None
    timeout: float = DEFAULT_TIMEOUT

    @property
    def url(self) -> URL:
        if self.external_url is not None:
            return self.external_url
        assert self.upstream is not None
        base = self.upstream.url
        return base.origin().join(URL(base.raw_path.rstrip("/") + self.path, encoded=True))

    @property
    def name(self) -> str:
        """api_logs' upstream column: the upstream's name, or the external host."""
        if self.upstream is not None:
            return self.upstream.name
        assert self.external_url is not None
        return self.external_url.host or "external"


@dataclass(frozen=True, slots=True)
class Source:
    end: End
    items: str = "/items"  # pointer to the array of items in each page ("" : the page)
    id: str = "/id"  # pointer to an item's id (of the job's entity type)
    version: str | None = None  # pointer to an item's version (an integer)
    next_cursor: str | None = "/next_cursor"  # pointer to the next page's cursor
    cursor_param: str = "cursor"
    limit_param: str = "limit"


@dataclass(frozen=True, slots=True)
class Target:
    end: End
    items_field: str = "items"  # the batch is POSTed as {items_field: [...]}
    failed_items: str | None = None  # pointer to the answer's list of refused items
    failed_id: str = "/id"  # in each refused entry: the item's id (as sent)
    failed_error: str = "/error"


@dataclass(frozen=True, slots=True)
class SyncJob:
    name: str
    tenant_id: uuid.UUID
    external_system: str
    entity_type: str
    direction: JobDirection
    schedule: Schedule
    source: Source
    target: Target
    auth: Auth = Auth()  # for the external end
    batch_size: int = DEFAULT_BATCH_SIZE
    max_retries: int = DEFAULT_MAX_RETRIES
    translate: tuple[tuple[str, str], ...] = ()  # (pointer in an item, entity type)
    pass_unknown: bool = False  # True: ids with no mapping cross unchanged (else item fails)
    where: str = ""  # "routes.yaml: syncs[0] 'name'" for errors found at start
    trie: Trie = field(default_factory=Trie, compare=False, repr=False)

    @property
    def external(self) -> End:
        return self.target.end if self.direction is JobDirection.OUTBOUND else self.source.end


def parse_syncs(
    raw: Any,
    file: str,
    upstreams: Mapping[str, Upstream],
    environ: Mapping[str, str] | None = None,
) -> tuple[SyncJob, ...]:
    """The ``syncs:`` list of ``file``; ConfigError listing every problem. Auth values are
    read from ``environ`` (default: the process environment) and must be set."""
    parser = _Parser(file, upstreams, os.environ if environ is None else environ)
    jobs = parser.parse(raw)
    if parser.problems:
        raise ConfigError("\n".join(parser.problems))
    return jobs


class _Parser:
    def __init__(
        self, source: str, upstreams: Mapping[str, Upstream], environ: Mapping[str, str]
    ) -> None:
        self.source = source
        self.upstreams = upstreams
        self.environ = environ
        self.problems: list[str] = []

    def fail(self, where: str, msg: str) -> None:
        self.problems.append(f"{self.source}: {where}: {msg}")

    def unknown(self, d: Mapping[str, Any], known: set[str], where: str) -> None:
        for key in d:
            if key not in known:
                self.fail(
                    where, f"unknown field {key!r} (expected one of {', '.join(sorted(known))})"
                )

    def parse(self, raw: Any) -> tuple[SyncJob, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.fail("field 'syncs'", "must be a list of sync jobs")
            return ()
        out: list[SyncJob] = []
        seen: set[str] = set()
        for i, spec in enumerate(raw):
            name = spec.get("name") if isinstance(spec, dict) else None
            where = f"syncs[{i}]" + (f" {name!r}" if isinstance(name, str) else "")
            if not isinstance(spec, dict):
                self.fail(where, "must be a mapping")
                continue
            job = _JobParser(self, where).parse(spec)
            if job is None:
                continue
            if job.name in seen:
                self.fail(f"{where}: field 'name'", f"duplicate sync job name {job.name!r}")
            seen.add(job.name)
            out.append(job)
        return tuple(out)


class _JobParser:
    """One entry of ``syncs:``; problems go to the file's parser."""

    def __init__(self, parser: _Parser, where: str) -> None:
        self.p = parser
        self.where = where

    def fail(self, name: str, msg: str) -> None:
        self.p.fail(f"{self.where}: field {name}", msg)

    def parse(self, spec: dict[str, Any]) -> SyncJob | None:
        self.p.unknown(spec, JOB_FIELDS, self.where)
        before = len(self.p.problems)
        name = self._name(spec.get("name"))
        tenant = self._tenant(spec.get("tenant"))
        system = self._system(spec.get("external_system"))
        etype = spec.get("entity_type")
        if not is_name(etype):
            self.fail("'entity_type'", f"required; a name such as rate or invoice, got {etype!r}")
        direction = self._direction(spec.get("direction"))
        schedule = self._schedule(spec)
        batch = self._int(spec, "batch_size", DEFAULT_BATCH_SIZE, 1, MAX_BATCH_SIZE)
        retries = self._int(spec, "max_retries", DEFAULT_MAX_RETRIES, 0, MAX_RETRIES)
        ends = _Ends(self, direction)
        source = ends.source(spec.get("source"))
        target = ends.target(spec.get("target"))
        translate, trie = self._translate(spec.get("translate"), etype, source)
        on_unknown = spec.get("on_unknown", "fail")
        if on_unknown not in ("fail", "pass"):
            self.fail("'on_unknown'", f"must be fail or pass, got {on_unknown!r}")
        if len(self.p.problems) > before:
            return None
        assert name and tenant and system and direction and schedule and source and target
        return SyncJob(
            name=name,
            tenant_id=tenant,
            external_system=system,
            entity_type=str(etype),
            direction=direction,
            schedule=schedule,
            source=source,
            target=target,
            auth=ends.auth,
            batch_size=batch,
            max_retries=retries,
            translate=translate,
            pass_unknown=on_unknown == "pass",
            where=f"{self.p.source}: {self.where}",
            trie=trie,
        )

    def _name(self, raw: Any) -> str | None:
        if not isinstance(raw, str) or not ROUTE_NAME_RE.match(raw):
            self.fail("'name'", "required; lowercase letters, digits, '_', '-', '.'")
            return None
        return raw

    def _tenant(self, raw: Any) -> uuid.UUID | None:
        try:
            if isinstance(raw, str):
                return uuid.UUID(raw)
        except ValueError:
            pass
        self.fail("'tenant'", f"required; the tenant's id (a UUID), got {raw!r}")
        return None

    def _system(self, raw: Any) -> str | None:
        if not isinstance(raw, str) or not SYSTEM_RE.match(raw):
            self.fail("'external_system'", f"required; a name such as revenue_mgmt, got {raw!r}")
            return None
        return raw

    def _direction(self, raw: Any) -> JobDirection | None:
        try:
            return JobDirection(raw)
        except ValueError:
            self.fail("'direction'", f"required; outbound or inbound, got {raw!r}")
            return None

    def _schedule(self, spec: Mapping[str, Any]) -> Schedule | None:
        interval, cron = spec.get("interval"), spec.get("cron")
        if (interval is None) == (cron is None):
            self.fail("'schedule'", "give exactly one of interval (e.g. 15m) or cron")
            return None
        if cron is not None:
            if not isinstance(cron, str) or not croniter.is_valid(cron):
                self.fail("'cron'", f"not a cron expression such as '0 2 * * *', got {cron!r}")
                return None
            return Schedule(cron=cron)
        seconds = _seconds(interval)
        if seconds is None or not MIN_INTERVAL <= seconds <= MAX_INTERVAL:
            self.fail(
                "'interval'",
                f"must be a duration from 1s to 31d such as 900, 15m or 1h, got {interval!r}",
            )
            return None
        return Schedule(interval=seconds)

    def _int(self, d: Mapping[str, Any], key: str, default: int, lo: int, hi: int) -> int:
        v = d.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            self.fail(f"{key!r}", f"must be an integer in [{lo}, {hi}], got {v!r}")
            return default
        return v

    def _translate(
        self, raw: Any, etype: Any, source: Source | None
    ) -> tuple[tuple[tuple[str, str], ...], Trie]:
        """The item pointers to translate; the item's own id is always one of them."""
        fields: list[tuple[str, str]] = []
        if raw is not None and not isinstance(raw, dict):
            self.fail("'translate'", "must map pointers such as /room_type_id to entity types")
            raw = None
        for pointer, entity in (raw or {}).items():
            try:
                parse_pointer(pointer)
            except ValueError as exc:
                self.fail(f"'translate'.{pointer}", str(exc))
                continue
            if not is_name(entity):
                self.fail(
                    f"'translate'.{pointer}",
                    f"entity type must look like reservation or room_type, got {entity!r}",
                )
                continue
            fields.append((pointer, entity))
        if source is not None and is_name(etype):
            if any(p == source.id for p, _ in fields):
                self.fail(f"'translate'.{source.id}", "the item's id is translated already")
            else:
                fields.insert(0, (source.id, str(etype)))
        try:
            trie = compile_pointers(fields)
        except ValueError as exc:
            self.fail("'translate'", str(exc))
            trie = Trie()
        return tuple(fields), trie


def _seconds(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, str):
        m = INTERVAL_RE.match(raw.strip())
        if m:
            return float(m.group(1)) * UNITS[m.group(2)]
    return None


class _Ends:
    """The source and target of one job: which is internal and which external depends on
    the direction; the external one may carry ``auth``."""

    def __init__(self, job: _JobParser, direction: JobDirection | None) -> None:
        self.job = job
        self.direction = direction
        self.auth = Auth()

    def _external(self, side: str) -> bool | None:
        if self.direction is None:
            return None
        outbound = self.direction is JobDirection.OUTBOUND
        return outbound if side == "target" else not outbound

    def source(self, raw: Any) -> Source | None:
        if not isinstance(raw, dict):
            self.job.fail("'source'", "required; a mapping with upstream and path, or url")
            return None
        self.job.p.unknown(raw, SOURCE_FIELDS, f"{self.job.where}: field 'source'")
        before = len(self.job.p.problems)
        end = self._end(raw, "source")
        items = self._pointer(raw, "'source'", "items", "/items")
        item_id = self._pointer(raw, "'source'", "id", "/id")
        version = self._pointer(raw, "'source'", "version", None)
        next_cursor = self._pointer(raw, "'source'", "next_cursor", "/next_cursor")
        params = [self._param(raw, k) for k in ("cursor_param", "limit_param")]
        if end is None or len(self.job.p.problems) > before:
            return None
        return Source(
            end,
            items=items or "",
            id=item_id or "/id",
            version=version,
            next_cursor=next_cursor,
            cursor_param=params[0],
            limit_param=params[1],
        )

    def target(self, raw: Any) -> Target | None:
        if not isinstance(raw, dict):
            self.job.fail("'target'", "required; a mapping with url, or upstream and path")
            return None
        self.job.p.unknown(raw, TARGET_FIELDS, f"{self.job.where}: field 'target'")
        before = len(self.job.p.problems)
        end = self._end(raw, "target")
        items_field = raw.get("items_field", "items")
        if not isinstance(items_field, str) or not items_field:
            self.job.fail("'target'.items_field", f"must be a field name, got {items_field!r}")
        failed = self._failed(raw.get("failed"))
        if end is None or len(self.job.p.problems) > before:
            return None
        if failed is None:
            return Target(end, str(items_field))
        return Target(end, str(items_field), *failed)

    def _failed(self, raw: Any) -> tuple[str, str, str] | None:
        """target.failed: where the answer lists refused items."""
        if raw is None:
            return None
        w = "'target'.failed"
        if not isinstance(raw, dict):
            self.job.fail(w, "must be a mapping such as {items: /failed, id: /id, error: /error}")
            return None
        self.job.p.unknown(raw, FAILED_FIELDS, f"{self.job.where}: field {w}")
        items = self._pointer(raw, w, "items", "/failed") or "/failed"
        item_id = self._pointer(raw, w, "id", "/id") or "/id"
        error = self._pointer(raw, w, "error", "/error") or "/error"
        return items, item_id, error

    def _end(self, raw: Mapping[str, Any], side: str) -> End | None:
        external = self._external(side)
        timeout = raw.get("timeout", DEFAULT_TIMEOUT)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= MAX_TIMEOUT
        ):
            self.job.fail(f"'{side}'.timeout", f"must be seconds in (0, {MAX_TIMEOUT:g}]")
            timeout = DEFAULT_TIMEOUT
        if external is None:
            return None
        if external:
            return self._external_end(raw, side, float(timeout))
        return self._internal_end(raw, side, float(timeout))

    def _external_end(self, raw: Mapping[str, Any], side: str, timeout: float) -> End | None:
        for key in ("upstream", "path"):
            if key in raw:
                self.job.fail(f"'{side}'.{key}", f"{self._dir()} jobs' {side} is an external url")
        self.auth = self._auth(raw.get("auth"), side)
        url = self._url(raw.get("url"), side)
        return End(external_url=url, timeout=timeout) if url is not None else None

    def _internal_end(self, raw: Mapping[str, Any], side: str, timeout: float) -> End | None:
        for key in ("url", "auth"):
            if key in raw:
                self.job.fail(f"'{side}'.{key}", f"{self._dir()} jobs' {side} is an upstream path")
        upstream = self._upstream(raw.get("upstream"), side)
        path = raw.get("path")
        if not isinstance(path, str) or not path.startswith("/") or "?" in path:
            self.job.fail(
                f"'{side}'.path", f"required; a path such as /rates/changes, got {path!r}"
            )
            return None
        if upstream is None:
            return None
        return End(upstream=upstream, path=path, timeout=timeout)

    def _dir(self) -> str:
        return str(self.direction.value) if self.direction is not None else ""

    def _upstream(self, name: Any, side: str) -> Upstream | None:
        ups = self.job.p.upstreams
        if name not in ups:
            known = ", ".join(sorted(ups)) or "none defined"
            self.job.fail(f"'{side}'.upstream", f"unknown upstream {name!r} (known: {known})")
            return None
        return ups[name]

    def _url(self, raw: Any, side: str) -> URL | None:
        w = f"'{side}'.url"
        if not isinstance(raw, str) or not raw:
            self.job.fail(w, "required; the partner's endpoint such as https://rms.example/api")
            return None
        try:
            url = URL(raw)
        except ValueError as exc:
            self.job.fail(w, f"not a URL ({exc})")
            return None
        if url.scheme not in ("http", "https") or not url.host:
            self.job.fail(w, f"must be an absolute http(s) URL, got {raw!r}")
            return None
        if url.user is not None or url.password is not None:
            self.job.fail(w, "must not carry credentials; use 'auth'")
            return None
        if url.fragment or url.query_string:
            self.job.fail(w, "must not carry a query or fragment")
            return None
        return url

    def _pointer(
        self, raw: Mapping[str, Any], label: str, key: str, default: str | None
    ) -> str | None:
        """A pointer field (problems are recorded; the caller checks the count)."""
        value = raw.get(key, default)
        if value is None or (key == "items" and value == ""):
            return None
        try:
            parse_pointer(value)
        except ValueError as exc:
            self.job.fail(f"{label}.{key}", str(exc))
            return None
        return str(value)

    def _param(self, raw: Mapping[str, Any], key: str) -> str:
        value = raw.get(key, key.removesuffix("_param"))
        if not isinstance(value, str) or not PARAM_NAME_RE.match(value):
            self.job.fail(f"'source'.{key}", f"must be a query parameter name, got {value!r}")
            return key
        return value

    def _auth(self, raw: Any, side: str) -> Auth:
        w = f"'{side}'.auth"
        if raw is None:
            return Auth()
        if not isinstance(raw, dict):
            self.job.fail(w, "must be a mapping such as {type: bearer, token_env: RMS_TOKEN}")
            return Auth()
        self.job.p.unknown(
            raw,
            {"type", "token_env", "username", "password_env", "headers"},
            f"{self.job.where}: field {w}",
        )
        try:
            kind = AuthType(str(raw.get("type")))
        except ValueError:
            self.job.fail(f"{w}.type", "must be none, bearer, basic or headers")
            return Auth()
        if kind is AuthType.BEARER:
            return Auth(kind, secret_env=self._env(raw, "token_env", w))
        if kind is AuthType.BASIC:
            user = raw.get("username")
            if not isinstance(user, str) or not user or ":" in user:
                self.job.fail(f"{w}.username", "required; a user name without ':'")
            return Auth(kind, username=str(user), secret_env=self._env(raw, "password_env", w))
        if kind is AuthType.HEADERS:
            return Auth(kind, header_envs=self._headers(raw.get("headers"), w))
        return Auth()

    def _env(self, raw: Mapping[str, Any], key: str, w: str) -> str | None:
        name = raw.get(key)
        if not isinstance(name, str) or not ENV_RE.match(name):
            self.job.fail(f"{w}.{key}", f"required; an environment variable name, got {name!r}")
            return None
        if not self.job.p.environ.get(name):
            self.job.fail(f"{w}.{key}", f"environment variable {name} is not set")
            return None
        return name

    def _headers(self, raw: Any, w: str) -> tuple[tuple[str, str], ...]:
        if not isinstance(raw, dict) or not raw:
            self.job.fail(f"{w}.headers", "required; header name → environment variable name")
            return ()
        out = []
        for header, env in raw.items():
            if not isinstance(header, str) or not HEADER_RE.match(header):
                self.job.fail(f"{w}.headers", f"{header!r} is not a header name")
                continue
            name = self._env({header: env}, header, f"{w}.headers")
            if name is not None:
                out.append((header, name))
        return tuple(out)
