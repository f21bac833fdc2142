"""``/metrics``: Prometheus text from a real broker's ``stats``, read back with
``prometheus_client``'s own parser (what a scraper sees)."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from client import Client, Queue, Worker
from client.gateway.metrics import Snapshot, render
from protocol.replies import QueueStats
from tests.tools.clienttools import running, until
from tests.tools.gatewaytools import RunningGateway, fail_jobs, gateway, http, make_gateway

__all__ = ["gateway", "http", "make_gateway"]  # fixtures, imported for pytest


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, sorted labels); the parser raises on malformed text."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert isinstance(sample, Sample)
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_follow_the_broker(gateway: RunningGateway,
                                         http: httpx.AsyncClient) -> None:
    await fail_jobs(gateway.broker_url, "mail", 2)
    async with Client(gateway.broker_url) as producer:
        mail = producer.queue("mail")
        await mail.add_bulk([("ok", i) for i in range(3)])
        async with running(Worker(gateway.broker_url, "mail", lambda job: job.data,
                                  handle_signals=False, poll_wait=0.2)):
            await until(lambda: _completed(mail, 3), 30)
        await mail.add_bulk([("later", i) for i in range(4)])
        await mail.pause()

    reply = await http.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    values = samples(reply.text)
    assert values[("jobwire_jobs", (("queue", "mail"), ("state", "waiting")))] == 4
    assert values[("jobwire_jobs", (("queue", "mail"), ("state", "failed")))] == 2
    assert values[("jobwire_jobs", (("queue", "mail"), ("state", "completed")))] == 3
    assert values[("jobwire_jobs", (("queue", "mail"), ("state", "active")))] == 0
    assert values[("jobwire_queue_paused", (("queue", "mail"),))] == 1
    assert values[("jobwire_jobs_completed_total", (("queue", "mail"),))] == 3
    assert values[("jobwire_jobs_failed_total", (("queue", "mail"),))] == 2
    assert values[("jobwire_queue_oldest_waiting_seconds", (("queue", "mail"),))] >= 0
    assert values[("jobwire_broker_connections", ())] >= 1
    assert values[("jobwire_broker_uptime_seconds", ())] > 0
    assert values[("jobwire_broker_draining", ())] == 0
    assert any(name == "jobwire_broker_info" for name, _ in values)


async def _completed(queue: Queue, count: int) -> bool:
    return (await queue.stats()).completed >= count


def test_render_is_valid_exposition_text_for_any_snapshot() -> None:
    """Pure: names with quotes and newlines are escaped; an empty broker renders too."""
    odd = 'we"ird\nname\\'
    text = render(Snapshot(
        {odd: QueueStats(1, 2, 3, 4, 5, True, 1500, 6, 7)},
        {"version": "0.1.0", "connections": 2, "uptime_ms": 2500, "draining": True},
    )).decode()
    values = samples(text)
    assert values[("jobwire_jobs", (("queue", odd), ("state", "active")))] == 3
    assert values[("jobwire_queue_oldest_waiting_seconds", (("queue", odd),))] == 1.5
    assert values[("jobwire_broker_uptime_seconds", ())] == 2.5
    assert values[("jobwire_broker_draining", ())] == 1
    empty = samples(render(Snapshot({}, {})).decode())
    assert ("jobwire_broker_connections", ()) not in empty  # unknown, not zero


DOCS = Path(__file__).resolve().parents[2] / "docs"


def exported_names() -> set[str]:
    """Every family and sample name ``/metrics`` can carry (a snapshot with every field set)."""
    counter = {"total": 1, "last_minute": 1}
    histogram = {"count": 1, "sum": 1.0, "buckets": [[1.0, 1]]}
    measured = {
        "broker": {"rss_bytes": 1, "journal_bytes": 1, "wal_bytes": 1, "subscriptions": 1,
                   "commits": counter, "commit_failures": counter,
                   "commit_batch_size": histogram, "commit_latency_ms": histogram},
        "queues": {"q": {"added": counter, "completed": counter, "failed": counter,
                         "retried": counter, "expired": counter, "wait_ms": histogram,
                         "processing_ms": histogram}},
    }
    text = render(Snapshot({"q": QueueStats(1, 1, 1, 1, 1, True, 1, 1, 1)},
                           {"version": "x", "connections": 1, "uptime_ms": 1, "draining": False},
                           measured))
    families = {family.name for family in text_string_to_metric_families(text.decode())}
    return families | {name for name, _ in samples(text.decode())}


@pytest.mark.parametrize("doc", ["prometheus-alerts.yml", "grafana-dashboard.json"])
def test_the_example_rules_and_dashboard_use_exported_metrics(doc: str) -> None:
    used = set(re.findall(r"\bjobwire_[a-z_]+", (DOCS / doc).read_text()))
    assert used and used <= exported_names(), used - exported_names()


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool is not installed (apt-get install prometheus)")
async def test_promtool_accepts_the_metrics_and_the_rules(http: httpx.AsyncClient) -> None:
    await http.post("/api/queues/a/jobs", json={"name": "x"})
    text = (await http.get("/metrics")).content
    for command, stdin in ((["promtool", "check", "metrics"], text),
                           (["promtool", "check", "rules", str(DOCS / "prometheus-alerts.yml")],
                            b"")):
        proc = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        output, _ = await asyncio.wait_for(proc.communicate(stdin), 60)
        assert proc.returncode == 0, output.decode()
