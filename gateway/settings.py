"""Typed settings read once from ``GATEWAY_*`` environment variables.

Every value is parsed and checked at start; a bad value raises :class:`SettingsError`
naming the variable, so the process fails fast instead of misbehaving later.
"""

from __future__ import annotations

import dataclasses
import ipaddress
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


@dataclass(frozen=True, slots=True)
class Settings:
    """Gateway configuration. Field comments name the environment variable."""

    # GATEWAY_DATABASE_URL: PostgreSQL DSN; unset → embedded server under data_dir/pg
    database_url: Secret | None = None
    # GATEWAY_EMBEDDED_DATABASE: false (production images) → GATEWAY_DATABASE_URL required
    embedded_database: bool = True
    # GATEWAY_DATA_DIR: embedded database, log journal
    data_dir: Path = Path(".gateway")
    # GATEWAY_DB_POOL_MIN / GATEWAY_DB_POOL_MAX
    db_pool_min: int = 1
    db_pool_max: int = 10
    # GATEWAY_CAPTURE_MAX_BODY_BYTES: bytes of each body kept in api_logs (routes may lower it)
    capture_max_body_bytes: int = 64 * 1024
    # GATEWAY_CAPTURE_REDACT_HEADERS / _FIELDS: comma lists added to the built-in ones
    capture_redact_headers: tuple[str, ...] = ()
    capture_redact_fields: tuple[str, ...] = ()
    # GATEWAY_LOG_QUEUE_MAX: rows held in memory before spilling straight to the journal
    log_queue_max: int = 100_000
    # GATEWAY_LOG_BATCH_SIZE / GATEWAY_LOG_FLUSH_INTERVAL: COPY when either is reached
    log_batch_size: int = 1000
    log_flush_interval: float = 0.5
    # GATEWAY_RETENTION_DAYS: api_logs partitions older than this are dropped
    retention_days: int = 30
    # GATEWAY_PARTITIONS_AHEAD: daily partitions created in advance
    partitions_ahead: int = 3
    # GATEWAY_ARCHIVE_DIR: set → each partition is exported there (gzip CSV) before its drop
    archive_dir: Path | None = None
    # GATEWAY_MAINTENANCE_INTERVAL: seconds between partition maintenance runs
    maintenance_interval: float = 3600.0
    # GATEWAY_TRUSTED_PROXIES: CIDRs whose X-Forwarded-For is believed
    trusted_proxies: tuple[IPNetwork, ...] = ()
    # GATEWAY_MAX_REQUEST_BYTES: request bodies larger than this are refused with 413
    max_request_bytes: int = 100 * 1024 * 1024
    # GATEWAY_STREAM_THRESHOLD_BYTES: bodies above this (or of unknown size) are streamed
    stream_threshold_bytes: int = 1024 * 1024
    # GATEWAY_CLIENT_TIMEOUT: seconds a client may stay silent before its request headers
    # are complete (also between requests on a kept-alive connection) and between reads of
    # its request body; then it is cut off (headers) or answered 408 (body)
    client_timeout: float = 75.0
    # GATEWAY_MAX_HEADER_BYTES / GATEWAY_MAX_HEADERS: request headers above these (all lines
    # together / how many) are refused with 431 JSON (aiohttp's own parser stops at 64 KiB
    # per line and 1,024 headers with a plain 400 before the gateway sees the request)
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    # GATEWAY_SHUTDOWN_TIMEOUT: seconds given to in-flight requests and the log drain
    shutdown_timeout: float = 30.0
    # GATEWAY_DB_RETRY_INTERVAL: seconds between reconnect probes while the database is down
    db_retry_interval: float = 2.0
    # GATEWAY_LOG_WAL: write every api_logs row to the write-ahead log at the end of its
    # event-loop turn, so a killed process loses none (false: up to a flush interval of
    # rows is lost on SIGKILL, for a little less CPU per call; see bench/RESULTS.md)
    log_wal: bool = True
    # GATEWAY_DB_REQUEST_TIMEOUT: seconds a database call on the request path (key and
    # mapping lookups, route events, /readyz) may take, hung server included, before its
    # fallback (cached key, 503 JSON, event counted as not stored) is used
    db_request_timeout: float = 1.0
    # GATEWAY_API_KEY_CACHE_TTL: seconds an API-key lookup is trusted before it is refreshed
    # (a key revoked through another process stops working within about this long)
    api_key_cache_ttl: float = 10.0
    # GATEWAY_ENCRYPTION_KEYS: comma-separated Fernet keys; the first encrypts, all decrypt.
    # Unset: a key generated into data_dir/encryption.key (development only).
    encryption_keys: tuple[Secret, ...] = ()
    # GATEWAY_LOG_LEVEL: DEBUG, INFO, WARNING, ERROR; GATEWAY_LOG_FORMAT: json or text
    log_level: str = "INFO"
    log_format: str = "json"
    # GATEWAY_ACCESS_LOG: one process-log line per proxied call (api_logs has them anyway)
    access_log: bool = False
    # GATEWAY_SYNC_STATS_INTERVAL: seconds between the sync lag/count queries behind /metrics
    sync_stats_interval: float = 15.0
    # GATEWAY_MAPPING_CACHE_ENTRIES / _BYTES: bounds of the ID mapping cache per process
    mapping_cache_entries: int = 200_000
    mapping_cache_bytes: int = 64 * 1024 * 1024
    # GATEWAY_MAPPING_CACHE_TTL / _NEGATIVE_TTL: seconds a mapping / "no mapping" is trusted
    mapping_cache_ttl: float = 300.0
    mapping_cache_negative_ttl: float = 2.0
    # -- outbound webhooks (gateway/webhooks/) --
    # GATEWAY_WEBHOOK_ALLOW_PRIVATE: deliver to loopback/private/link-local addresses (tests)
    webhook_allow_private: bool = False
    # GATEWAY_WEBHOOK_ALLOWED_NETWORKS: CIDRs allowed even though private (an allow list)
    webhook_allowed_networks: tuple[IPNetwork, ...] = ()
    # GATEWAY_WEBHOOK_ALLOW_HTTP: accept http:// endpoint URLs (default: https only)
    webhook_allow_http: bool = False
    # GATEWAY_WEBHOOK_RETRY_SCHEDULE: seconds before attempt 1, 2, ... (Svix's schedule)
    webhook_retry_schedule: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    # GATEWAY_WEBHOOK_DISABLE_AFTER: seconds a subscription may fail everything before it is
    # disabled (default 5 days)
    webhook_disable_after: float = 5 * 24 * 3600.0
    # GATEWAY_WEBHOOK_POLL_INTERVAL: seconds between polls when no NOTIFY arrives
    webhook_poll_interval: float = 1.0
    # GATEWAY_WEBHOOK_LEASE_MARGIN: seconds a claim outlives the attempt timeout
    webhook_lease_margin: float = 10.0
    # GATEWAY_WEBHOOK_MAX_IN_FLIGHT: attempts running at once in one process
    webhook_max_in_flight: int = 256
    # GATEWAY_WEBHOOK_STATS_INTERVAL: seconds between pending/disabled gauge refreshes
    webhook_stats_interval: float = 15.0
    # GATEWAY_WEBHOOK_DELIVERY: false runs no delivery loop in this process
    webhook_delivery: bool = True
    # GATEWAY_WEBHOOK_RETENTION_DAYS: finished deliveries (and their attempts and events)
    # are deleted this long after they last changed; pruned every maintenance interval
    webhook_retention_days: int = 30

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
        d = cls()  # defaults
        url = e.get("GATEWAY_DATABASE_URL") or None
        settings = cls(
            database_url=Secret(url) if url else None,
            data_dir=Path(e.get("GATEWAY_DATA_DIR") or ".gateway"),
            embedded_database=r.get("GATEWAY_EMBEDDED_DATABASE", _bool, d.embedded_database),
            db_pool_min=r.get("GATEWAY_DB_POOL_MIN", int, d.db_pool_min, minimum=0),
            db_pool_max=r.get("GATEWAY_DB_POOL_MAX", int, d.db_pool_max, minimum=1),
            capture_max_body_bytes=r.get(
                "GATEWAY_CAPTURE_MAX_BODY_BYTES", int, d.capture_max_body_bytes, minimum=0
            ),
            capture_redact_headers=_csv(e.get("GATEWAY_CAPTURE_REDACT_HEADERS", "")),
            capture_redact_fields=_csv(e.get("GATEWAY_CAPTURE_REDACT_FIELDS", "")),
            log_queue_max=r.get("GATEWAY_LOG_QUEUE_MAX", int, d.log_queue_max, minimum=1),
            log_batch_size=r.get("GATEWAY_LOG_BATCH_SIZE", int, d.log_batch_size, minimum=1),
            log_flush_interval=r.get(
                "GATEWAY_LOG_FLUSH_INTERVAL", float, d.log_flush_interval, minimum=0.001
            ),
            retention_days=r.get("GATEWAY_RETENTION_DAYS", int, d.retention_days, minimum=1),
            partitions_ahead=r.get("GATEWAY_PARTITIONS_AHEAD", int, d.partitions_ahead, minimum=1),
            archive_dir=Path(e["GATEWAY_ARCHIVE_DIR"]) if e.get("GATEWAY_ARCHIVE_DIR") else None,
            maintenance_interval=r.get(
                "GATEWAY_MAINTENANCE_INTERVAL", float, d.maintenance_interval, minimum=1.0
            ),
            trusted_proxies=r.get("GATEWAY_TRUSTED_PROXIES", _networks, ()),
            max_request_bytes=r.get(
                "GATEWAY_MAX_REQUEST_BYTES", int, d.max_request_bytes, minimum=0
            ),
            stream_threshold_bytes=r.get(
                "GATEWAY_STREAM_THRESHOLD_BYTES", int, d.stream_threshold_bytes, minimum=0
            ),
            client_timeout=r.get("GATEWAY_CLIENT_TIMEOUT", float, d.client_timeout, minimum=0.1),
            max_header_bytes=r.get(
                "GATEWAY_MAX_HEADER_BYTES", int, d.max_header_bytes, minimum=1024
            ),
            max_headers=r.get("GATEWAY_MAX_HEADERS", int, d.max_headers, minimum=8),
            shutdown_timeout=r.get(
                "GATEWAY_SHUTDOWN_TIMEOUT", float, d.shutdown_timeout, minimum=0.0
            ),
            db_retry_interval=r.get(
                "GATEWAY_DB_RETRY_INTERVAL", float, d.db_retry_interval, minimum=0.05
            ),
            log_wal=r.get("GATEWAY_LOG_WAL", _bool, d.log_wal),
            db_request_timeout=r.get(
                "GATEWAY_DB_REQUEST_TIMEOUT", float, d.db_request_timeout, minimum=0.05
            ),
            api_key_cache_ttl=r.get(
                "GATEWAY_API_KEY_CACHE_TTL", float, d.api_key_cache_ttl, minimum=0.0
            ),
            log_level=r.get("GATEWAY_LOG_LEVEL", _level, d.log_level),
            log_format=r.get("GATEWAY_LOG_FORMAT", _log_format, d.log_format),
            access_log=r.get("GATEWAY_ACCESS_LOG", _bool, d.access_log),
            sync_stats_interval=r.get(
                "GATEWAY_SYNC_STATS_INTERVAL", float, d.sync_stats_interval, minimum=0.1
            ),
            mapping_cache_entries=r.get(
                "GATEWAY_MAPPING_CACHE_ENTRIES", int, d.mapping_cache_entries, minimum=1
            ),
            mapping_cache_bytes=r.get(
                "GATEWAY_MAPPING_CACHE_BYTES", int, d.mapping_cache_bytes, minimum=1024
            ),
            mapping_cache_ttl=r.get(
                "GATEWAY_MAPPING_CACHE_TTL", float, d.mapping_cache_ttl, minimum=0.0
            ),
            mapping_cache_negative_ttl=r.get(
                "GATEWAY_MAPPING_CACHE_NEGATIVE_TTL",
                float,
                d.mapping_cache_negative_ttl,
                minimum=0.0,
            ),
        )
        settings = dataclasses.replace(settings, **_webhook_settings(r, d))
        raw_keys = e.get("GATEWAY_ENCRYPTION_KEYS", "")
        if raw_keys.strip():
            from gateway.crypto import parse_keys

            keys = parse_keys(raw_keys)
            settings = dataclasses.replace(
                settings, encryption_keys=tuple(Secret(k.decode()) for k in keys)
            )
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
        if minimum is not None and isinstance(value, int | float) and value < minimum:
            raise SettingsError(f"{name}: must be >= {minimum}, got {raw!r}")
        return value


def _webhook_settings(r: _Reader, d: Settings) -> dict[str, Any]:
    return {
        "webhook_allow_private": r.get("GATEWAY_WEBHOOK_ALLOW_PRIVATE", _bool, False),
        "webhook_allowed_networks": r.get(
            "GATEWAY_WEBHOOK_ALLOWED_NETWORKS", _networks, d.webhook_allowed_networks
        ),
        "webhook_allow_http": r.get("GATEWAY_WEBHOOK_ALLOW_HTTP", _bool, False),
        "webhook_retry_schedule": r.get(
            "GATEWAY_WEBHOOK_RETRY_SCHEDULE", _seconds_list, d.webhook_retry_schedule
        ),
        "webhook_disable_after": r.get(
            "GATEWAY_WEBHOOK_DISABLE_AFTER", float, d.webhook_disable_after, minimum=1.0
        ),
        "webhook_poll_interval": r.get(
            "GATEWAY_WEBHOOK_POLL_INTERVAL", float, d.webhook_poll_interval, minimum=0.01
        ),
        "webhook_lease_margin": r.get(
            "GATEWAY_WEBHOOK_LEASE_MARGIN", float, d.webhook_lease_margin, minimum=0.1
        ),
        "webhook_max_in_flight": r.get(
            "GATEWAY_WEBHOOK_MAX_IN_FLIGHT", int, d.webhook_max_in_flight, minimum=1
        ),
        "webhook_stats_interval": r.get(
            "GATEWAY_WEBHOOK_STATS_INTERVAL", float, d.webhook_stats_interval, minimum=0.1
        ),
        "webhook_delivery": r.get("GATEWAY_WEBHOOK_DELIVERY", _bool, True),
        "webhook_retention_days": r.get(
            "GATEWAY_WEBHOOK_RETENTION_DAYS", int, d.webhook_retention_days, minimum=1
        ),
    }


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
