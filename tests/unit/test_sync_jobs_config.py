"""routes.yaml ``syncs:`` parsing (gateway/sync/jobs/config.py): no I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from yarl import URL

from gateway.errors import ConfigError
from gateway.routes import Upstream
from gateway.sync.jobs.config import AuthType, JobDirection, parse_syncs

TENANT = "6f1c2a1e-8c9b-4d0e-9a55-0d7c3e2b1a00"
UPSTREAMS = {
    "rates": Upstream("rates", URL("http://127.0.0.1:9004/base")),
    "billing": Upstream("billing", URL("http://127.0.0.1:9005")),
}
ENV = {"RMS_TOKEN": "t0ken", "ACC_PASSWORD": "pw", "ACC_KEY": "k"}

GOOD = f"""
- name: rates-out
  tenant: {TENANT}
  external_system: revenue_mgmt
  entity_type: rate
  direction: outbound
  interval: 15m
  batch_size: 200
  source:
    upstream: rates
    path: /rates/changes
    items: /data
    id: /rate_id
    version: /revision
    next_cursor: /next
  target:
    url: https://rms.example.com/api/rates
    auth: {{type: bearer, token_env: RMS_TOKEN}}
    failed: {{items: /rejected, id: /ref, error: /reason}}
  translate:
    /room_type_id: room_type
- name: invoices-in
  tenant: {TENANT}
  external_system: accounting
  entity_type: invoice
  direction: inbound
  cron: "0 2 * * *"
  source:
    url: https://acc.example.com/invoices
    auth: {{type: basic, username: gw, password_env: ACC_PASSWORD}}
    cursor_param: since
  target:
    upstream: billing
    path: /invoices/import
  on_unknown: pass
"""


def parse(text: str, env: dict[str, str] | None = None) -> Any:
    return parse_syncs(yaml.safe_load(text), "routes.yaml", UPSTREAMS, ENV if env is None else env)


def problems(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as exc:
        parse(text, env)
    return str(exc.value)


def test_good_jobs_parse_into_frozen_objects() -> None:
    out, inbound = parse(GOOD)
    assert out.name == "rates-out" and out.direction is JobDirection.OUTBOUND
    assert out.tenant_id == uuid.UUID(TENANT) and out.batch_size == 200
    assert out.schedule.interval == 900 and out.schedule.describe() == "every 900s"
    assert str(out.source.end.url) == "http://127.0.0.1:9004/base/rates/changes"
    assert (out.source.items, out.source.id, out.source.version) == (
        "/data",
        "/rate_id",
        "/revision",
    )
    assert out.target.failed_items == "/rejected" and out.target.failed_id == "/ref"
    assert out.external is out.target.end and out.external.name == "rms.example.com"
    # the item's own id is translated first, as an id of the job's entity type
    assert out.translate == (("/rate_id", "rate"), ("/room_type_id", "room_type"))
    assert out.auth.type is AuthType.BEARER
    assert out.auth.secret(ENV) == {"token": "t0ken"}
    assert inbound.direction is JobDirection.INBOUND and inbound.pass_unknown
    assert inbound.source.cursor_param == "since" and inbound.source.next_cursor == "/next_cursor"
    assert str(inbound.target.end.url) == "http://127.0.0.1:9005/invoices/import"
    assert inbound.auth.secret(ENV) == {"username": "gw", "password": "pw"}
    assert inbound.schedule.next_after(datetime(2026, 1, 1, 3, tzinfo=UTC)) == datetime(
        2026, 1, 2, 2, tzinfo=UTC
    )
    assert inbound.where == "routes.yaml: syncs[1] 'invoices-in'"


def test_no_syncs_section_is_no_jobs() -> None:
    assert parse_syncs(None, "routes.yaml", UPSTREAMS) == ()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("entity_type: rate", "entity_type: Rate"),
            "routes.yaml: syncs[0] 'rates-out': field 'entity_type': required; a name such as",
        ),
        (
            ("direction: outbound", "direction: sideways"),
            "syncs[0] 'rates-out': field 'direction': required; outbound or inbound",
        ),
        (
            ("interval: 15m", "interval: 15 minutes"),
            "syncs[0] 'rates-out': field 'interval': must be a duration from 1s to 31d",
        ),
        (
            ("interval: 15m", "interval: 15m\n  cron: '* * * * *'"),
            "syncs[0] 'rates-out': field 'schedule': give exactly one of interval",
        ),
        (
            ('cron: "0 2 * * *"', 'cron: "0 25 * * *"'),
            "syncs[1] 'invoices-in': field 'cron': not a cron expression",
        ),
        (
            ("batch_size: 200", "batch_size: 0"),
            "syncs[0] 'rates-out': field 'batch_size': must be an integer in [1, 10000], got 0",
        ),
        (
            ("upstream: rates", "upstream: ratez"),
            "syncs[0] 'rates-out': field 'source'.upstream: unknown upstream 'ratez' "
            "(known: billing, rates)",
        ),
        (
            ("items: /data", "items: data"),
            "syncs[0] 'rates-out': field 'source'.items: pointer must start with '/'",
        ),
        (
            ("url: https://rms.example.com/api/rates", "url: ftp://rms.example.com/x"),
            "syncs[0] 'rates-out': field 'target'.url: must be an absolute http(s) URL",
        ),
        (
            ("token_env: RMS_TOKEN", "token_env: NOT_SET_HERE"),
            "syncs[0] 'rates-out': field 'target'.auth.token_env: environment variable "
            "NOT_SET_HERE is not set",
        ),
        (
            ("type: bearer", "type: digest"),
            "field 'target'.auth.type: must be none, bearer, basic or headers",
        ),
        (
            ("/room_type_id: room_type", "/room_type_id: Room"),
            "syncs[0] 'rates-out': field 'translate'./room_type_id: entity type must look like",
        ),
        (
            (
                f"tenant: {TENANT}\n  external_system: accounting",
                "tenant: acme\n  external_system: accounting",
            ),
            "syncs[1] 'invoices-in': field 'tenant': required; the tenant's id (a UUID), "
            "got 'acme'",
        ),
        (
            ("    upstream: billing", "    upstream: billing\n    url: https://x.example"),
            "syncs[1] 'invoices-in': field 'target'.url: inbound jobs' target is an upstream path",
        ),
        (
            ("  on_unknown: pass", "  on_unknown: pass\n  retries: 3"),
            "routes.yaml: syncs[1] 'invoices-in': unknown field 'retries' (expected one of",
        ),
        (
            ("    cursor_param: since", "    cursor_param: since\n    cursor: x"),
            "syncs[1] 'invoices-in': field 'source': unknown field 'cursor'",
        ),
    ],
)
def test_bad_entries_are_refused_naming_the_field(change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in GOOD
    assert message in problems(GOOD.replace(old, new, 1))


def test_every_problem_is_reported_at_once() -> None:
    text = GOOD.replace("entity_type: rate", "entity_type: 1").replace(
        "path: /invoices/import", "path: invoices"
    )
    lines = problems(text).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("routes.yaml: syncs[0] 'rates-out': field 'entity_type'")
    assert lines[1].startswith("routes.yaml: syncs[1] 'invoices-in': field 'target'.path")


def test_duplicate_names_and_wrong_shapes() -> None:
    twice = GOOD + GOOD.split("- name: invoices-in", 1)[1].join(["- name: invoices-in", ""])
    assert "syncs[2] 'invoices-in': field 'name': duplicate sync job name" in problems(twice)
    assert "routes.yaml: field 'syncs': must be a list of sync jobs" in problems("{a: 1}")
    assert "routes.yaml: syncs[0]: must be a mapping" in problems("- just-a-name")
    assert "syncs[0]: field 'name': required" in problems("- {tenant: x}")


def test_custom_header_auth_reads_each_variable() -> None:
    text = GOOD.replace(
        "auth: {type: bearer, token_env: RMS_TOKEN}",
        "auth: {type: headers, headers: {X-Api-Key: ACC_KEY, X-Other: MISSING}}",
    )
    assert "field 'target'.auth.headers.X-Other: environment variable MISSING is not set" in (
        problems(text)
    )
    ok = parse(text, {**ENV, "MISSING": "m"})
    assert ok[0].auth.secret({**ENV, "MISSING": "m"}) == {
        "headers": {"X-Api-Key": "k", "X-Other": "m"}
    }
