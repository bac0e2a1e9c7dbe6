"""One ``/metrics`` for a service whose work runs in several processes (services/workers.py).

Each process renders its own families to the text format (`render`): a worker does it in its own process, so
the scheduling process receives bytes, not thousands of sample objects to unpickle under its GIL (one C call
that the scheduler's thread cannot interrupt). `merge_rendered` then writes one exposition:

- a family with samples in one process only (the per-account and per-limit gauges of the evaluation worker, the
  tick path's families) is that process's block, copied as it is;
- a family with samples in several processes is merged sample by sample: counters and histogram buckets, sums
  and counts add up; a gauge is set by the one process that does the work, the others export 0 or nothing;
  a counter's ``_created`` keeps the earliest;
- a name reused with another type keeps the first family (never an invalid exposition).

The worker's ``process_*``/``python_*`` families are not forwarded: they describe that process, not the service.

A worker that is restarted starts its counters from zero; `Incarnations` keeps what the dead one last
reported, so the merged counters never go down (Prometheus would read a drop as a reset of the whole series).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

# A family with more samples than this travels as text only; if another process has samples in it too (not the
# case for any family of this service today) its block is parsed back for the merge.
SAMPLES_SENT = 256


@dataclass(frozen=True, slots=True)
class Rendered:
    """One family of one process: its text block, and its samples when it is small (for a merge)."""

    name: str
    documentation: str
    type: str
    unit: str
    block: bytes  # as `generate_latest` writes it
    sample_count: int
    samples: tuple[Sample, ...] | None  # None: more than SAMPLES_SENT, read them back from ``block``

    def parsed_samples(self) -> Iterable[Sample]:
        if self.samples is not None:
            return self.samples
        # Only the sample names and labels matter: the parser splits a counter's _created into a family of
        # its own, but every sample keeps its full name, which is what the merge keys on.
        return [s for f in text_string_to_metric_families(self.block.decode()) for s in f.samples]


@dataclass(frozen=True, slots=True)
class Report:
    """What a worker answers to a scrape: its process id and its rendered families."""

    pid: int
    families: list[Rendered]


# Families whose samples only grow over a process's life: what a dead incarnation leaves to the total.
MONOTONIC = ("counter", "histogram", "summary")


@dataclass
class _Worker:
    pid: int | None = None
    last: list[Rendered] = field(default_factory=list)  # the current incarnation's monotonic families
    retired: list[Rendered] = field(default_factory=list)  # every earlier incarnation's, added up


class Incarnations:
    """Each worker's families for one exposition, its earlier incarnations' counters included.

    - A report from a new process id retires the previous incarnation: its last reported counters, histograms
      and summaries are added to what earlier ones left. Increments between its last scrape and its death are
      lost, but the merged series never goes down.
    - A worker that does not answer (dead, restarting, busy past the scrape's bound) is shown by its last
      counters; its gauges are left out rather than shown stale.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # scrapes may overlap
        self._workers: dict[str, _Worker] = {}

    def sources(self, name: str, report: Report | None) -> list[list[Rendered]]:
        with self._lock:
            worker = self._workers.setdefault(name, _Worker())
            if report is None:
                return [worker.last, worker.retired]
            if worker.pid is not None and report.pid != worker.pid:
                worker.retired = _added(worker.retired, worker.last)
            worker.pid = report.pid
            worker.last = [f for f in report.families if f.type in MONOTONIC and f.sample_count]
            return [report.families, worker.retired]


def _added(*sources: Sequence[Rendered]) -> list[Rendered]:
    return [p[0] if len(p) == 1 else render([_merged(p)])[0] for p in _by_name(sources).values()]


class _One:
    def __init__(self, family: Metric) -> None:
        self._family = family

    def collect(self) -> list[Metric]:
        return [self._family]


def render(families: Iterable[Metric], skip: tuple[str, ...] = ()) -> list[Rendered]:
    """Each family's text block (families whose name starts with one of ``skip`` are left out)."""
    out = []
    for family in families:
        if skip and family.name.startswith(skip):
            continue
        n = len(family.samples)
        out.append(
            Rendered(
                family.name,
                family.documentation,
                family.type,
                family.unit,
                generate_latest(_One(family)),  # anything with collect() will do
                n,
                tuple(family.samples) if n <= SAMPLES_SENT else None,
            )
        )
    return out


def merge_rendered(sources: Sequence[Sequence[Rendered]]) -> bytes:
    """One exposition from several processes' rendered families (the first source's order, then new names)."""
    out = []
    for parts in _by_name(sources).values():
        with_samples = [p for p in parts if p.sample_count]
        if len(with_samples) <= 1:
            out.append((with_samples or parts)[0].block)  # copied, not re-rendered
        else:
            out.append(generate_latest(_One(_merged(with_samples))))
    return b"".join(out)


def _by_name(sources: Sequence[Sequence[Rendered]]) -> dict[str, list[Rendered]]:
    by_name: dict[str, list[Rendered]] = {}
    for source in sources:
        for part in source:
            parts = by_name.setdefault(part.name, [])
            if not parts or parts[0].type == part.type:  # a name reused with another type: keep the first
                parts.append(part)
    return by_name


def _merged(parts: Sequence[Rendered]) -> Metric:
    first = parts[0]
    family = Metric(first.name, first.documentation, first.type, first.unit)
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], Sample] = {}
    for part in parts:
        for sample in part.parsed_samples():
            key = (sample.name, tuple(sorted(sample.labels.items())))
            seen = samples.get(key)
            if seen is None:
                samples[key] = sample
            elif sample.name.endswith("_created"):
                samples[key] = seen._replace(value=min(seen.value, sample.value))
            else:
                samples[key] = seen._replace(value=seen.value + sample.value)
    family.samples = list(samples.values())
    return family


def exposition(remote: Callable[[], Sequence[Sequence[Rendered]]] | None = None) -> Callable[[], bytes]:
    """The ``/metrics`` body: this process's registry, with ``remote()``'s rendered families merged in."""
    if remote is None:
        return lambda: generate_latest(REGISTRY)
    return lambda: merge_rendered([render(REGISTRY.collect()), *remote()])
