"""``/metrics``: the broker's numbers in Prometheus' text format, through ``prometheus_client``.

Each scrape asks the broker for ``stats`` (every queue's counts and totals, the broker's
connections and uptime) and ``metrics`` (counters, histograms, process gauges) and renders that
one snapshot with a custom collector in a fresh registry, so the gateway keeps no metric state of
its own and two gateways on one broker agree.

The collector is a list of *family builders*: functions from a ``Snapshot`` to metric families.
The families of the broker's ``metrics`` operation (wait and processing histograms, commit batch
size and latency, RSS, journal bytes) are built in ``client.gateway.metrics_measured``. Names
follow Prometheus conventions: base units (seconds), ``_total`` counters (``prometheus_client``
adds the suffix to counter families), few label values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from client.gateway.metrics_measured import broker_measured_families, queue_measured_families
from protocol.model import JobState
from protocol.replies import QueueStats

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
STATES: Final = tuple(state.value for state in JobState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one scrape learned from the broker."""

    queues: Mapping[str, QueueStats]
    broker: Mapping[str, Any] = field(default_factory=dict)
    """The ``broker`` map of the ``stats`` reply: ``version``, ``connections``, ``uptime_ms``,
    ``draining`` (more keys may appear; unknown ones are ignored)."""
    measured: Mapping[str, Any] = field(default_factory=dict)
    """The ``metrics`` reply (``{"broker": ..., "queues": ...}``, with buckets)."""


def queue_families(snapshot: Snapshot) -> Iterator[Metric]:
    """Per-queue gauges (jobs by state, paused, oldest waiting age) and lifetime counters."""
    jobs = GaugeMetricFamily("jobwire_jobs", "Jobs in each state now (completed and failed: "
                             "those retained).", labels=["queue", "state"])
    paused = GaugeMetricFamily("jobwire_queue_paused", "1 while the queue is paused.",
                               labels=["queue"])
    oldest = GaugeMetricFamily(
        "jobwire_queue_oldest_waiting_seconds",
        "How long the longest-due waiting job has been due (0 when none waits).", labels=["queue"],
    )
    completed = CounterMetricFamily("jobwire_jobs_completed", "Jobs completed since the queue "
                                    "was created (survives retention and restarts).",
                                    labels=["queue"])
    failed = CounterMetricFamily("jobwire_jobs_failed", "Jobs that ended failed since the "
                                 "queue was created (survives retention and restarts).",
                                 labels=["queue"])
    for name in sorted(snapshot.queues):
        stats = snapshot.queues[name]
        for state in STATES:
            jobs.add_metric([name, state], getattr(stats, state))
        paused.add_metric([name], 1.0 if stats.paused else 0.0)
        oldest.add_metric([name], (stats.oldest_waiting_ms or 0) / 1000)
        completed.add_metric([name], stats.total_completed)
        failed.add_metric([name], stats.total_failed)
    yield from (jobs, paused, oldest, completed, failed)


def broker_families(snapshot: Snapshot) -> Iterator[Metric]:
    """Broker-wide gauges: connections, uptime, draining, and an info metric with the version."""
    broker = snapshot.broker
    info = GaugeMetricFamily("jobwire_broker_info", "The broker's software version (always 1).",
                             labels=["version"])
    info.add_metric([str(broker.get("version", ""))], 1.0)
    yield info
    numbers = (
        ("connections", "jobwire_broker_connections", "Open client connections.", 1.0),
        ("uptime_ms", "jobwire_broker_uptime_seconds", "Seconds since the broker started.", 1e-3),
    )
    for key, name, text, scale in numbers:
        value = broker.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            yield GaugeMetricFamily(name, text, value=value * scale)
    if "draining" in broker:
        yield GaugeMetricFamily("jobwire_broker_draining", "1 while the broker shuts down.",
                                value=1.0 if broker["draining"] else 0.0)


def measured_families(snapshot: Snapshot) -> Iterator[Metric]:
    """The ``metrics`` operation's families (``client.gateway.metrics_measured``)."""
    yield from queue_measured_families(snapshot.measured)
    yield from broker_measured_families(snapshot.measured)


Builder = Callable[[Snapshot], Iterable[Metric]]
BUILDERS: Final[tuple[Builder, ...]] = (queue_families, broker_families, measured_families)


class SnapshotCollector(Collector):
    """A ``prometheus_client`` collector over one ``Snapshot``."""

    def __init__(self, snapshot: Snapshot, builders: Iterable[Builder] = BUILDERS) -> None:
        self.snapshot = snapshot
        self.builders = tuple(builders)

    def collect(self) -> Iterator[Metric]:
        for build in self.builders:
            yield from build(self.snapshot)


def render(snapshot: Snapshot) -> bytes:
    """The exposition text (format 0.0.4) for one snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return generate_latest(registry)
