"""One ``/metrics`` for a service whose work runs in several processes (services/workers.py).

The parent's own families and each worker's (pulled at scrape time) are merged sample by sample: a
sample present in several processes is summed (counters, histogram buckets, sums and counts add up;
a gauge is set by the one process that does the work, the others export 0 or nothing), except a
counter's ``_created`` timestamp, which keeps the earliest. The worker's ``process_*``/``python_*``
families are not forwarded: they describe that process, not the service.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

Families = Sequence[Metric]


def merge(local: Iterable[Metric], remote: Iterable[Families]) -> list[Metric]:
    """``local``'s families with every remote family's samples merged in (see the module doc)."""
    merged: dict[str, Metric] = {}
    order: list[str] = []
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], Sample]] = {}
    for families in (list(local), *remote):
        for family in families:
            if family.name not in merged:
                merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                order.append(family.name)
                values[family.name] = {}
            elif merged[family.name].type != family.type:
                continue  # a name reused with another type: keep the first, never emit an invalid family
            samples = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                seen = samples.get(key)
                if seen is None:
                    samples[key] = sample
                elif sample.name.endswith("_created"):
                    samples[key] = seen._replace(value=min(seen.value, sample.value))
                else:
                    samples[key] = seen._replace(value=seen.value + sample.value)
    out = []
    for name in order:
        family = merged[name]
        family.samples = list(values[name].values())
        out.append(family)
    return out


class _Merged(Collector):
    def __init__(self, local: CollectorRegistry, remote: Callable[[], Sequence[Families]]) -> None:
        self._local = local
        self._remote = remote

    def collect(self) -> Iterable[Metric]:
        return merge(self._local.collect(), self._remote())


def exposition(remote: Callable[[], Sequence[Families]] | None = None) -> Callable[[], bytes]:
    """The ``/metrics`` body: this process's registry, with ``remote()``'s families merged in."""
    if remote is None:
        return lambda: generate_latest(REGISTRY)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(REGISTRY, remote))
    return lambda: generate_latest(registry)
