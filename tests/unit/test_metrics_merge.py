"""services/metrics_merge.py: one exposition from several processes' families."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from services.metrics_merge import merge


def families(registry: CollectorRegistry) -> list[Metric]:
    return list(registry.collect())


def sample(merged: list[Metric], name: str, **labels: str) -> float | None:
    for family in merged:
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


def process(runs: float, gauge: float | None, observed: list[float]) -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("jobs_total", "Runs.", ["job"], registry=registry).labels("a").inc(runs)
    g = Gauge("pnl", "P&L.", registry=registry)
    if gauge is not None:
        g.set(gauge)
    h = Histogram("duration_seconds", "Durations.", buckets=(0.1, 1.0), registry=registry)
    for value in observed:
        h.observe(value)
    return registry


def test_counters_and_histograms_add_up_across_processes() -> None:
    parent, worker = process(2, None, [0.05]), process(3, None, [0.5, 2.0])
    merged = merge(families(parent), [families(worker)])
    assert sample(merged, "jobs_total", job="a") == 5
    assert sample(merged, "duration_seconds_bucket", le="0.1") == 1
    assert sample(merged, "duration_seconds_bucket", le="1.0") == 2
    assert sample(merged, "duration_seconds_bucket", le="+Inf") == 3
    assert sample(merged, "duration_seconds_count") == 3


def test_a_gauge_set_by_one_process_keeps_its_value() -> None:
    merged = merge(families(process(0, None, [])), [families(process(0, -1250.5, []))])
    assert sample(merged, "pnl") == -1250.5


def test_created_keeps_the_earliest_and_families_appear_once_in_a_valid_exposition() -> None:
    parent, worker = process(1, None, []), process(1, 3.0, [])
    merged = merge(families(parent), [families(worker), families(process(1, None, []))])
    created = [s.value for f in families(parent) + families(worker) for s in f.samples if s.name == "jobs_created"]
    assert sample(merged, "jobs_created", job="a") == min(created)

    class Fixed:
        def collect(self) -> list[Metric]:
            return merged

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert text.count("# TYPE jobs_total counter") == 1
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    assert {"jobs", "pnl", "duration_seconds"} <= set(parsed)


def test_a_name_reused_with_another_type_keeps_the_first_family() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    Gauge("depth", "Queue depth.", registry=first).set(4)
    Counter("depth", "Not a gauge.", registry=second).inc(9)
    merged = merge(families(first), [families(second)])
    assert [f.type for f in merged if f.name == "depth"] == ["gauge"]
    assert sample(merged, "depth") == 4
