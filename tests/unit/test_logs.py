"""Process logs are JSON lines with the request context and no secrets."""

from __future__ import annotations

import io
import logging

import orjson

from gateway import logs
from gateway.settings import Settings


def test_json_lines_carry_context_and_tracebacks() -> None:
    out = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.configure("DEBUG", "json", out)
    try:
        log = logging.getLogger("gateway.test")
        log.info("hello %s", "world", extra={"request_id": "r-1", "route": "rooms", "status": 200})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed", extra={"request_id": "r-2"})
        log.debug("quiet")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    first, second, third = (orjson.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "hello world" and first["level"] == "INFO"
    assert (first["request_id"], first["route"], first["status"]) == ("r-1", "rooms", 200)
    assert first["ts"].endswith("+00:00")
    assert second["request_id"] == "r-2" and "ValueError: boom" in second["exc"]
    assert third["level"] == "DEBUG"


def test_log_settings_are_checked() -> None:
    s = Settings.from_env({"GATEWAY_LOG_LEVEL": "warning", "GATEWAY_ACCESS_LOG": "yes"})
    assert s.log_level == "WARNING" and s.access_log and s.log_format == "json"
    for env, words in (
        ({"GATEWAY_LOG_LEVEL": "loud"}, "GATEWAY_LOG_LEVEL"),
        ({"GATEWAY_LOG_FORMAT": "xml"}, "GATEWAY_LOG_FORMAT"),
        ({"GATEWAY_ACCESS_LOG": "maybe"}, "GATEWAY_ACCESS_LOG"),
    ):
        try:
            Settings.from_env(env)
        except Exception as exc:  # SettingsError
            assert words in str(exc)
        else:
            raise AssertionError(f"{env} accepted")
