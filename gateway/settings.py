"""Typed settings read once from ``GATEWAY_*`` environment variables.

Every value is parsed and checked at start; a bad value raises :class:`SettingsError`
naming the variable, so the process fails fast instead of misbehaving later.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gateway.errors import SettingsError

T = TypeVar("T")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Secret:
    """A string that never shows itself in ``repr``/``str`` (logs, tracebacks)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def mask_url(url: str) -> str:
    """Hide the password of a database URL, keeping the rest readable."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    if ":" in creds:
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:****@{host}"
    return url


# -- the declaration ----------------------------------------------------------------------
# Each Settings field below is declared once with setting(): its environment variable, its
# default, how it is parsed and checked, and its description. Settings.from_env reads the
# fields in this order (the first bad one is reported), and `gateway settings-doc` renders
# the same declaration as docs/configuration.md.

_DATABASE = "Database and local state"
_SERVING = "Serving and proxying"
_CAPTURE = "Capture (api_logs)"
_LOGS = "Process logs"
_MAPPING = "ID mapping cache and sync"
_WEBHOOKS = "Outbound webhooks"
_SECRETS = "Secrets at rest"
SECTIONS = (_DATABASE, _SERVING, _CAPTURE, _LOGS, _MAPPING, _WEBHOOKS, _SECRETS)

Parse = Callable[[str], Any]  # raw text (stripped, non-empty) → value; ValueError if bad
Read = Callable[[str | None, Any], Any]  # (raw text or None, default) → value


@dataclass(frozen=True, slots=True)
class Var:
    """How one Settings field is read from the environment, and how it is documented."""

    env: str  # the environment variable
    section: str  # heading in docs/configuration.md
    doc: str  # one-line description (Markdown)
    parse: Parse | None = None  # read through _Reader: unset or blank → the default
    minimum: float | None = None  # parsed numbers below it are refused
    read: Read | None = None  # instead of parse: takes the raw value itself (no stripping)
    kind: str = ""  # the type column; default: from parse


def setting(
    env: str,
    default: T,
    section: str,
    doc: str,
    parse: Parse | None = None,
    *,
    minimum: float | None = None,
    read: Read | None = None,
    kind: str = "",
) -> T:
    """A Settings field: its default and, as metadata, its :class:`Var`. (Ruff's RUF009
    cannot tell this returns a ``dataclasses.field``: hence its noqa on a few fields.)"""
    if (parse is None) == (read is None):
        raise TypeError(f"{env}: give exactly one of parse and read")
    var = Var(env, section, doc, parse, minimum, read, kind)
    return dataclasses.field(default=default, metadata={"var": var})


def _bool(raw: str) -> bool:
    """true/false, 1/0, yes/no, on/off."""
    value = raw.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError("use true or false")


def _seconds_list(raw: str) -> tuple[float, ...]:
    """Comma-separated non-negative seconds, e.g. ``0,5,300``."""
    values = tuple(float(p) for p in _csv(raw))
    if not values or any(v < 0 or v != v for v in values):
        raise ValueError("a non-empty list of non-negative numbers")
    return values


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(p.strip().lower() for p in raw.split(",") if p.strip())


def _networks(raw: str) -> tuple[IPNetwork, ...]:
    """Comma-separated CIDRs or addresses, e.g. ``10.0.0.0/8,127.0.0.1``."""
    return tuple(ipaddress.ip_network(p, strict=False) for p in _csv(raw))


def _level(raw: str) -> str:
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return level


def _log_format(raw: str) -> str:
    if raw.lower() not in ("json", "text"):
        raise ValueError("json or text")
    return raw.lower()


def _secret(raw: str | None, default: Any) -> Any:
    """Unset or empty: the default; anything else as it is, hidden from repr."""
    return Secret(raw) if raw else default


def _path(raw: str | None, default: Any) -> Any:
    return Path(raw) if raw else default


DATA_DIR_NAME = ".gateway"  # the default data directory's name


def find_data_dir(start: Path | None = None) -> Path:
    """The nearest ``.gateway/`` in the working directory or one of its parents (as git
    finds ``.git``); ``.gateway`` in the working directory when there is none."""
    here = Path.cwd() if start is None else start
    for folder in (here, *here.parents):
        if (folder / DATA_DIR_NAME).is_dir():
            return Path(DATA_DIR_NAME) if folder == here else folder / DATA_DIR_NAME
    return Path(DATA_DIR_NAME)


def _data_dir(raw: str | None, default: Any) -> Any:
    return Path(raw) if raw else find_data_dir()


def _fernet_keys(raw: str | None, default: Any) -> Any:
    if raw is None or not raw.strip():
        return default
    from gateway.crypto import parse_keys  # SettingsError naming the variable

    return tuple(Secret(k.decode()) for k in parse_keys(raw))


_KINDS: dict[Parse, str] = {
    int: "integer",
    float: "number",
    _bool: "boolean",
    _csv: "list of names",
    _networks: "list of CIDRs",
    _seconds_list: "list of seconds",
    _level: "log level",
    _log_format: "`json` or `text`",
}

_DAY = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Settings:
    """Gateway configuration: one field per ``GATEWAY_*`` variable (see :func:`setting`)."""

    database_url: Secret | None = setting(  # noqa: RUF009 (a field, see setting)
        "GATEWAY_DATABASE_URL",
        None,
        _DATABASE,
        "PostgreSQL DSN, e.g. `postgresql://gateway:…@db:5432/gateway` (logged with its "
        "password masked). Unset: an embedded PostgreSQL server is started under "
        "`$GATEWAY_DATA_DIR/pg` (development)",
        read=_secret,
        kind="URL (secret)",
    )
    embedded_database: bool = setting(
        "GATEWAY_EMBEDDED_DATABASE",
        True,
        _DATABASE,
        "`false`: never start the embedded server, so `GATEWAY_DATABASE_URL` is required "
        "(the Docker image sets `false`)",
        _bool,
    )
    logs_database_url: Secret | None = setting(  # noqa: RUF009 (a field, see setting)
        "GATEWAY_LOGS_DATABASE_URL",
        None,
        _DATABASE,
        "PostgreSQL DSN of the database that holds `api_logs` (its partitions, retention, "
        "archive, journal replays, log search). Unset: the same database as everything "
        "else. See [a database of its own](capture.md#a-database-of-its-own)",
        read=_secret,
        kind="URL (secret)",
    )
    data_dir: Path = setting(  # noqa: RUF009 (a field, see setting)
        "GATEWAY_DATA_DIR",
        Path(DATA_DIR_NAME),
        _DATABASE,
        "this instance's local state: embedded database (`pg/`), api_logs journal and "
        "write-ahead log (`journal/`), generated development key (`encryption.key`), "
        "metric files of `serve --workers` (`metrics/`); one per instance, on local disk. "
        "Unset: the nearest `.gateway/` in the working directory or a parent (as git finds "
        "`.git`), else `.gateway` in the working directory",
        read=_data_dir,
        kind="path",
    )
    db_pool_min: int = setting(
        "GATEWAY_DB_POOL_MIN",
        1,
        _DATABASE,
        "connections the asyncpg pool of each process keeps open (at most `GATEWAY_DB_POOL_MAX`)",
        int,
        minimum=0,
    )
    db_pool_max: int = setting(
        "GATEWAY_DB_POOL_MAX",
        10,
        _DATABASE,
        "most connections of that pool; each serving process opens 6 more (webhook loop, "
        "mapping LISTEN): see [the connection budget](operations.md#connection-budget)",
        int,
        minimum=1,
    )
    capture_max_body_bytes: int = setting(
        "GATEWAY_CAPTURE_MAX_BODY_BYTES",
        64 * 1024,
        _CAPTURE,
        "bytes of each body kept in `api_logs` (a route's `capture.max_body_bytes` may "
        "override); larger bodies are truncated and flagged",
        int,
        minimum=0,
    )
    capture_redact_headers: tuple[str, ...] = setting(
        "GATEWAY_CAPTURE_REDACT_HEADERS",
        (),
        _CAPTURE,
        "header names redacted everywhere (also as field and query names), added to the "
        "built-in list",
        _csv,
    )
    capture_redact_fields: tuple[str, ...] = setting(
        "GATEWAY_CAPTURE_REDACT_FIELDS",
        (),
        _CAPTURE,
        "field names redacted everywhere (JSON keys, text `name: value` / `name=value`, "
        "query parameters), added to the built-in list",
        _csv,
    )
    log_queue_max: int = setting(
        "GATEWAY_LOG_QUEUE_MAX",
        100_000,
        _CAPTURE,
        "api_logs rows held in memory before they spill straight to the journal",
        int,
        minimum=1,
    )
    log_batch_size: int = setting(
        "GATEWAY_LOG_BATCH_SIZE",
        1000,
        _CAPTURE,
        "rows per COPY into `api_logs`",
        int,
        minimum=1,
    )
    log_flush_interval: float = setting(
        "GATEWAY_LOG_FLUSH_INTERVAL",
        0.5,
        _CAPTURE,
        "seconds before a partial batch is COPYed",
        float,
        minimum=0.001,
    )
    retention_days: int = setting(
        "GATEWAY_RETENTION_DAYS",
        30,
        _CAPTURE,
        "`api_logs` partitions older than this many days are dropped",
        int,
        minimum=1,
    )
    partitions_ahead: int = setting(
        "GATEWAY_PARTITIONS_AHEAD",
        3,
        _CAPTURE,
        "daily `api_logs` partitions created in advance",
        int,
        minimum=1,
    )
    archive_dir: Path | None = setting(  # noqa: RUF009 (a field, see setting)
        "GATEWAY_ARCHIVE_DIR",
        None,
        _CAPTURE,
        "set: each partition past retention is first exported there "
        "(`api_logs_pYYYYMMDD.csv.gz`, in the drop's transaction)",
        read=_path,
        kind="path",
    )
    maintenance_interval: float = setting(
        "GATEWAY_MAINTENANCE_INTERVAL",
        3600.0,
        _CAPTURE,
        "seconds between maintenance runs (partitions, archive, webhook pruning), each "
        "under an advisory lock so one process does it",
        float,
        minimum=1.0,
    )
    trusted_proxies: tuple[IPNetwork, ...] = setting(
        "GATEWAY_TRUSTED_PROXIES",
        (),
        _SERVING,
        "CIDRs or addresses whose `X-Forwarded-For`/`-Proto`/`-Host` are believed",
        _networks,
    )
    max_request_bytes: int = setting(
        "GATEWAY_MAX_REQUEST_BYTES",
        100 * 1024 * 1024,
        _SERVING,
        "request bodies larger than this are refused with 413 `payload_too_large`",
        int,
        minimum=0,
    )
    stream_threshold_bytes: int = setting(
        "GATEWAY_STREAM_THRESHOLD_BYTES",
        1024 * 1024,
        _SERVING,
        "bodies above this (or of unknown length) are streamed, not buffered; also the "
        "largest body or WebSocket message ID translation reads",
        int,
        minimum=0,
    )
    client_timeout: float = setting(
        "GATEWAY_CLIENT_TIMEOUT",
        75.0,
        _SERVING,
        "seconds a client may stay silent before its request headers are complete (also "
        "between requests on a kept-alive connection; then it is cut off) and between reads "
        "of its request body (then 408 `request_timeout`)",
        float,
        minimum=0.1,
    )
    max_header_bytes: int = setting(
        "GATEWAY_MAX_HEADER_BYTES",
        32 * 1024,
        _SERVING,
        "request headers above this many bytes (all lines together) get 431 "
        "`headers_too_large` JSON (aiohttp's parser stops a line above 64 KiB with 400)",
        int,
        minimum=1024,
    )
    max_headers: int = setting(
        "GATEWAY_MAX_HEADERS",
        100,
        _SERVING,
        "more request headers than this get 431 `headers_too_large` (aiohttp's parser "
        "stops at 1,024 with 400)",
        int,
        minimum=8,
    )
    shutdown_timeout: float = setting(
        "GATEWAY_SHUTDOWN_TIMEOUT",
        30.0,
        _SERVING,
        "seconds in-flight requests, webhook attempts and the api_logs drain get after "
        "SIGTERM/SIGINT; the process exits within 3 s more, whatever the database does",
        float,
        minimum=0.0,
    )
    db_retry_interval: float = setting(
        "GATEWAY_DB_RETRY_INTERVAL",
        2.0,
        _DATABASE,
        "seconds between reconnect attempts while PostgreSQL is down (log writer, mapping "
        "listener)",
        float,
        minimum=0.05,
    )
    log_wal: bool = setting(
        "GATEWAY_LOG_WAL",
        True,
        _CAPTURE,
        "every api_logs row goes to the write-ahead log at the end of its event-loop turn, "
        "so a killed process loses none (`false`: up to a flush interval of rows is lost "
        "on SIGKILL, for a little less CPU per call)",
        _bool,
    )
    db_request_timeout: float = setting(
        "GATEWAY_DB_REQUEST_TIMEOUT",
        1.0,
        _DATABASE,
        "seconds a database call on the request path (API-key and mapping lookups, route "
        "events) may take, a hung server included, before its fallback (cached key, 503 "
        "JSON, event counted as not stored); `/readyz` waits 2 s",
        float,
        minimum=0.05,
    )
    api_key_cache_ttl: float = setting(
        "GATEWAY_API_KEY_CACHE_TTL",
        10.0,
        _SERVING,
        "seconds an API-key lookup is trusted before it is refreshed (a key revoked "
        "through another process stops working within about this long)",
        float,
        minimum=0.0,
    )
    log_level: str = setting(
        "GATEWAY_LOG_LEVEL",
        "INFO",
        _LOGS,
        "process log level: DEBUG, INFO, WARNING, ERROR or CRITICAL",
        _level,
    )
    log_format: str = setting(
        "GATEWAY_LOG_FORMAT",
        "json",
        _LOGS,
        "process log lines on stdout: `json` or `text`",
        _log_format,
    )
    access_log: bool = setting(
        "GATEWAY_ACCESS_LOG",
        False,
        _LOGS,
        "one process-log line per proxied call (`api_logs` has every call anyway)",
        _bool,
    )
    sync_stats_interval: float = setting(
        "GATEWAY_SYNC_STATS_INTERVAL",
        15.0,
        _MAPPING,
        "seconds between the sync lag/count queries behind the sync metrics",
        float,
        minimum=0.1,
    )
    mapping_cache_entries: int = setting(
        "GATEWAY_MAPPING_CACHE_ENTRIES",
        200_000,
        _MAPPING,
        "most entries of the ID mapping cache, per process",
        int,
        minimum=1,
    )
    mapping_cache_bytes: int = setting(
        "GATEWAY_MAPPING_CACHE_BYTES",
        64 * 1024 * 1024,
        _MAPPING,
        "approximate bytes of the ID mapping cache, per process",
        int,
        minimum=1024,
    )
    mapping_cache_ttl: float = setting(
        "GATEWAY_MAPPING_CACHE_TTL",
        300.0,
        _MAPPING,
        "seconds a cached mapping is trusted (changes normally arrive sooner, by NOTIFY)",
        float,
        minimum=0.0,
    )
    mapping_cache_negative_ttl: float = setting(
        "GATEWAY_MAPPING_CACHE_NEGATIVE_TTL",
        2.0,
        _MAPPING,
        'seconds a cached "no mapping" is trusted',
        float,
        minimum=0.0,
    )
    webhook_allow_private: bool = setting(
        "GATEWAY_WEBHOOK_ALLOW_PRIVATE",
        False,
        _WEBHOOKS,
        "deliver to loopback, private, link-local and metadata addresses (tests, labs)",
        _bool,
    )
    webhook_allowed_networks: tuple[IPNetwork, ...] = setting(
        "GATEWAY_WEBHOOK_ALLOWED_NETWORKS",
        (),
        _WEBHOOKS,
        "CIDRs allowed although private (an allow list)",
        _networks,
    )
    webhook_allow_http: bool = setting(
        "GATEWAY_WEBHOOK_ALLOW_HTTP",
        False,
        _WEBHOOKS,
        "accept `http://` endpoint URLs (default: https only)",
        _bool,
    )
    webhook_retry_schedule: tuple[float, ...] = setting(
        "GATEWAY_WEBHOOK_RETRY_SCHEDULE",
        (0, 5, 300, 1800, 7200, 18000, 36000, 36000),
        _WEBHOOKS,
        "default seconds before attempt 1, 2, … (±20 % jitter; Svix's schedule)",
        _seconds_list,
    )
    webhook_disable_after: float = setting(
        "GATEWAY_WEBHOOK_DISABLE_AFTER",
        5 * _DAY,
        _WEBHOOKS,
        "seconds a subscription may fail every attempt before it is disabled (5 days)",
        float,
        minimum=1.0,
    )
    webhook_poll_interval: float = setting(
        "GATEWAY_WEBHOOK_POLL_INTERVAL",
        1.0,
        _WEBHOOKS,
        "seconds between polls for due deliveries when no NOTIFY arrives",
        float,
        minimum=0.01,
    )
    webhook_lease_margin: float = setting(
        "GATEWAY_WEBHOOK_LEASE_MARGIN",
        10.0,
        _WEBHOOKS,
        "seconds a claim outlives the attempt timeout (then another process may take it)",
        float,
        minimum=0.1,
    )
    webhook_max_in_flight: int = setting(
        "GATEWAY_WEBHOOK_MAX_IN_FLIGHT",
        256,
        _WEBHOOKS,
        "attempts running at once, per process",
        int,
        minimum=1,
    )
    webhook_stats_interval: float = setting(
        "GATEWAY_WEBHOOK_STATS_INTERVAL",
        15.0,
        _WEBHOOKS,
        "seconds between refreshes of the pending/disabled gauges",
        float,
        minimum=0.1,
    )
    webhook_delivery: bool = setting(
        "GATEWAY_WEBHOOK_DELIVERY",
        True,
        _WEBHOOKS,
        "`false`: this process runs no delivery loop (the admin API and the outbox still work)",
        _bool,
    )
    webhook_retention_days: int = setting(
        "GATEWAY_WEBHOOK_RETENTION_DAYS",
        30,
        _WEBHOOKS,
        "finished deliveries, their attempts and then their events are deleted this long "
        "after they last changed (every maintenance interval, one process at a time)",
        int,
        minimum=1,
    )
    encryption_keys: tuple[Secret, ...] = setting(
        "GATEWAY_ENCRYPTION_KEYS",
        (),
        _SECRETS,
        "comma-separated Fernet keys for secrets at rest; the first encrypts, all decrypt "
        "(`gateway secrets rotate` re-encrypts under the first). Unset: a key is generated "
        "into `$GATEWAY_DATA_DIR/encryption.key` (mode 0600) with a warning (development only)",
        read=_fernet_keys,
        kind="list of keys (secret)",
    )

    @property
    def separate_logs_database(self) -> bool:
        """api_logs lives on a database other than the control one."""
        return self.logs_database_url is not None and self.logs_database_url != self.database_url

    @property
    def journal_dir(self) -> Path:
        return self.data_dir / "journal"

    @property
    def pgdata_dir(self) -> Path:
        return self.data_dir / "pg"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and check every ``GATEWAY_*`` variable; SettingsError names the first bad one."""
        e = os.environ if env is None else env
        r = _Reader(e)
        values: dict[str, Any] = {}
        for field, var in declared():
            if var.read is not None:
                values[field.name] = var.read(e.get(var.env), field.default)
            else:
                assert var.parse is not None
                values[field.name] = r.get(var.env, var.parse, field.default, var.minimum)
        settings = cls(**values)
        if settings.database_url is None and not settings.embedded_database:
            raise SettingsError(
                "GATEWAY_DATABASE_URL: required when GATEWAY_EMBEDDED_DATABASE=false "
                "(e.g. postgresql://gateway:…@db:5432/gateway)"
            )
        if settings.db_pool_min > settings.db_pool_max:
            raise SettingsError(
                "GATEWAY_DB_POOL_MIN: must not exceed GATEWAY_DB_POOL_MAX "
                f"({settings.db_pool_min} > {settings.db_pool_max})"
            )
        return settings


def declared() -> list[tuple[dataclasses.Field[Any], Var]]:
    """Every Settings field with its declaration, in reading order."""
    return [(f, f.metadata["var"]) for f in dataclasses.fields(Settings)]


# Environment variables that are not settings, documented with them.
OTHER_VARIABLES: tuple[tuple[str, str, str], ...] = (
    (
        "PROMETHEUS_MULTIPROC_DIR",
        "gateway/metrics.py",
        "set by `gateway serve --workers N` for its workers (`$GATEWAY_DATA_DIR/metrics`, "
        "emptied at start): metrics merged across workers. Do not set it yourself",
    ),
    (
        "GATEWAY_PORT",
        "gateway/__main__.py",
        "the default of `gateway serve --port` (8080 when unset); the Docker image sets it, "
        "and its HEALTHCHECK probes `/readyz` on it",
    ),
    (
        "GATEWAY_TEST_DATABASE_URL",
        "tests/",
        "test suite only: an admin DSN of a PostgreSQL server to use instead of the "
        "embedded one (each test gets its own database)",
    ),
    (
        "GATEWAY_TEST_LOGS_DATABASE_URL",
        "tests/",
        "test suite only: an admin DSN of a second PostgreSQL server for the two-database "
        "tests (`GATEWAY_LOGS_DATABASE_URL`); unset, a second embedded server is started",
    ),
)


def settings_doc() -> str:
    """docs/configuration.md: the Markdown reference of every setting (``gateway settings-doc``)."""
    lines = [
        "# Configuration",
        "",
        "<!-- Generated from gateway/settings.py by `gateway settings-doc > "
        "docs/configuration.md`; do not edit by hand (tests/unit/test_docs.py compares). -->",
        "",
        "The gateway reads these settings once, at start, from environment variables; an",
        "unset or empty variable takes its default. A bad value stops the gateway (exit status",
        "2) with a message naming the variable, e.g. `GATEWAY_RETENTION_DAYS: expected int, got",
        "'ten'`. Booleans are `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`), lists are",
        "comma-separated, durations are in seconds and sizes in bytes.",
    ]
    rows = declared()
    for section in SECTIONS:
        lines += ["", f"## {section}", "", "| variable | type | default | meaning |"]
        lines.append("|---|---|---|---|")
        for field, var in rows:
            if var.section == section:
                cells = (f"`{var.env}`", _kind(var), _default(field.default), var.doc)
                lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += ["", "## Other environment variables", "", "| variable | read by | meaning |"]
    lines.append("|---|---|---|")
    for name, reader, doc in OTHER_VARIABLES:
        lines.append(f"| `{name}` | {reader} | {_cell(doc)} |")
    return "\n".join(lines) + "\n"


def _kind(var: Var) -> str:
    kind = var.kind or (_KINDS.get(var.parse, "text") if var.parse is not None else "text")
    if var.minimum is not None:
        kind += f" ≥ {_number(var.minimum)}"
    return kind


def _default(value: Any) -> str:
    if value is None or value == ():
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return "`" + ",".join(_number(v) for v in value) + "`"
    if isinstance(value, int | float):
        return f"`{_number(value)}`"
    return f"`{value}`"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def get(
        self,
        name: str,
        cast: Callable[[str], T],
        default: T,
        minimum: float | None = None,
    ) -> T:
        raw = self._env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            value = cast(raw.strip())
        except (ValueError, TypeError) as exc:
            kind = getattr(cast, "__name__", "value").lstrip("_")
            raise SettingsError(f"{name}: expected {kind}, got {raw!r} ({exc})") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise SettingsError(f"{name}: expected a finite number, got {raw!r}")
        if minimum is not None and isinstance(value, int | float) and value < minimum:
            raise SettingsError(f"{name}: must be >= {minimum}, got {raw!r}")
        return value
