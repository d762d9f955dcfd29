"""Every Prometheus metric of the gateway, defined once.

Conventions: ``gateway_`` prefix, base units (seconds, bytes), ``_total`` counters.
Labels stay bounded: route names (or ``unmatched``), never raw paths or ids.

Processes. One ``gateway serve`` process (the default) keeps every metric in this
module's in-memory ``REGISTRY``: nothing is shared, nothing is written to disk, and gauges
such as in-flight requests are read when scraped (``set_function``). ``gateway serve
--workers N`` (N > 1) runs N processes behind one port; a scrape reaches one of them at
random, so each must answer for all. The parent then sets ``PROMETHEUS_MULTIPROC_DIR``
(a fresh folder under the data directory) before the workers start, which switches
prometheus-client to its multiprocess mode: every value lives in a per-process mmap file
and ``exposition()`` merges the files of all workers (``MultiProcessCollector``): counters
and histograms add up (a dead worker's counts stay in the totals), each gauge combines as
its ``multiprocess_mode`` says — ``livesum`` for per-process quantities (in-flight
requests, queued rows), ``livemax``/``livemin`` where every process sees the same thing
(the shared journal folder, "is the database up"), ``livemostrecent`` for values computed
from the database (sync and webhook statistics; the newest computation wins, so a process
that lost the advisory lock stops counting). ``live*`` modes forget a worker once the
parent marks it dead. In that mode ``set_function`` cannot work (the collector reads files,
not functions), so ``RefreshedGauge`` sets those gauges from their functions every
``REFRESH_INTERVAL`` seconds instead (``refresh_loop``, a task per worker): nothing is
added to the request path. The alternative, one registry per process scraped as its own
target, needs one port per worker, which SO_REUSEPORT sharing does not give.
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REGISTRY = CollectorRegistry(auto_describe=True)
# Set by `gateway serve --workers N` for its workers; read once, before any metric exists
# (prometheus-client picks its value storage when it is imported).
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
REFRESH_INTERVAL = 1.0  # seconds between updates of function-backed gauges (multiprocess)


class RefreshedGauge(Gauge):
    """A gauge whose ``set_function`` also works in multiprocess mode (refreshed by a task)."""

    def set_function(self, f: Callable[[], float]) -> None:
        if MULTIPROCESS:
            _FUNCTIONS[self] = f
        else:
            super().set_function(f)


_FUNCTIONS: dict[Gauge, Callable[[], float]] = {}


def refresh() -> None:
    """Set every function-backed gauge from its function, and move tallies into their
    counters (multiprocess mode only)."""
    for gauge, f in _FUNCTIONS.items():
        gauge.set(f())
    flush_tallies()


class Tally:
    """A counter series counted as a plain integer on the request path (``n += k``) and
    added to the series when metrics are read: by ``exposition()``, in multiprocess mode
    every ``REFRESH_INTERVAL``, and when the app stops. Counter.inc takes a lock and
    costs ≈ 1 µs inside the running gateway; the mapping cache counted its hits that way
    twice per translated call. A worker that dies unflushed loses at most its last
    interval's counts."""

    __slots__ = ("n", "series")

    def __init__(self, series: Counter) -> None:
        self.series = series
        self.n = 0

    def flush(self) -> None:
        n, self.n = self.n, 0
        if n:
            self.series.inc(n)


class HistogramTally:
    """A histogram series observed into plain integers (``observe(v)``: one C bisect, two
    additions) and added to the series when metrics are read, like :class:`Tally`.
    Histogram.observe takes a lock for the sum and another for the bucket, and finds the
    bucket in a Python loop over the bounds; a proxied call observed two of them."""

    __slots__ = ("bounds", "counts", "series", "total")

    def __init__(self, series: Histogram) -> None:
        self.series = series
        self.bounds: list[float] = list(series._upper_bounds)  # ends with +Inf
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value
        self.total += value

    def flush(self) -> None:
        counts, total = self.counts, self.total
        if not any(counts):
            return
        self.counts, self.total = [0] * len(counts), 0.0
        buckets = self.series._buckets  # per-bucket (not cumulative) counts, as observe
        for i, n in enumerate(counts):
            if n:
                buckets[i].inc(n)
        self.series._sum.inc(total)


_TALLIES: list[Tally | HistogramTally] = []


def tally(counter: Counter, *labels: str) -> Tally:
    """A Tally for one labelled series of ``counter``."""
    t = Tally(counter.labels(*labels))
    _TALLIES.append(t)
    return t


def histogram_tally(histogram: Histogram, *labels: str) -> HistogramTally:
    """A HistogramTally for one labelled series of ``histogram``."""
    t = HistogramTally(histogram.labels(*labels))
    _TALLIES.append(t)
    return t


def flush_tallies() -> None:
    for t in _TALLIES:
        t.flush()


async def refresh_loop() -> None:
    while True:
        refresh()
        await asyncio.sleep(REFRESH_INTERVAL)


def clear_gauge(gauge: Gauge, computing: bool) -> None:
    """Drop a labelled gauge's series: before republishing them (``computing``), or because
    another process publishes them now.

    In multiprocess mode series live in files and cannot be removed: a computing process
    sets its old series to 0 (the fresh values it sets next win as most recent), any other
    process leaves its stale ones alone (older than the computing process's, so they lose).
    """
    if not MULTIPROCESS:
        gauge.clear()
    elif computing:
        for labels in list(gauge._metrics):
            gauge.labels(*labels).set(0)


def exposition() -> bytes:
    """The text answer of /metrics: this process's registry, or every worker's files."""
    flush_tallies()
    if not MULTIPROCESS:
        return generate_latest(REGISTRY)
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
    return generate_latest(merged)


# Proxy latencies: most answers land between 1 ms and a few seconds.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

REQUESTS = Counter(
    "gateway_requests_total",
    "Proxied and refused calls by route, method and status class",
    ["route", "method", "status_class"],
    registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    "gateway_request_duration_seconds",
    "Time from request received to answer sent, per route",
    ["route"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
UPSTREAM_DURATION = Histogram(
    "gateway_upstream_duration_seconds",
    "Time until the upstream's answer headers arrived",
    ["route"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
IN_FLIGHT = RefreshedGauge(
    "gateway_requests_in_flight",
    "Requests being proxied now",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
ROUTE_RELOADS = Counter(
    "gateway_routes_reloads_total",
    "routes.yaml reloads (SIGHUP, `gateway reload`) by result: ok, or error (nothing changed)",
    ["result"],
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "gateway_upstream_errors_total",
    "Upstream failures by route and kind",
    ["route", "kind"],
    registry=REGISTRY,
)

AUTH_FAILURES = Counter(
    "gateway_auth_failures_total",
    "Refused callers by reason (missing_key, unknown_key, revoked_key, expired_key, forbidden)",
    ["reason"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "gateway_rate_limited_total",
    "Calls refused with 429 by route",
    ["route"],
    registry=REGISTRY,
)

LOG_QUEUE_DEPTH = RefreshedGauge(
    "gateway_log_queue_depth",
    "api_logs rows waiting in memory",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
LOG_ROWS_WRITTEN = Counter(
    "gateway_log_rows_written_total",
    "api_logs rows committed to PostgreSQL",
    registry=REGISTRY,
)
LOG_ROWS_JOURNALED = Counter(
    "gateway_log_rows_journaled_total",
    "api_logs rows written to the on-disk journal",
    registry=REGISTRY,
)
LOG_ROWS_DROPPED = Counter(
    "gateway_log_rows_dropped_total",
    "api_logs rows lost because neither PostgreSQL nor the journal could take them",
    registry=REGISTRY,
)
LOG_ROWS_SALVAGED = Counter(
    "gateway_log_rows_salvaged_total",
    "api_logs rows whose bodies were replaced because PostgreSQL refused them",
    registry=REGISTRY,
)
LOG_JOURNAL_BYTES = Gauge(
    "gateway_log_journal_bytes",
    "Size of the on-disk log journal",
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
LOG_FLUSH_DURATION = Histogram(
    "gateway_log_flush_duration_seconds",
    "Time to COPY one batch of api_logs rows",
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
LOG_DB_UP = Gauge(
    "gateway_log_database_up",
    "1 while the log writer reaches PostgreSQL, 0 while journaling",
    multiprocess_mode="livemin",
    registry=REGISTRY,
)
PARTITION_RUNS = Counter(
    "gateway_partition_maintenance_runs_total",
    "Partition maintenance runs by result",
    ["result"],
    registry=REGISTRY,
)
PARTITIONS_DROPPED = Counter(
    "gateway_partitions_dropped_total",
    "api_logs partitions dropped by retention",
    registry=REGISTRY,
)

SYNC_REPORTS = Counter(
    "gateway_sync_reports_total",
    "Sync status reports by source (api, traffic) and outcome (created, updated, unchanged, "
    "stale, conflict)",
    ["source", "outcome"],
    registry=REGISTRY,
)
SYNC_FAILURES = Counter(
    "gateway_sync_failures_total",
    "Failed sync attempts recorded, by external system",
    ["external_system"],
    registry=REGISTRY,
)
SYNC_CONFLICTS = Counter(
    "gateway_sync_conflicts_total",
    "Entities that went into conflict (both sides changed), by external system",
    ["external_system"],
    registry=REGISTRY,
)
SYNC_REPORTS_DROPPED = Counter(
    "gateway_sync_reports_dropped_total",
    "Sync reports from proxied traffic dropped because the queue was full",
    registry=REGISTRY,
)
SYNC_ENTITIES = Gauge(
    "gateway_sync_entities",
    "Tracked entities by external system and sync status (periodic query)",
    ["external_system", "status"],
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)
SYNC_LAG = Gauge(
    "gateway_sync_lag_seconds",
    "Age of the oldest entity not in sync (pending, in progress, failed, conflict), "
    "per external system; 0 when everything is in sync",
    ["external_system"],
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)
SYNC_SINCE_SUCCESS = Gauge(
    "gateway_sync_since_last_success_seconds",
    "Time since the last successful sync, per external system",
    ["external_system"],
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)
SYNC_STATS_RUNS = Counter(
    "gateway_sync_stats_runs_total",
    "Periodic sync statistics queries by result (computed, skipped: another process holds "
    "the lock, error)",
    ["result"],
    registry=REGISTRY,
)
# -- scheduled sync jobs (gateway/sync/jobs/) ----------------------------------------------
# Labelled by job name: jobs are declared in routes.yaml, so the label set is bounded.
SYNC_JOB_RUN_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600)

SYNC_JOB_RUNS = Counter(
    "gateway_sync_job_runs_total",
    "Sync job runs finished, by job and status (succeeded, failed, lost: the lease expired)",
    ["job", "status"],
    registry=REGISTRY,
)
SYNC_JOB_DURATION = Histogram(
    "gateway_sync_job_run_duration_seconds",
    "Duration of sync job runs, by job",
    ["job"],
    buckets=SYNC_JOB_RUN_BUCKETS,
    registry=REGISTRY,
)
SYNC_JOB_ITEMS = Counter(
    "gateway_sync_job_items_total",
    "Items handled by sync jobs, by job and outcome (synced, failed, skipped)",
    ["job", "outcome"],
    registry=REGISTRY,
)
SYNC_JOB_SINCE_SUCCESS = Gauge(
    "gateway_sync_job_since_last_success_seconds",
    "Time since the job's last successful run (since it was first configured, if never)",
    ["job"],
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)
# -- outbound webhooks (gateway/webhooks/) -------------------------------------------------
# Event → delivered lag spans retries, so its buckets reach into hours.
WEBHOOK_LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200)

WEBHOOK_DELIVERIES = Counter(
    "gateway_webhook_deliveries_total",
    "Deliveries finished, by result (delivered, failed)",
    ["result"],
    registry=REGISTRY,
)
WEBHOOK_ATTEMPTS = Counter(
    "gateway_webhook_attempts_total",
    "Delivery attempts by result (delivered, http_error, timeout, connect_error, refused, "
    "released)",
    ["result"],
    registry=REGISTRY,
)
# Per-subscription failures are not a label: subscription ids (and names) are unbounded and
# churn, and every id would stay a series until restart. The subscriber's external system
# is bounded (the same values as the sync metrics; "none" without one), so failures are
# counted per system; the admin API lists the failing deliveries of each subscription.
WEBHOOK_FAILED_ATTEMPTS = Counter(
    "gateway_webhook_failed_attempts_total",
    "Failed delivery attempts (anything but delivered or released), by the subscription's "
    "external system (none when it has none)",
    ["external_system"],
    registry=REGISTRY,
)
WEBHOOK_ATTEMPT_DURATION = Histogram(
    "gateway_webhook_attempt_duration_seconds",
    "Time of one delivery attempt, connect to answer",
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
WEBHOOK_DELIVERY_LAG = Histogram(
    "gateway_webhook_delivery_lag_seconds",
    "Time from event created to delivered (retries included)",
    buckets=WEBHOOK_LAG_BUCKETS,
    registry=REGISTRY,
)
WEBHOOK_PENDING = Gauge(
    "gateway_webhook_pending_deliveries",
    "Deliveries not finished yet (pending or being attempted), refreshed periodically",
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)
WEBHOOK_OLDEST_PENDING_AGE = Gauge(
    "gateway_webhook_oldest_pending_age_seconds",
    "Age of the oldest unfinished delivery, refreshed periodically",
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)
WEBHOOK_DISABLED_SUBSCRIPTIONS = Gauge(
    "gateway_webhook_disabled_subscriptions",
    "Subscriptions disabled (by the gateway or an admin), refreshed periodically",
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)
WEBHOOK_EVENTS_EMITTED = Counter(
    "gateway_webhook_route_events_total",
    "Events emitted from proxied answers by route and result (emitted, skipped, error)",
    ["route", "result"],
    registry=REGISTRY,
)


def status_class(status: int) -> str:
    return f"{status // 100}xx"


MAPPING_CACHE_HITS = Counter(
    "gateway_mapping_cache_hits_total",
    "ID lookups answered by the mapping cache (negative entries included), by way (in, out)",
    ["way"],
    registry=REGISTRY,
)
# Counted on every translated call, twice: tallied, not inc'ed (see Tally).
MAPPING_CACHE_HIT_TALLIES = {way: tally(MAPPING_CACHE_HITS, way) for way in ("in", "out")}
MAPPING_CACHE_MISSES = Counter(
    "gateway_mapping_cache_misses_total",
    "ID lookups the mapping cache could not answer (sent to PostgreSQL), by way",
    ["way"],
    registry=REGISTRY,
)
MAPPING_CACHE_EVICTIONS = Counter(
    "gateway_mapping_cache_evictions_total",
    "Mapping cache entries dropped: size (entry/byte bound), expired, invalidated",
    ["reason"],
    registry=REGISTRY,
)
MAPPING_CACHE_ENTRIES = RefreshedGauge(
    "gateway_mapping_cache_entries",
    "Entries held by the mapping cache",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
MAPPING_DB_LOOKUPS = Counter(
    "gateway_mapping_db_lookups_total",
    "Queries sent to PostgreSQL for cache misses (one per request phase at most)",
    registry=REGISTRY,
)
MAPPING_LISTENER_UP = Gauge(
    "gateway_mapping_listener_up",
    "1 while the LISTEN connection for mapping invalidations is up",
    multiprocess_mode="livemin",
    registry=REGISTRY,
)
