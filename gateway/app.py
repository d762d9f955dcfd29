"""create_app(settings, routes): wiring only. Each capability lives in its own package."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway import metrics
from gateway.admin import api as admin_api
from gateway.admin import shapes as admin_shapes
from gateway.auth.authenticator import Authenticator
from gateway.capture import api as capture_api
from gateway.capture import partitions
from gateway.capture import shapes as capture_shapes
from gateway.capture.erasure import erase_logs
from gateway.capture.writer import LogWriter
from gateway.crypto import SecretBox, load_box
from gateway.db import migrations
from gateway.db.pool import bounded, close_pool, create_pool
from gateway.erasure import api as erasure_api
from gateway.erasure import shapes as erasure_shapes
from gateway.erasure.model import Steps as ErasureSteps
from gateway.errors import ConfigError, GatewayError, ServiceUnavailable
from gateway.mapping import api as mapping_api
from gateway.mapping import shapes as mapping_shapes
from gateway.mapping.batch import batch_translator
from gateway.mapping.cache import CacheLimits, MappingCache
from gateway.mapping.erasure import subject_ids
from gateway.mapping.flow import Mappings, Translator
from gateway.mapping.listener import Listener
from gateway.mapping.payload import payload_translator
from gateway.proxy.calllog import CallLog
from gateway.proxy.client import upstream_session
from gateway.proxy.joblog import JobCallLog
from gateway.proxy.origins import Origins
from gateway.proxy.pipeline import Proxy
from gateway.routes import RouteTable, load_routes
from gateway.scrub import Erased, Needles
from gateway.settings import Settings
from gateway.shutdown import ShutdownClock
from gateway.sync import api as sync_api
from gateway.sync import shapes as sync_shapes
from gateway.sync.jobs import api as sync_jobs_api
from gateway.sync.jobs import shapes as sync_jobs_shapes
from gateway.sync.jobs import store as sync_jobs_store
from gateway.sync.jobs.config import SyncJob, parse_syncs
from gateway.sync.jobs.runner import Hands, JobRunner
from gateway.sync.recorder import SyncRecorder, stats_loop
from gateway.sync.webhooks import delivery_reporter
from gateway.tasks import finish_within, run_within
from gateway.web import http as web_http
from gateway.web import openapi
from gateway.web.http import CALL_LOG
from gateway.web.responses import error_response, json_response
from gateway.webhooks import api as webhooks_api
from gateway.webhooks import catalogue_api as webhooks_catalogue_api
from gateway.webhooks import shapes as webhooks_shapes
from gateway.webhooks.delivery import Dispatcher, loop_pool, webhook_session
from gateway.webhooks.emit import RouteEmitter
from gateway.webhooks.erasure import erase_webhooks
from gateway.webhooks.ssrf import AddressPolicy, literal_refusal

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
ROUTES = web.AppKey("routes", RouteTable)
POOL = web.AppKey("pool", asyncpg.Pool)
# api_logs' database (GATEWAY_LOGS_DATABASE_URL): the same pool as POOL unless separate.
LOGS_POOL = web.AppKey("logs_pool", asyncpg.Pool)
SESSION = web.AppKey("session", aiohttp.ClientSession)
WRITER = web.AppKey("writer", LogWriter)
PROXY = web.AppKey("proxy", Proxy)
AUTH = web.AppKey("auth", Authenticator)
SECRETS = web.AppKey("secrets", SecretBox)
SYNC = web.AppKey("sync_recorder", SyncRecorder)
MAPPINGS = web.AppKey("mappings", Mappings)
LISTENER = web.AppKey("mapping_listener", Listener)
WEBHOOKS = web.AppKey("webhooks", Dispatcher)
SHUTDOWN = web.AppKey("shutdown", ShutdownClock)
SYNC_JOB_CONFIG = web.AppKey("sync_job_config", tuple)  # routes.yaml syncs: (SyncJob, ...)
SYNC_JOBS = web.AppKey("sync_jobs", JobRunner)
ROUTES_FILE = web.AppKey("routes_file", str)  # reloaded on SIGHUP when set

PARSER_MAX_LINE = 64 * 1024  # aiohttp's hard limit per request/header line (plain 400 above)
PARSER_MAX_HEADERS = 1024  # aiohttp's hard limit on header count (plain 400 above)
READY_TIMEOUT = 2.0  # seconds /readyz waits for the database before answering 503
LISTENER_START_TIMEOUT = 5.0  # seconds start-up waits for the mapping LISTEN connection
LISTENER_CLOSE_TIMEOUT = 1.0  # seconds the mapping LISTEN connection gets to close
WRITER_RESERVE = 2.0  # seconds of the shutdown budget kept for the api_logs drain
SHUTDOWN_PROBE_TIMEOUT = 1.5  # seconds the database gets to answer when shutdown begins
SYNC_JOB_DB_DEADLINE = 30.0  # seconds a sync job batch's mapping lookup may take
# A separate logs database's pool: the writer's COPY (one connection at a time), journal
# and write-ahead log replays, partition maintenance, log search, erasure.
LOGS_POOL_MIN = 1
LOGS_POOL_MAX = 4

_background: set[asyncio.Task[None]] = set()  # tasks nobody awaits, kept from the GC
RESERVED_PATHS = ("/healthz", "/readyz", "/metrics", "/admin/")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def load_config(path: str | Path) -> tuple[RouteTable, tuple[SyncJob, ...]]:
    """The routes file's routes and its sync jobs (``syncs:``), both validated; a
    ConfigError names the file and the field."""
    routes = load_routes(path)
    return routes, parse_syncs(routes.sync_specs, str(path), routes.upstreams)


def reload_routes(app: web.Application, path: str) -> bool:
    """Read ``path`` again and serve new calls with its routes (calls in flight finish on
    the old ones; pools of unchanged upstreams are kept). A file that does not validate
    changes nothing: the error is logged as at start. Sync jobs (``syncs:``) are read at
    start only."""
    proxy = app[PROXY]
    try:
        routes, _ = load_config(path)
    except ConfigError as exc:
        metrics.ROUTE_RELOADS.labels("error").inc()
        log.error("routes reload refused, the routes in use are unchanged:\n%s", exc)
        return False
    old = proxy.routes
    proxy.reload(routes)
    metrics.ROUTE_RELOADS.labels("ok").inc()
    before, after = {r.name for r in old}, {r.name for r in routes}
    log.info(
        "routes reloaded from %s: %d routes (%d added, %d removed); %d upstreams",
        path,
        len(routes.routes),
        len(after - before),
        len(before - after),
        len(routes.upstreams),
    )
    if routes.sync_specs != old.sync_specs:
        log.warning("the sync jobs of %s changed: they take effect at the next restart", path)
    return True


async def _reload_on_sighup(app: web.Application) -> AsyncIterator[None]:
    """SIGHUP reloads the routes file (``gateway reload`` sends it; so does a supervisor
    of ``serve --workers N`` to each worker)."""
    path = app.get(ROUTES_FILE)
    loop = asyncio.get_running_loop()
    if path is not None:
        loop.add_signal_handler(signal.SIGHUP, reload_routes, app, path)
    yield
    if path is not None:
        loop.remove_signal_handler(signal.SIGHUP)


def create_app(
    settings: Settings,
    routes: RouteTable,
    *,
    syncs: Sequence[SyncJob] = (),
    routes_file: str | None = None,
) -> web.Application:
    if settings.database_url is None:
        raise ValueError(
            "create_app needs settings.database_url (the CLI starts the embedded server)"
        )
    app = web.Application(
        client_max_size=max(settings.max_request_bytes, 1),
        # No middleware: the proxy answers its own errors, and a middleware chain would cost
        # every proxied call; the gateway's own endpoints are wrapped by json_errors instead.
        # A proxy passes compressed request bodies through as they are; the log decodes them.
        # A client silent for client_timeout before its headers are complete is cut off
        # (aiohttp's keep-alive timer also runs while a request's headers are awaited).
        # Header limits are the gateway's own (431 JSON, logged, in the proxy); aiohttp's
        # parser only stops what is far beyond them.
        handler_args={
            "auto_decompress": False,
            "keepalive_timeout": settings.client_timeout,
            "max_line_size": PARSER_MAX_LINE,
            "max_field_size": PARSER_MAX_LINE,
            "max_headers": PARSER_MAX_HEADERS,
        },
    )
    app[SETTINGS] = settings
    app[ROUTES] = routes
    app[SYNC_JOB_CONFIG] = tuple(syncs)
    if routes_file is not None:
        app[ROUTES_FILE] = routes_file
    # SIGTERM starts it; every cleanup step takes its time from it (gateway/shutdown.py).
    app[SHUTDOWN] = ShutdownClock(settings.shutdown_timeout)
    app.on_shutdown.append(_begin_shutdown)
    # Secrets at rest (webhook secrets, auth headers, mapping credentials) go through this.
    app[SECRETS] = load_box(
        [k.reveal().encode() for k in settings.encryption_keys], settings.data_dir
    )
    app.cleanup_ctx.extend(
        [
            _database,
            _logs_database,
            _register_sync_jobs,
            _client_session,
            _log_writer,
            _mappings,
            _sync,
            _proxy,
            _reload_on_sighup,
            _maintenance,
            _webhook_delivery,
            _sync_jobs,
            _gauge_refresh,
        ]
    )
    app.on_shutdown.append(_shutting_down)
    # Runs after every cleanup_ctx step (webhook delivery still resolves ids as it stops).
    app.on_cleanup.append(_flush_tallies)
    app.router.add_get("/healthz", json_errors(healthz))
    app.router.add_get("/readyz", json_errors(readyz))
    app.router.add_get("/metrics", json_errors(metrics_endpoint))
    app.cleanup_ctx.append(web_http.bind(POOL, AUTH, LOGS_POOL))  # admin endpoints' pools, keys
    admin_api.setup(app)
    capture_api.setup(app)
    sync_api.setup(app)
    sync_jobs_api.setup(app)
    mapping_api.setup(app, POOL, SECRETS, MAPPINGS)
    webhooks_api.setup(app, POOL, SECRETS, SETTINGS)
    erasure_api.setup(app, erasure_steps(lambda: app[POOL], lambda: app[LOGS_POOL]))
    webhooks_catalogue_api.setup(app)
    web_http.refuse_other_methods(app)  # 405 with Allow on admin paths, after all of them
    app[openapi.DOCUMENT] = admin_document()
    app.router.add_route("*", "/{tail:.*}", proxy_handler)
    return app


async def _begin_shutdown(app: web.Application) -> None:
    """Start the shutdown clock, and probe the database behind it (not awaited: in-flight
    calls are being finished meanwhile): one that does not answer is given up on."""
    app[SHUTDOWN].begin()
    if POOL in app:
        task = asyncio.create_task(_probe_at_shutdown(app), name="shutdown-probe")
        _background.add(task)
        task.add_done_callback(_background.discard)


async def _probe_at_shutdown(app: web.Application) -> None:
    try:
        async with bounded(app[POOL], SHUTDOWN_PROBE_TIMEOUT) as conn:
            await conn.fetchval("SELECT 1")
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        app[SHUTDOWN].give_up(f"database not answering ({type(exc).__name__})")


def admin_document() -> dict[str, object]:
    """The admin API's OpenAPI document, from the Operations each package declares."""
    return openapi.document(
        admin_shapes.OPERATIONS,
        capture_shapes.OPERATIONS,
        mapping_shapes.OPERATIONS,
        sync_shapes.OPERATIONS,
        sync_jobs_shapes.OPERATIONS,
        webhooks_shapes.OPERATIONS,
        erasure_shapes.OPERATIONS,
    )


def erasure_steps(
    control: Callable[[], asyncpg.Pool], logs: Callable[[], asyncpg.Pool]
) -> ErasureSteps:
    """Erasure of a data subject (gateway/erasure): the subject's ids from the mappings,
    then api_logs (on the logs database) and stored webhooks (on the control database).
    The pools are looked up when an erasure runs (they open at start)."""

    async def logs_step(tenant_id: uuid.UUID, needles: Needles, dry_run: bool) -> list[Erased]:
        return await erase_logs(logs(), tenant_id, needles, dry_run)

    async def webhooks_step(tenant_id: uuid.UUID, needles: Needles, dry_run: bool) -> list[Erased]:
        return await erase_webhooks(control(), tenant_id, needles, dry_run)

    return ErasureSteps(subject_ids, (logs_step, webhooks_step))


def json_errors(handler: Handler) -> Handler:
    """Wrap one of the gateway's own endpoints: every error becomes JSON with a code."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        return await _answer_errors(request, handler)

    return wrapped


async def _answer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        return error_response(exc, request.headers.get("X-Request-Id"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        return json_response({"code": code, "message": exc.reason}, exc.status)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(GatewayError("internal error"), None)


# -- resources (cleanup_ctx: cleanup runs only for what started) ---------------------------


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    assert settings.database_url is not None
    pool = await create_pool(
        settings.database_url.reveal(), settings.db_pool_min, settings.db_pool_max
    )
    async with pool.acquire() as conn:
        applied = await migrations.migrate(conn)
    if applied:
        log.info("applied migrations %s", applied)
    app[POOL] = pool
    app[SHUTDOWN].on_give_up(pool.terminate)
    yield
    await close_pool(pool)  # a hung server: its connections are dropped, not waited for


async def _logs_database(app: web.Application) -> AsyncIterator[None]:
    """api_logs' database: the control pool, or its own pool and migrations (the logs set)."""
    settings = app[SETTINGS]
    if not settings.separate_logs_database:
        app[LOGS_POOL] = app[POOL]
        yield
        return
    assert settings.logs_database_url is not None
    pool = await create_pool(settings.logs_database_url.reveal(), LOGS_POOL_MIN, LOGS_POOL_MAX)
    async with pool.acquire() as conn:
        applied = await migrations.migrate(conn, logs=True)
    if applied:
        log.info("applied migrations %s to the logs database", applied)
    app[LOGS_POOL] = pool
    app[SHUTDOWN].on_give_up(pool.terminate)
    yield
    await close_pool(pool)


async def _gauge_refresh(app: web.Application) -> AsyncIterator[None]:
    """Several worker processes: keep function-backed gauges current (see gateway.metrics)."""
    if not metrics.MULTIPROCESS:
        yield
        return
    task = asyncio.create_task(metrics.refresh_loop())
    yield
    await finish_within(task, 0)


async def _shutting_down(app: web.Application) -> None:
    """Before aiohttp cancels the handlers still running (after shutdown_timeout): a call
    cut off from here on is logged as 503 shutting_down, not as the caller's 499."""
    proxy = app.get(PROXY)
    if proxy is not None:
        proxy.shutting_down = True


async def _flush_tallies(app: web.Application) -> None:
    """The last tallied counts into their counters: with several workers they stay in the
    shared metric files after this process ends (see gateway.metrics.Tally)."""
    metrics.flush_tallies()


async def _client_session(app: web.Application) -> AsyncIterator[None]:
    session = upstream_session()
    app[SESSION] = session
    yield
    await session.close()


async def _log_writer(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    writer = LogWriter(
        app[LOGS_POOL],
        s.journal_dir,
        batch_size=s.log_batch_size,
        flush_interval=s.log_flush_interval,
        queue_max=s.log_queue_max,
        retry_interval=s.db_retry_interval,
        wal=s.log_wal,
    )
    writer.start()
    app[WRITER] = writer
    yield
    await writer.close(app[SHUTDOWN].remaining())
    log.info(
        "api_logs writer drained: %d written, %d journaled, %d dropped",
        writer.rows_written,
        writer.rows_journaled,
        writer.rows_dropped,
    )


async def _sync(app: web.Application) -> AsyncIterator[None]:
    """Sync outcomes of proxied calls (batched writer) and the sync metrics query."""
    recorder = SyncRecorder(app[POOL])
    recorder.start()
    app[SYNC] = recorder
    stats = asyncio.create_task(
        stats_loop(app[POOL], app[SETTINGS].sync_stats_interval), name="sync-stats"
    )
    yield
    await finish_within(stats, 0)  # may be stuck on a hung database: never awaited long
    await recorder.close(app[SHUTDOWN].remaining(WRITER_RESERVE))


async def _mappings(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    limits = CacheLimits(
        s.mapping_cache_entries,
        s.mapping_cache_bytes,
        s.mapping_cache_ttl,
        s.mapping_cache_negative_ttl,
    )
    cache = MappingCache(limits)
    assert s.database_url is not None
    listener = Listener(s.database_url.reveal(), cache, s.db_retry_interval)
    listener.start()
    with contextlib.suppress(TimeoutError):  # serve anyway; it keeps trying in the background
        await asyncio.wait_for(listener.connected.wait(), LISTENER_START_TIMEOUT)
    app[MAPPINGS] = Mappings(app[POOL], cache, s.db_request_timeout)
    app[LISTENER] = listener
    yield
    await run_within(listener.close(), LISTENER_CLOSE_TIMEOUT)


async def _proxy(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    app[AUTH] = Authenticator(app[POOL], s.api_key_cache_ttl, s.db_request_timeout)
    translator = Translator(app[MAPPINGS], app[SETTINGS].stream_threshold_bytes)
    origins = Origins(app[ROUTES].upstreams)  # keep-alive pools, one per upstream
    app[PROXY] = Proxy(
        app[SETTINGS],
        app[ROUTES],
        app[SESSION],
        origins,
        app[WRITER],
        app[AUTH],
        translator,
        app[SYNC],
        emitter=RouteEmitter(app[POOL], app[SETTINGS].db_request_timeout),
    )
    app[CALL_LOG] = CallLog(app[PROXY])  # admin API rows (gateway/proxy/calllog.py)
    yield
    await app[PROXY].close()


async def _maintenance(app: web.Application) -> AsyncIterator[None]:
    await _maintain_once(app)
    task = asyncio.create_task(_maintenance_loop(app), name="partition-maintenance")
    yield
    await finish_within(task, 0)


async def _webhook_delivery(app: web.Application) -> AsyncIterator[None]:
    """The outbound webhook delivery loop of this process (gateway/webhooks/delivery.py)."""
    s = app[SETTINGS]
    if not s.webhook_delivery:
        yield
        return
    assert s.database_url is not None
    policy = AddressPolicy(s.webhook_allow_private, s.webhook_allowed_networks)
    pool = await loop_pool(s.database_url.reveal())
    session = webhook_session(policy)
    dispatcher = Dispatcher(
        pool,
        session,
        app[SECRETS],
        s,
        policy,
        translate=payload_translator(app[MAPPINGS]),  # payloads in the subscriber's ids
        report=delivery_reporter(app[SYNC]),  # each attempt is an outbound sync outcome
    )
    dispatcher.start()
    app[WEBHOOKS] = dispatcher
    clock = app[SHUTDOWN]
    clock.on_give_up(pool.terminate)
    yield
    # Half for attempts in flight, the rest to record their results (dispatcher.close
    # uses its timeout for each); overrunning both means the database hangs.
    budget = clock.remaining(WRITER_RESERVE)
    if not await run_within(dispatcher.close(budget / 2), budget):
        clock.give_up("webhook delivery did not stop in time")
    await session.close()
    await close_pool(pool)


async def _register_sync_jobs(app: web.Application) -> AsyncIterator[None]:
    """routes.yaml's sync jobs into sync_jobs, before anything else starts: a job naming an
    unknown tenant stops the start (ConfigError naming the job's field)."""
    jobs = app[SYNC_JOB_CONFIG]
    if jobs:
        async with app[POOL].acquire() as conn:
            await sync_jobs_store.register(conn, jobs, app[SECRETS], os.environ, datetime.now(UTC))
    yield


async def _sync_jobs(app: web.Application) -> AsyncIterator[None]:
    """The scheduled sync job runner of this process (gateway/sync/jobs/runner.py)."""
    jobs = app[SYNC_JOB_CONFIG]
    if not jobs:
        yield
        return
    s = app[SETTINGS]
    policy = AddressPolicy(s.webhook_allow_private, s.webhook_allowed_networks)
    external = webhook_session(policy)  # partner ends: the webhooks' SSRF rules
    hands = Hands(
        app[SESSION],
        external,
        lambda url: literal_refusal(url, policy),
        # Items cross in the receiving side's ids; the cache is the proxy's, the deadline a
        # batch's (hundreds of ids in one query), not a proxied call's.
        batch_translator(Mappings(app[POOL], app[MAPPINGS].cache, SYNC_JOB_DB_DEADLINE)),
        JobCallLog(app[PROXY]),  # every request a job makes goes to api_logs
    )
    runner = JobRunner(app[POOL], jobs, app[SECRETS], hands)
    runner.start()
    app[SYNC_JOBS] = runner
    yield
    budget = app[SHUTDOWN].remaining(WRITER_RESERVE)
    await run_within(runner.close(budget / 2), budget)  # unfinished runs: leases expire
    await external.close()


async def _maintenance_loop(app: web.Application) -> None:
    while True:
        await asyncio.sleep(app[SETTINGS].maintenance_interval)
        await _maintain_once(app)


async def _maintain_once(app: web.Application) -> None:
    s = app[SETTINGS]
    try:
        async with app[LOGS_POOL].acquire() as conn:
            await partitions.run_maintenance(
                conn,
                datetime.now(UTC).date(),
                s.partitions_ahead,
                s.retention_days,
                archive_dir=s.archive_dir,
            )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        metrics.PARTITION_RUNS.labels("error").inc()
        log.warning("partition maintenance failed: %s", exc)


# -- handlers --------------------------------------------------------------------------


async def proxy_handler(request: web.Request) -> web.StreamResponse:
    return await request.app[PROXY].handle(request)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers and the schema is current; 503 JSON otherwise."""
    writer = request.app[WRITER]
    detail: dict[str, object] = {
        "log_writer": {
            "database_up": writer.database_up,
            "queue_depth": writer.queue_depth,
            "journal_files": len(writer.journal.pending()),
        }
    }
    versions: dict[str, int] = {}
    for name, pool, logs in _databases(request.app):
        try:
            async with bounded(pool, READY_TIMEOUT) as conn:
                versions[name] = await migrations.current_version(conn)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            return _not_ready(f"{name} unreachable: {type(exc).__name__}", detail)
        latest = migrations.latest_version(logs)
        if versions[name] != latest:
            return _not_ready(
                f"{name} schema at version {versions[name]}, expected {latest}", detail
            )
    if "logs database" in versions:
        detail["logs_schema_version"] = versions["logs database"]
    return json_response({"status": "ready", "schema_version": versions["database"], **detail})


def _databases(app: web.Application) -> list[tuple[str, asyncpg.Pool, bool]]:
    """(name in messages, pool, holds only the logs set) of each database /readyz checks."""
    out = [("database", app[POOL], False)]
    if app[LOGS_POOL] is not app[POOL]:
        out.append(("logs database", app[LOGS_POOL], True))
    return out


def _not_ready(message: str, detail: dict[str, object]) -> web.Response:
    exc = ServiceUnavailable(message)
    return json_response({"code": exc.code, "message": message, **detail}, exc.status)


async def metrics_endpoint(request: web.Request) -> web.Response:
    return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})
