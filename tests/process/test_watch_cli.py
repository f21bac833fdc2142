"""``jobwire events``, ``jobwire workers`` and the rate columns of ``jobwire stats`` against a
real broker (the CLI runs in a thread, as ``tests/process/test_admin_cli.py`` runs it)."""

from __future__ import annotations

import asyncio
import io
import json

from client import Client
from client.cli import main
from protocol.operations import Reserve
from tests.conftest import RunningBroker
from tests.tools.clienttools import until


async def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(main, list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def url_of(broker: RunningBroker) -> str:
    return f"jobwire://{broker.host}:{broker.port}"


async def test_events_prints_one_line_per_event(broker: RunningBroker) -> None:
    assert broker.server is not None
    observe = broker.server.observe
    async with Client(url_of(broker)) as client:
        for flag in ((), ("--json",)):
            running = asyncio.ensure_future(
                cli("events", "mail", "--kind", "added", "--count", "2", "--url",
                    url_of(broker), *flag))
            await until(lambda: observe.subscriptions.count == 1, 30)
            jobs = await client.queue("mail").add_bulk([("send", 1), ("send", 2)])
            code, out, err = await asyncio.wait_for(running, 30)
            assert code == 0, err
            lines = out.splitlines()
            assert len(lines) == 2
            if flag:
                parsed = [json.loads(line) for line in lines]
                assert [(e["kind"], e["job_id"]) for e in parsed] == [
                    ("added", job.id) for job in jobs]
            else:
                assert all(" added " in line and "mail" in line for line in lines)
                assert f"{jobs[0].id} (send)" in lines[0]
            await until(lambda: observe.subscriptions.count == 0, 30)


async def test_workers_and_stats_columns(broker: RunningBroker) -> None:
    url = url_of(broker)
    async with Client(url, client_name="box:7") as producer:
        code, out, _ = await cli("workers", "--url", url)
        assert (code, out.strip()) == (0, "no workers connected")
        await producer.queue("w").add("t", 1)
        async with Client(url, client_name="box:8") as worker:
            await worker.connection.request(Reserve(("w",), 1, 0, None))
            code, out, _ = await cli("workers", "--url", url)
            header, row = out.splitlines()
            assert header.split()[:3] == ["CLIENT", "HOST", "QUEUES"]
            assert row.split()[0] == "box:8" and row.split()[2:4] == ["w", "1"]
            code, out, _ = await cli("workers", "--url", url, "--json", "--all")
            assert sorted(w["client"] for w in json.loads(out)) == [
                "box:7", "box:8", "jobwire-cli"]
        code, out, _ = await cli("stats", "--url", url)
        header = out.splitlines()[0]
        assert header.endswith("ADDED/S  DONE/S  WAIT P50  WAIT P99  RUN P50  RUN P99")
        code, out, _ = await cli("stats", "--url", url, "--json")
        assert json.loads(out)["w"]["metrics"]["wait_ms"]["count"] == 1
