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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

Families = Sequence[Metric]
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


def merge(local: Iterable[Metric], remote: Iterable[Families]) -> list[Metric]:
    """``local``'s families with every remote family's samples merged in, as structured families."""
    return [_merged(parts) for parts in _by_name([render(local), *(render(r) for r in remote)]).values()]


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
    local: CollectorRegistry = REGISTRY
    return lambda: merge_rendered([render(local.collect()), *remote()])
