"""HistogramTally: observations counted as plain numbers come out of the exposition as
Histogram.observe would have put them there."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from gateway import metrics

BUCKETS = (0.001, 0.005, 0.01, 0.1, 1.0)
VALUES = st.lists(
    st.one_of(
        st.sampled_from([0.0, *BUCKETS, 2.0]),  # on the bounds, and past the last
        st.floats(min_value=0, max_value=5, allow_nan=False),
    ),
    max_size=40,
)


def _pair() -> tuple[CollectorRegistry, Histogram, CollectorRegistry, Histogram]:
    r1, r2 = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("h", "d", ["route"], buckets=BUCKETS, registry=r1)
    h2 = Histogram("h", "d", ["route"], buckets=BUCKETS, registry=r2)
    return r1, h1, r2, h2


@settings(max_examples=200, deadline=None)
@given(first=VALUES, second=VALUES)
def test_tallied_histogram_equals_the_observed_one(first: list[float], second: list[float]) -> None:
    direct_registry, direct, tallied_registry, tallied = _pair()
    tally = metrics.HistogramTally(tallied.labels("r"))
    direct.labels("r")
    for batch in (first, second):  # two flushes: counts add up, nothing counted twice
        for v in batch:
            direct.labels("r").observe(v)
            tally.observe(v)
        tally.flush()
    got, expected = _samples(tallied_registry), _samples(direct_registry)
    got_sum, expected_sum = got.pop(("h_sum", "")), expected.pop(("h_sum", ""))
    assert got == expected  # bucket counts and count: exactly
    # The sum is added up in another order: equal but for the last bits of a float.
    assert math.isclose(got_sum, expected_sum, rel_tol=1e-12, abs_tol=1e-12)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    out = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue  # the series' creation time differs
            out[(sample.name, sample.labels.get("le", ""))] = sample.value
    return out


def test_nothing_reaches_the_series_before_a_flush() -> None:
    _, _, registry, histogram = _pair()
    tally = metrics.HistogramTally(histogram.labels("r"))
    tally.observe(0.003)
    assert registry.get_sample_value("h_count", {"route": "r"}) == 0
    tally.flush()
    assert registry.get_sample_value("h_count", {"route": "r"}) == 1
    assert registry.get_sample_value("h_bucket", {"route": "r", "le": "0.005"}) == 1
    assert registry.get_sample_value("h_bucket", {"route": "r", "le": "0.001"}) == 0
