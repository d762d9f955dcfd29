"""Dashboards as code: writes grafana/dashboards/*.json from the panel lists below.

    python grafana/dashboards.py          # rewrite the JSON files
    python grafana/dashboards.py --check  # exit 1 if a JSON file is out of date (CI)

Every query here is evaluated against a real Prometheus scraping a real gateway by
tests/integration/test_observability.py: a query error or a panel without series fails.
Template variables: $route and $external_system (label values, multi-select, "All").
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
RI = "$__rate_interval"
ROUTE = 'route=~"$route"'
SYSTEM = 'external_system=~"$external_system"'


def q(expr: str, legend: str = "") -> dict[str, Any]:
    return {"expr": expr, "legendFormat": legend}


def panel(
    title: str,
    targets: list[dict[str, Any]],
    unit: str = "short",
    kind: str = "timeseries",
    description: str = "",
    thresholds: list[tuple[float, str]] | None = None,
    base: str = "green",
) -> dict[str, Any]:
    steps = [{"color": base, "value": None}]
    steps += [{"color": color, "value": value} for value, color in thresholds or []]
    custom: dict[str, Any] = {}
    if thresholds and kind == "timeseries":
        custom = {"thresholdsStyle": {"mode": "line"}}
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [
            {**t, "refId": chr(ord("A") + i), "datasource": DATASOURCE}
            for i, t in enumerate(targets)
        ],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": {"mode": "absolute", "steps": steps},
                "custom": custom,
            },
            "overrides": [],
        },
        "options": {},
    }


def quantiles(metric: str, by: str, selector: str) -> list[dict[str, Any]]:
    return [
        q(
            f"histogram_quantile({p}, sum by (le, {by}) (rate({metric}_bucket{{{selector}}}[{RI}])))",
            f"p{int(p * 100)} {{{{{by}}}}}",
        )
        for p in (0.5, 0.95, 0.99)
    ]


def variable(name: str, metric: str, label: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label.replace("_", " "),
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": f"label_values({metric}, {label})", "refId": name},
        "definition": f"label_values({metric}, {label})",
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "refresh": 2,
    }


def dashboard(
    uid: str, title: str, panels: list[dict[str, Any]], variables: list[dict[str, Any]]
) -> dict[str, Any]:
    laid = []
    for i, p in enumerate(panels):
        width = 24 if p.get("_wide") else 12
        p = {k: v for k, v in p.items() if k != "_wide"}
        laid.append(
            {
                **p,
                "id": i + 1,
                "gridPos": {"h": 8, "w": width, "x": (i % 2) * 12, "y": (i // 2) * 8},
            }
        )
    return {
        "uid": uid,
        "title": title,
        "tags": ["integration-hub", "gateway"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {"list": variables},
        "panels": laid,
    }


def overview() -> dict[str, Any]:
    total = f"sum(rate(gateway_requests_total{{{ROUTE}}}[{RI}]))"
    errors = f'sum(rate(gateway_requests_total{{{ROUTE},status_class="5xx"}}[{RI}]))'
    return dashboard(
        "gateway-overview",
        "Gateway — overview (on-call)",
        [
            panel(
                "Traffic by route",
                [q(f"sum by (route) (rate(gateway_requests_total{{{ROUTE}}}[{RI}]))", "{{route}}")],
                "reqps",
            ),
            panel(
                "Error rate (5xx share; alert at 5 %)",
                [q(f"{errors} / {total}", "5xx share")],
                "percentunit",
                thresholds=[(0.05, "red")],
                description="Share of calls answered 5xx (gateway or upstream). "
                "GatewayHighErrorRate fires above 5 % for 5 minutes.",
            ),
            panel(
                "Answers by status class",
                [
                    q(
                        f"sum by (status_class) (rate(gateway_requests_total{{{ROUTE}}}[{RI}]))",
                        "{{status_class}}",
                    )
                ],
                "reqps",
            ),
            panel(
                "Latency per route (p50 / p95 / p99)",
                quantiles("gateway_request_duration_seconds", "route", ROUTE),
                "s",
            ),
            panel(
                "Gateway vs upstream time (p95)",
                [
                    q(
                        f"histogram_quantile(0.95, sum by (le) (rate(gateway_request_duration_seconds_bucket{{{ROUTE}}}[{RI}])))",
                        "whole call",
                    ),
                    q(
                        f"histogram_quantile(0.95, sum by (le) (rate(gateway_upstream_duration_seconds_bucket{{{ROUTE}}}[{RI}])))",
                        "upstream",
                    ),
                ],
                "s",
            ),
            panel(
                "Upstream errors by kind",
                [
                    q(
                        f"sum by (route, kind) (rate(gateway_upstream_errors_total{{{ROUTE}}}[{RI}]))",
                        "{{route}} {{kind}}",
                    )
                ],
                "reqps",
            ),
            panel(
                "Authentication failures by reason",
                [q(f"sum by (reason) (rate(gateway_auth_failures_total[{RI}]))", "{{reason}}")],
                "reqps",
            ),
            panel(
                "Rate-limited calls (429)",
                [
                    q(
                        f"sum by (route) (rate(gateway_rate_limited_total{{{ROUTE}}}[{RI}]))",
                        "{{route}}",
                    )
                ],
                "reqps",
            ),
            panel("In-flight requests", [q("sum(gateway_requests_in_flight)", "in flight")]),
            panel("Gateway processes up", [q('sum(up{job="gateway"})', "up")], kind="stat"),
        ],
        [variable("route", "gateway_requests_total", "route")],
    )


def sync() -> dict[str, Any]:
    return dashboard(
        "gateway-sync",
        "Gateway — data sync",
        [
            panel(
                "Sync lag per external system (alert at 1 h)",
                [
                    q(
                        f"max by (external_system) (gateway_sync_lag_seconds{{{SYSTEM}}})",
                        "{{external_system}}",
                    )
                ],
                "s",
                thresholds=[(3600, "red")],
                description="Age of the oldest entity not in sync. GatewaySyncLagHigh fires above "
                "1 hour.",
            ),
            panel(
                "Time since last successful sync",
                [
                    q(
                        f"max by (external_system) (gateway_sync_since_last_success_seconds{{{SYSTEM}}})",
                        "{{external_system}}",
                    )
                ],
                "s",
            ),
            panel(
                "Entities by status",
                [
                    q(
                        f"max by (external_system, status) (gateway_sync_entities{{{SYSTEM}}})",
                        "{{external_system}} {{status}}",
                    )
                ],
            ),
            panel(
                "Sync failures",
                [
                    q(
                        f"sum by (external_system) (rate(gateway_sync_failures_total{{{SYSTEM}}}[{RI}]))",
                        "{{external_system}}",
                    )
                ],
                "ops",
            ),
            panel(
                "Conflicts (last hour)",
                [
                    q(
                        f"sum by (external_system) (increase(gateway_sync_conflicts_total{{{SYSTEM}}}[1h]))",
                        "{{external_system}}",
                    )
                ],
            ),
            panel(
                "Reports by source and outcome",
                [
                    q(
                        f"sum by (source, outcome) (rate(gateway_sync_reports_total[{RI}]))",
                        "{{source}} {{outcome}}",
                    )
                ],
                "ops",
            ),
            panel(
                "Sync jobs: time since last successful run (alert at 1 h)",
                [q("max by (job) (gateway_sync_job_since_last_success_seconds)", "{{job}}")],
                "s",
                thresholds=[(3600, "red")],
                description="Scheduled batch sync jobs (routes.yaml syncs:). "
                "GatewaySyncJobNotSucceeding fires above 1 hour.",
            ),
            panel(
                "Sync job runs by status",
                [
                    q(
                        "sum by (job, status) (increase(gateway_sync_job_runs_total[1h]))",
                        "{{job}} {{status}}",
                    )
                ],
            ),
            panel(
                "Sync job items by outcome",
                [
                    q(
                        f"sum by (job, outcome) (rate(gateway_sync_job_items_total[{RI}]))",
                        "{{job}} {{outcome}}",
                    )
                ],
                "ops",
            ),
            panel(
                "Sync job run duration (p95)",
                [
                    q(
                        "histogram_quantile(0.95, sum by (job, le) "
                        f"(rate(gateway_sync_job_run_duration_seconds_bucket[{RI}])))",
                        "{{job}}",
                    )
                ],
                "s",
            ),
        ],
        [variable("external_system", "gateway_sync_entities", "external_system")],
    )


def internals() -> dict[str, Any]:
    return dashboard(
        "gateway-internals",
        "Gateway — internals",
        [
            panel("Log writer queue depth", [q("sum(gateway_log_queue_depth)", "rows queued")]),
            panel(
                "api_logs rows written / journaled / dropped",
                [
                    q(f"sum(rate(gateway_log_rows_written_total[{RI}]))", "written"),
                    q(f"sum(rate(gateway_log_rows_journaled_total[{RI}]))", "journaled"),
                    q(f"sum(rate(gateway_log_rows_dropped_total[{RI}]))", "dropped"),
                ],
                "ops",
            ),
            panel("Log journal size", [q("sum(gateway_log_journal_bytes)", "journal")], "bytes"),
            panel(
                "Database reachable (log writer)",
                [q("min(gateway_log_database_up)", "up")],
                kind="stat",
                thresholds=[(0, "red"), (1, "green")],
            ),
            panel(
                "COPY batch duration (p99)",
                [
                    q(
                        f"histogram_quantile(0.99, sum by (le) (rate(gateway_log_flush_duration_seconds_bucket[{RI}])))",
                        "p99",
                    )
                ],
                "s",
            ),
            panel(
                "Partition maintenance runs (last day)",
                [
                    q(
                        "sum by (result) (increase(gateway_partition_maintenance_runs_total[1d]))",
                        "{{result}}",
                    )
                ],
            ),
            panel(
                "Mapping cache hit ratio",
                [
                    q(
                        f"sum(rate(gateway_mapping_cache_hits_total[{RI}])) / (sum(rate(gateway_mapping_cache_hits_total[{RI}])) + sum(rate(gateway_mapping_cache_misses_total[{RI}])))",
                        "hit ratio",
                    )
                ],
                "percentunit",
            ),
            panel(
                "Mapping cache: entries, evictions, database lookups",
                [
                    q("sum(gateway_mapping_cache_entries)", "entries"),
                    q(
                        f"sum by (reason) (rate(gateway_mapping_cache_evictions_total[{RI}]))",
                        "evicted: {{reason}}",
                    ),
                    q(f"sum(rate(gateway_mapping_db_lookups_total[{RI}]))", "database lookups"),
                ],
            ),
            panel(
                "Mapping invalidation listener up",
                [q("min(gateway_mapping_listener_up)", "up")],
                kind="stat",
                thresholds=[(0, "red"), (1, "green")],
            ),
            panel(
                "Sync statistics runs",
                [q("sum by (result) (increase(gateway_sync_stats_runs_total[1h]))", "{{result}}")],
            ),
        ],
        [],
    )


# Webhook alert thresholds, shared with grafana/alerts.yml (keep them equal).
WEBHOOK_SUCCESS_ALERT = 0.9  # attempt success ratio under which GatewayWebhookFailing fires
WEBHOOK_OLDEST_ALERT = 3600  # seconds; GatewayWebhookBacklogOld fires above


def webhooks() -> dict[str, Any]:
    attempts = f'sum(rate(gateway_webhook_attempts_total{{result!="released"}}[{RI}]))'
    delivered = f'sum(rate(gateway_webhook_attempts_total{{result="delivered"}}[{RI}]))'
    finished = f"sum(rate(gateway_webhook_deliveries_total[{RI}]))"
    ok = f'sum(rate(gateway_webhook_deliveries_total{{result="delivered"}}[{RI}]))'
    lag = "gateway_webhook_delivery_lag_seconds_bucket"
    return dashboard(
        "gateway-webhooks",
        "Gateway — outbound webhooks",
        [
            panel(
                "Success rate (alert under 90 %)",
                [q(f"{delivered} / {attempts}", "attempts"), q(f"{ok} / {finished}", "deliveries")],
                "percentunit",
                thresholds=[(WEBHOOK_SUCCESS_ALERT, "green")],
                base="red",
                description="attempts: share of attempts answered 2xx (released attempts, handed "
                "back at shutdown, are left out); deliveries: share of finished deliveries that "
                "were delivered rather than failed for good. GatewayWebhookFailing fires when "
                "the attempt share stays under 90 % for 15 minutes.",
            ),
            panel(
                "Attempts by result",
                [
                    q(
                        f"sum by (result) (rate(gateway_webhook_attempts_total[{RI}]))",
                        "{{result}}",
                    )
                ],
                "ops",
            ),
            panel(
                "Delivery lag, event created to delivered (p50 / p95 / p99)",
                [
                    q(
                        f"histogram_quantile({p}, sum by (le) (rate({lag}[{RI}])))",
                        f"p{int(p * 100)}",
                    )
                    for p in (0.5, 0.95, 0.99)
                ],
                "s",
                description="Retries included: a subscriber that was down shows here once it "
                "accepts again.",
            ),
            panel(
                "Attempt duration (p50 / p99)",
                [
                    q(
                        f"histogram_quantile({p}, sum by (le) (rate(gateway_webhook_attempt_duration_seconds_bucket[{RI}])))",
                        f"p{int(p * 100)}",
                    )
                    for p in (0.5, 0.99)
                ],
                "s",
            ),
            panel(
                "Pending deliveries",
                [q("max(gateway_webhook_pending_deliveries)", "pending or being attempted")],
                description="Unfinished deliveries in the database (every process counts the "
                "same rows: max, not sum).",
            ),
            panel(
                "Oldest pending delivery age (alert at 1 h)",
                [q("max(gateway_webhook_oldest_pending_age_seconds)", "oldest pending")],
                "s",
                thresholds=[(WEBHOOK_OLDEST_ALERT, "red")],
                description="GatewayWebhookBacklogOld fires above 1 hour for 10 minutes.",
            ),
            panel(
                "Failed attempts per subscriber system",
                [
                    q(
                        f"sum by (external_system) (rate(gateway_webhook_failed_attempts_total[{RI}]))",
                        "{{external_system}}",
                    )
                ],
                "ops",
                description="Subscription ids are not metric labels (unbounded); failures are "
                "counted per the subscription's external system (none without one). Per "
                "subscription: GET /admin/v1/webhooks/deliveries?subscription_id=…&status=failed.",
            ),
            panel(
                "Events emitted by proxied answers (routes.yaml emit)",
                [
                    q(
                        f"sum by (route, result) (rate(gateway_webhook_route_events_total[{RI}]))",
                        "{{route}} {{result}}",
                    )
                ],
                "ops",
                description="skipped: the answer was not a JSON object, or the caller had no "
                "tenant (public route); error: the event could not be stored in time (the "
                "answer was sent anyway).",
            ),
            panel(
                "Disabled subscriptions",
                [q("max(gateway_webhook_disabled_subscriptions)", "disabled")],
                kind="stat",
                thresholds=[(1, "orange")],
                description="Disabled by an admin, by a 410 Gone answer, or after failing "
                "everything for GATEWAY_WEBHOOK_DISABLE_AFTER.",
            ),
        ],
        [],
    )


DASHBOARDS = {"overview": overview, "sync": sync, "webhooks": webhooks, "internals": internals}


def render() -> dict[str, str]:
    return {
        f"{name}.json": json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()
    }


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        path = OUT / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)} (run python grafana/dashboards.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
