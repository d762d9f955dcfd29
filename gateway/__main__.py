"""Command line: ``gateway serve | reload | migrate | db-url | settings-doc | tenants |
keys | secrets`` (also ``python -m gateway ...``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway import logs
from gateway.auth.keys import KeyStoreError, Role
from gateway.errors import ConfigError, SettingsError
from gateway.settings import DATA_DIR_NAME, Secret, Settings, mask_url

if TYPE_CHECKING:
    from gateway.routes import RouteTable
    from gateway.sync.jobs.config import SyncJob

EXIT_CONFIG = 2  # bad settings or routes file
DEFAULT_PORT = 8080  # `serve --port` when GATEWAY_PORT is unset too
PORT_VARIABLE = "GATEWAY_PORT"  # the default port: the Docker image's HEALTHCHECK reads it
MAX_PORT = 65535
# Each proxied call allocates a few hundred short-lived objects; with CPython's default
# generation-0 threshold (700) the collector runs every couple of requests. A higher
# threshold, with everything built at start-up frozen out of the collector's scans, cut
# the gateway's CPU per request by about 15 % under wrk (bench/RESULTS.md).
GC_GEN0_THRESHOLD = 20_000


def database_label(settings: Settings) -> str:
    """Which database a command uses, for its messages (the URL's password masked)."""
    if settings.database_url is not None:
        return mask_url(settings.database_url.reveal())
    return f"the embedded database in {settings.pgdata_dir.resolve()}"


class NoDatabase(KeyStoreError):
    """A command that reads existing data found no database to read it from."""


def resolve_database_url(
    settings: Settings, keep_running: bool = False, *, existing: bool = False
) -> Settings:
    """Settings with a database URL: the configured one, or the embedded server's.
    ``existing``: the command reads data, so an embedded database that is not there yet
    is an error naming where it was looked for, never a new empty one."""
    if settings.database_url is not None:
        return settings
    from gateway.db.embedded import start_embedded

    if existing and not settings.pgdata_dir.is_dir():
        raise NoDatabase(
            f"no gateway database in {settings.pgdata_dir.resolve()} (looked for "
            f"{DATA_DIR_NAME}/ in {Path.cwd()} and its parents): run this where "
            "`gateway serve` keeps its data, or set GATEWAY_DATA_DIR or GATEWAY_DATABASE_URL"
        )

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    dsn = start_embedded(settings.pgdata_dir, keep_running)
    return dataclasses.replace(settings, database_url=Secret(dsn))


def cmd_serve(args: argparse.Namespace) -> int:
    if args.workers > 1 and not args.worker:
        return _supervise(args)
    import uvloop

    from gateway.app import PROXY, create_app
    from gateway.proxy import server

    settings = Settings.from_env()
    routes, jobs = _load_config(args.routes)  # validate before starting anything
    settings = resolve_database_url(settings)
    app = create_app(settings, routes, syncs=jobs, routes_file=args.routes)
    app.cleanup_ctx.append(_tune_gc)
    app.on_shutdown.append(_watchdog)  # the process ends within its budget (shutdown.py)
    logging.getLogger(__name__).info(
        "gateway: %d routes from %s; database %s",
        len(routes.routes),
        args.routes,
        mask_url(settings.database_url.reveal()),  # type: ignore[union-attr]
    )
    # As web.run_app, through the gateway's protocol handler (parser errors answered as
    # JSON and logged; gateway/proxy/server.py).
    runner = server.GatewayRunner(
        app,
        proxy_key=PROXY,
        handle_signals=True,  # SIGINT/SIGTERM: graceful shutdown within shutdown_timeout
        shutdown_timeout=settings.shutdown_timeout,
        access_log=None,
        handler_cancellation=False,
    )
    with contextlib.ExitStack() as stack:
        if not args.worker:  # a supervisor's workers: the supervisor holds the pid file
            stack.enter_context(_pid_file(settings, args.routes))
        server.run(
            runner,
            host=args.host,
            port=args.port,
            loop=uvloop.new_event_loop(),
            reuse_port=args.worker,  # workers of `serve --workers N` share the port
        )
    return 0


def _load_config(path: str) -> tuple[RouteTable, tuple[SyncJob, ...]]:
    """The routes file's routes and its sync jobs (``syncs:``), both validated."""
    from gateway.app import load_config

    return load_config(path)


def _supervise(args: argparse.Namespace) -> int:
    """``serve --workers N``: database and schema once here, then N workers (gateway.workers)."""
    from gateway import workers
    from gateway.crypto import load_box

    settings = Settings.from_env()
    _load_config(args.routes)  # a bad file fails here once, not in N restarting workers
    settings = resolve_database_url(settings)
    assert settings.database_url is not None
    asyncio.run(_with_conn(settings, _nothing))  # migrations, before any worker races
    load_box([k.reveal().encode() for k in settings.encryption_keys], settings.data_dir)
    supervisor = workers.Supervisor(
        workers.worker_argv(args.routes, args.host, args.port),
        workers.worker_env(settings.database_url.reveal(), workers.metrics_dir(settings)),
        args.workers,
        settings.shutdown_timeout + workers.STOP_MARGIN,
        validate=lambda: _load_config(args.routes),
    )
    logging.getLogger(__name__).info(
        "gateway: %d workers on %s:%d; database %s",
        args.workers,
        args.host,
        args.port,
        mask_url(settings.database_url.reveal()),
    )
    with _pid_file(settings, args.routes):
        return supervisor.run()


PID_FILE = "gateway.pid"  # in the data directory: the serving process, for `gateway reload`


@contextlib.contextmanager
def _pid_file(settings: Settings, routes: str) -> Iterator[None]:
    """Say which process serves from this data directory, and from which routes file."""
    path = settings.data_dir / PID_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    mine = json.dumps({"pid": os.getpid(), "routes": str(Path(routes).resolve())})
    path.write_text(mine)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if path.read_text() == mine:  # another gateway may have taken it over since
                path.unlink()


def cmd_reload(args: argparse.Namespace) -> int:
    """Check the routes file, then send SIGHUP to the gateway serving from this data
    directory (or ``--pid``): it swaps its routes between calls, dropping none."""
    settings = Settings.from_env()
    path = settings.data_dir / PID_FILE
    if args.pid is not None:
        pid, routes = args.pid, args.routes or "routes.yaml"
    else:
        try:
            running = json.loads(path.read_text())
        except (OSError, ValueError):
            print(
                f"gateway: no running gateway found: {path} is missing or unreadable "
                "(is `gateway serve` running with this GATEWAY_DATA_DIR? or pass --pid)",
                file=sys.stderr,
            )
            return 1
        pid, routes = int(running["pid"]), args.routes or running["routes"]
    table, _ = _load_config(routes)  # a bad file: reported as at start, nothing is sent
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        print(f"gateway: no process {pid} (stale {path}?)", file=sys.stderr)
        return 1
    print(f"{routes}: valid, {len(table.routes)} routes; SIGHUP sent to gateway pid {pid}")
    return 0


async def _watchdog(app: Any) -> None:
    from gateway.app import SHUTDOWN
    from gateway.shutdown import start_watchdog

    start_watchdog(app[SHUTDOWN])


async def _nothing(conn: Any) -> None:
    return None


async def _tune_gc(app: Any) -> AsyncIterator[None]:
    """After start-up: freeze what exists (routes, pools, caches) and collect less often."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)
    yield


def cmd_migrate(args: argparse.Namespace) -> int:
    from gateway.db import migrations
    from gateway.db.pool import create_pool

    settings = resolve_database_url(Settings.from_env())

    async def run(url: Secret, logs: bool) -> list[int]:
        pool = await create_pool(url.reveal(), 1, 1)
        try:
            async with pool.acquire() as conn:
                return await migrations.migrate(conn, logs=logs)
        finally:
            await pool.close()

    assert settings.database_url is not None
    applied = asyncio.run(run(settings.database_url, False))
    print(f"applied: {applied}" if applied else "schema is current")
    if settings.separate_logs_database:
        assert settings.logs_database_url is not None
        applied = asyncio.run(run(settings.logs_database_url, True))
        print(f"logs database: applied {applied}" if applied else "logs database is current")
    return 0


def cmd_db_url(args: argparse.Namespace) -> int:
    # Leave the embedded server up: the URL is useless once this command exits otherwise.
    settings = resolve_database_url(Settings.from_env(), keep_running=True)
    assert settings.database_url is not None
    print(settings.database_url.reveal())
    return 0


def cmd_settings_doc(args: argparse.Namespace) -> int:
    from gateway.settings import settings_doc

    sys.stdout.write(settings_doc())  # docs/configuration.md is this output
    return 0


async def _with_conn(settings: Settings, work: Any) -> Any:
    from gateway.db import migrations
    from gateway.db.pool import create_pool

    assert settings.database_url is not None
    pool = await create_pool(settings.database_url.reveal(), 1, 1)
    try:
        async with pool.acquire() as conn:
            await migrations.migrate(conn)
            return await work(conn)
    finally:
        await pool.close()


def cmd_tenants_create(args: argparse.Namespace) -> int:
    from gateway.auth import keys

    settings = resolve_database_url(Settings.from_env())
    tenant = asyncio.run(_with_conn(settings, lambda c: keys.create_tenant(c, args.name, "cli")))
    print(f"tenant {tenant.name!r} created: id {tenant.id}")
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from gateway.auth import keys

    settings = resolve_database_url(Settings.from_env(), existing=True)

    async def work(conn: Any) -> Any:
        tenant = await keys.find_tenant(conn, args.tenant)
        if tenant is None:
            raise keys.KeyStoreError(
                f"no tenant named {args.tenant!r} in {database_label(settings)}"
            )
        return await keys.create_key(
            conn,
            tenant.id,
            args.role,
            actor="cli",
            name=args.name or "",
            external_system=args.external_system,
            rate_limit_per_minute=args.rate_limit,
            expires_in=timedelta(days=args.expires_days) if args.expires_days else None,
        )

    key, token = asyncio.run(_with_conn(settings, work))
    print(
        f"key {key.id} ({key.role.value}"
        + (f", {key.external_system}" if key.external_system else "")
        + ") created"
    )
    print(f"token: {token}")
    print("the token is shown once; only its hash is stored", file=sys.stderr)
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    import uuid

    from gateway.auth import keys

    settings = resolve_database_url(Settings.from_env(), existing=True)

    async def work(conn: Any) -> Any:
        tenant = await keys.find_tenant(conn, args.tenant)
        if tenant is None:
            raise keys.KeyStoreError(
                f"no tenant named {args.tenant!r} in {database_label(settings)}"
            )
        try:
            key_id = uuid.UUID(args.key_id)
        except ValueError:
            raise keys.KeyStoreError(f"not a key id: {args.key_id!r}") from None
        return await keys.revoke_key(conn, tenant.id, key_id, actor="cli")

    key = asyncio.run(_with_conn(settings, work))
    if key is None:
        where = database_label(settings)
        print(f"gateway: no key {args.key_id} in tenant {args.tenant!r} ({where})", file=sys.stderr)
        return 1
    print(f"key {key.id} revoked")
    return 0


def cmd_secrets_rotate(args: argparse.Namespace) -> int:
    from gateway.crypto import load_box, rotate_all

    settings = resolve_database_url(Settings.from_env(), existing=True)
    box = load_box([k.reveal().encode() for k in settings.encryption_keys], settings.data_dir)

    async def work(conn: Any) -> int:
        return await rotate_all(conn, box)

    count = asyncio.run(_with_conn(settings, work))
    print(f"{count} stored secrets re-encrypted under the newest key")
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    """``gateway erase``: the admin API's erasure (POST /admin/v1/erasures), audited as ``cli``."""
    import msgspec

    from gateway.app import erasure_steps
    from gateway.auth import keys
    from gateway.db import migrations
    from gateway.db.pool import create_pool
    from gateway.erasure import service
    from gateway.erasure.api import parse
    from gateway.errors import GatewayError

    settings = resolve_database_url(Settings.from_env())
    fields = {
        "entity_type": args.entity_type,
        "id": args.id,
        "external_system": args.external_system,
        "value": sys.stdin.readline().strip() if args.value == "-" else args.value,
    }
    body: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}

    async def run() -> bytes:
        assert settings.database_url is not None
        control = await create_pool(settings.database_url.reveal(), 1, 2)
        logs = control
        try:
            if settings.separate_logs_database:
                assert settings.logs_database_url is not None
                logs = await create_pool(settings.logs_database_url.reveal(), 1, 2)
            async with control.acquire() as conn:
                await migrations.migrate(conn)
                tenant = await keys.find_tenant(conn, args.tenant)
            if tenant is None:
                raise KeyStoreError(f"no tenant {args.tenant!r}")
            steps = erasure_steps(lambda: control, lambda: logs)
            req = parse(msgspec.json.encode({**body, "dry_run": args.dry_run}))
            result = await service.erase(control, steps, tenant.id, req, actor="cli")
            return msgspec.json.encode(result)
        finally:
            if logs is not control:
                await logs.close()
            await control.close()

    try:
        print(asyncio.run(run()).decode())
    except GatewayError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"a port number 0-{MAX_PORT}, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Integration Hub gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--routes", default="routes.yaml", help="routes file (default routes.yaml)")
    serve.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    serve.add_argument(
        "--port",
        type=_port,
        default=os.environ.get(PORT_VARIABLE) or str(DEFAULT_PORT),
        help=f"listen port (default ${PORT_VARIABLE}, else {DEFAULT_PORT})",
    )
    serve.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="processes sharing the port (SO_REUSEPORT), supervised by this one (default 1)",
    )
    # Internal: set by the supervisor for each of its workers.
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)
    sub.add_parser("migrate", help="apply pending database migrations").set_defaults(
        func=cmd_migrate
    )
    sub.add_parser(
        "db-url", help="print the database URL in use (starts the embedded server if needed)"
    ).set_defaults(func=cmd_db_url)
    sub.add_parser(
        "settings-doc", help="print the GATEWAY_* settings reference (docs/configuration.md)"
    ).set_defaults(func=cmd_settings_doc)
    tenants = sub.add_parser("tenants", help="manage tenants").add_subparsers(
        dest="tenants_command", required=True
    )
    tc = tenants.add_parser("create", help="create a tenant")
    tc.add_argument("name")
    tc.set_defaults(func=cmd_tenants_create)
    keys_ = sub.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True
    )
    kc = keys_.add_parser("create", help="create an API key (prints the token once)")
    kc.add_argument("--tenant", required=True, help="tenant name or id")
    kc.add_argument("--role", required=True, choices=[r.value for r in Role])
    kc.add_argument("--external-system", help="partner keys: e.g. booking_engine")
    kc.add_argument("--name", help="a label for the key")
    kc.add_argument("--rate-limit", type=int, help="requests per minute for this key")
    kc.add_argument("--expires-days", type=int, help="the key stops working after this")
    kc.set_defaults(func=cmd_keys_create)
    kr = keys_.add_parser("revoke", help="revoke an API key")
    kr.add_argument("--tenant", required=True, help="tenant name or id")
    kr.add_argument("key_id")
    kr.set_defaults(func=cmd_keys_revoke)
    rl = sub.add_parser(
        "reload",
        help="check the routes file and have the running gateway reload it (SIGHUP)",
    )
    rl.add_argument("--routes", help="routes file to check (default: the one it serves)")
    rl.add_argument("--pid", type=int, help="the gateway's process (default: from its data dir)")
    rl.set_defaults(func=cmd_reload)
    erase = sub.add_parser(
        "erase",
        help="erase one data subject from a tenant's api_logs and stored webhooks (audited)",
    )
    erase.add_argument("--tenant", required=True, help="tenant name or id")
    erase.add_argument("--entity-type", help="e.g. guest (with --id)")
    erase.add_argument("--id", help="internal UUID, or a partner's id (with --external-system)")
    erase.add_argument("--external-system", help="the partner system whose id --id is")
    erase.add_argument("--value", help="a literal such as an e-mail address; '-': read stdin")
    erase.add_argument("--dry-run", action="store_true", help="count, change nothing")
    erase.set_defaults(func=cmd_erase)
    secrets_ = sub.add_parser("secrets", help="secrets at rest").add_subparsers(
        dest="secrets_command", required=True
    )
    secrets_.add_parser(
        "rotate", help="re-encrypt stored secrets under the first GATEWAY_ENCRYPTION_KEYS key"
    ).set_defaults(func=cmd_secrets_rotate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # serve logs JSON lines on stdout; the other commands print their answer on stdout, so
    # their logs go to stderr. A bad GATEWAY_* value is reported by the command itself.
    stream = sys.stdout if args.func is cmd_serve else sys.stderr
    try:
        s = Settings.from_env()
        logs.configure(s.log_level, s.log_format, stream)
    except SettingsError:
        logs.configure(stream=stream)
    try:
        return int(args.func(args))
    except ConfigError as exc:  # SettingsError is one too
        print(f"gateway: configuration error:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyStoreError as exc:  # NoDatabase and "no tenant named ..." name the database
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
