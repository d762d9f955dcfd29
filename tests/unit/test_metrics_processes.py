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


def test_tallied_counts_reach_their_counter_when_metrics_are_read() -> None:
    """Cache hits are tallied as plain integers on the request path; /metrics (and, with
    several workers, the refresh loop) adds them to the counter."""
    hits = metrics.MAPPING_CACHE_HIT_TALLIES["out"]
    labels = {"way": "out"}

    def counted() -> float:
        value = metrics.REGISTRY.get_sample_value("gateway_mapping_cache_hits_total", labels)
        return value or 0.0

    metrics.flush_tallies()  # what earlier tests in this process left
    before = counted()
    hits.n += 5
    assert counted() == before  # nothing on the request path but the addition
    text = metrics.exposition().decode()
    assert f'gateway_mapping_cache_hits_total{{way="out"}} {before + 5}' in text
    hits.n += 2
    metrics.refresh()  # what each worker's refresh loop runs
    assert counted() == before + 7 and hits.n == 0
