"""services/metrics_merge.py: one exposition from several processes' families."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from services.metrics_merge import SAMPLES_SENT, Incarnations, Rendered, Report, merge_rendered, render


def merge(*registries: CollectorRegistry) -> list[Metric]:
    """The processes' registries through the production path (render, merge_rendered), parsed back."""
    return list(text_string_to_metric_families(exposition_text(*registries)))


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
    merged = merge(process(2, None, [0.05]), process(3, None, [0.5, 2.0]))
    assert sample(merged, "jobs_total", job="a") == 5
    assert sample(merged, "duration_seconds_bucket", le="0.1") == 1
    assert sample(merged, "duration_seconds_bucket", le="1.0") == 2
    assert sample(merged, "duration_seconds_bucket", le="+Inf") == 3
    assert sample(merged, "duration_seconds_count") == 3


def test_a_gauge_set_by_one_process_keeps_its_value() -> None:
    merged = merge(process(0, None, []), process(0, -1250.5, []))
    assert sample(merged, "pnl") == -1250.5


def test_created_keeps_the_earliest_and_families_appear_once_in_a_valid_exposition() -> None:
    parent, worker = process(1, None, []), process(1, 3.0, [])
    registries = (parent, worker, process(1, None, []))
    created = [s.value for r in (parent, worker) for f in r.collect() for s in f.samples if s.name == "jobs_created"]
    assert sample(merge(*registries), "jobs_created", job="a") == min(created)

    text = exposition_text(*registries)
    assert text.count("# TYPE jobs_total counter") == 1
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    assert {"jobs", "pnl", "duration_seconds"} <= set(parsed)


def test_a_name_reused_with_another_type_keeps_the_first_family() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    Gauge("depth", "Queue depth.", registry=first).set(4)
    Counter("depth", "Not a gauge.", registry=second).inc(9)
    merged = merge(first, second)
    assert [f.type for f in merged if f.name == "depth"] == ["gauge"]
    assert sample(merged, "depth") == 4


def exposition_text(*registries: CollectorRegistry) -> str:
    return merge_rendered([render(r.collect()) for r in registries]).decode()


def test_a_family_with_samples_in_one_process_is_copied_as_that_process_rendered_it() -> None:
    parent, worker = CollectorRegistry(), CollectorRegistry()
    Gauge("exposure", "Per account.", ["account"], registry=parent)  # registered here, set only in the worker
    g = Gauge("exposure", "Per account.", ["account"], registry=worker)
    for i in range(SAMPLES_SENT + 10):  # too large to travel as samples: text only
        g.labels(f"a{i}").set(i)
    rendered = render(worker.collect())
    assert rendered[0].samples is None
    text = exposition_text(parent, worker)
    assert rendered[0].block.decode() in text
    assert text.count("# TYPE exposure gauge") == 1


def test_large_families_in_several_processes_are_read_back_from_their_text_and_added_up() -> None:
    registries = [CollectorRegistry() for _ in range(3)]
    for n, registry in enumerate(registries):
        c = Counter("orders", "Per account.", ["account"], registry=registry)
        for i in range(SAMPLES_SENT + 1):
            c.labels(f"a{i}").inc(n + 1)
    parsed = {f.name: f for f in text_string_to_metric_families(exposition_text(*registries))}
    totals = {s.labels["account"]: s.value for s in parsed["orders"].samples if s.name == "orders_total"}
    assert len(totals) == SAMPLES_SENT + 1
    assert set(totals.values()) == {6.0}  # 1 + 2 + 3
    assert len(parsed["orders_created"].samples) == SAMPLES_SENT + 1  # the text format's own family for _created


def test_only_the_skipped_prefixes_are_left_out_of_a_render() -> None:
    registry = CollectorRegistry()
    Gauge("process_open_fds", "Theirs.", registry=registry).set(3)
    Gauge("risk_depth", "Ours.", registry=registry).set(4)
    assert [r.name for r in render(registry.collect(), skip=("process_", "python_"))] == ["risk_depth"]


def worker_report(pid: int, runs: float, depth: float) -> Report:
    registry = CollectorRegistry()
    Counter("runs", "Runs.", registry=registry).inc(runs)
    Gauge("depth", "Queue depth.", registry=registry).set(depth)
    return Report(pid, render(registry.collect()))


def merged_value(sources: list[list[Rendered]], name: str) -> float | None:
    text = merge_rendered(sources).decode()
    values = [s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]
    return values[0] if values else None


def test_a_restarted_workers_counters_continue_from_what_the_dead_one_last_reported() -> None:
    kept = Incarnations()
    assert merged_value(kept.sources("collection", worker_report(100, 7, 3)), "runs_total") == 7
    # killed: the next scrape finds no process; its counters stay as last seen, its gauge is not shown stale
    absent = kept.sources("collection", None)
    assert merged_value(absent, "runs_total") == 7
    assert merged_value(absent, "depth") is None
    # a new process counts from zero: the merged counter goes on from 7 instead of dropping to 2
    assert merged_value(kept.sources("collection", worker_report(200, 2, 1)), "runs_total") == 9
    assert merged_value(kept.sources("collection", worker_report(200, 5, 1)), "runs_total") == 12
    assert merged_value(kept.sources("collection", worker_report(300, 1, 0)), "runs_total") == 13  # two retired
    assert merged_value(kept.sources("collection", worker_report(300, 1, 4)), "depth") == 4  # the live gauge only


def test_incarnations_are_kept_per_worker() -> None:
    kept = Incarnations()
    kept.sources("collection", worker_report(100, 7, 0))
    assert merged_value(kept.sources("evaluation", worker_report(101, 1, 0)), "runs_total") == 1
    assert merged_value(kept.sources("collection", worker_report(100, 8, 0)), "runs_total") == 8
