"""Metrics across worker processes (``serve --workers N``): every gauge says how it combines;
one process keeps the in-memory registry (tests/integration/test_workers.py runs the
multiprocess mode)."""

from __future__ import annotations

from prometheus_client import Gauge

from gateway import metrics


def test_every_gauge_declares_how_processes_combine() -> None:
    gauges = [v for v in vars(metrics).values() if isinstance(v, Gauge)]
    assert gauges
    undeclared = [g._name for g in gauges if g._multiprocess_mode == "all"]
    assert not undeclared, f"no multiprocess_mode: {undeclared}"


def test_single_process_keeps_the_in_memory_registry() -> None:
    assert not metrics.MULTIPROCESS  # the test process has no PROMETHEUS_MULTIPROC_DIR
    assert b"gateway_requests_in_flight" in metrics.exposition()
