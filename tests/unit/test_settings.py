from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from gateway.errors import SettingsError
from gateway.settings import Secret, Settings, mask_url


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.database_url is None
    assert s.data_dir == Path(".gateway")
    assert s.journal_dir == Path(".gateway/journal")


def test_values_are_parsed() -> None:
    s = Settings.from_env(
        {
            "GATEWAY_DATABASE_URL": "postgresql://u:pw@db/gw",
            "GATEWAY_DATA_DIR": "/var/lib/gw",
            "GATEWAY_RETENTION_DAYS": "7",
            "GATEWAY_CAPTURE_MAX_BODY_BYTES": "1024",
            "GATEWAY_LOG_FLUSH_INTERVAL": "0.25",
            "GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1",
            "GATEWAY_CAPTURE_REDACT_FIELDS": "Passport, iban",
        }
    )
    assert s.retention_days == 7
    assert s.capture_max_body_bytes == 1024
    assert s.log_flush_interval == 0.25
    assert s.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("127.0.0.1/32"),
    )
    assert s.capture_redact_fields == ("passport", "iban")
    assert s.database_url is not None and s.database_url.reveal() == "postgresql://u:pw@db/gw"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("GATEWAY_RETENTION_DAYS", "ten", "GATEWAY_RETENTION_DAYS: expected int, got 'ten'"),
        ("GATEWAY_RETENTION_DAYS", "0", "GATEWAY_RETENTION_DAYS: must be >= 1"),
        ("GATEWAY_LOG_FLUSH_INTERVAL", "soon", "GATEWAY_LOG_FLUSH_INTERVAL: expected float"),
        ("GATEWAY_LOG_FLUSH_INTERVAL", "nan", "GATEWAY_LOG_FLUSH_INTERVAL: expected a finite"),
        ("GATEWAY_SHUTDOWN_TIMEOUT", "inf", "GATEWAY_SHUTDOWN_TIMEOUT: expected a finite"),
        ("GATEWAY_TRUSTED_PROXIES", "10.0.0.0/33", "GATEWAY_TRUSTED_PROXIES: expected networks"),
        ("GATEWAY_DB_POOL_MIN", "50", "GATEWAY_DB_POOL_MIN: must not exceed GATEWAY_DB_POOL_MAX"),
    ],
)
def test_invalid_values_name_the_variable(name: str, value: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as exc:
        Settings.from_env({name: value})
    assert fragment in str(exc.value)


def test_secrets_print_masked() -> None:
    s = Settings.from_env({"GATEWAY_DATABASE_URL": "postgresql://u:hunter2@db/gw"})
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.database_url)
    assert Secret("a") == Secret("a")
    assert mask_url("postgresql://u:hunter2@db:5432/gw") == "postgresql://u:****@db:5432/gw"
