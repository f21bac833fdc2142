"""Replies that list jobs stay within ``max_frame`` (protocol/SPEC.md §2, §8.3, §8.14).

Over real TCP, a ``StrictClient`` decodes the broker's frames with a ``FrameDecoder`` capped at the
``max_frame`` the broker announced, as a client that takes §2 at its word would: a larger reply
frame fails the test. A ``reserve`` of 1,000 jobs with large payloads and a ``list_failed`` of
many failed jobs must come back short, at least one job, and (paging on) miss and repeat nothing.
The core's byte budget and the config rule that one job always fits are checked without I/O.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from broker.config import ConfigError, load_settings
from broker.core import Core, CoreConfig
from broker.replysize import (
    RESERVED_JOB_OVERHEAD,
    UTF8_MAX,
    job_info_size,
    min_max_frame,
    reserve_budget,
)
from protocol.checks import MAX_NAME_LEN
from protocol.codec import FrameDecoder, encode_frame
from protocol.model import JobSpec, JobState
from protocol.replies import JobInfo, ReservedJob
from tests.conftest import RunningBroker
from tests.tools.wire import R_ID, R_PAYLOAD, R_TOKEN, job_spec

StartBroker = Callable[..., Awaitable[RunningBroker]]

MAX_FRAME = 512 * 1024
MAX_PAYLOAD = 16 * 1024
BIG = b"x" * MAX_PAYLOAD
PER_BATCH = 25  # 25 big jobs per enqueue keep each request under MAX_FRAME


class StrictClient:
    """One connection, one request at a time, refusing any frame above the announced max."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder(MAX_FRAME)
        self.ids = itertools.count(1)
        self.largest_frame = 0

    @classmethod
    async def connect(cls, broker: RunningBroker) -> StrictClient:
        reader, writer = await asyncio.open_connection(broker.host, broker.port)
        client = cls(reader, writer)
        hello = await client.ok("hello", {"version": 1})
        client.decoder = FrameDecoder(hello["max_frame"])
        return client

    async def ok(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        request_id = next(self.ids)
        self.writer.write(encode_frame([0, request_id, op, args]))
        prefix = await asyncio.wait_for(self.reader.readexactly(4), 30)
        body = await self.reader.readexactly(int.from_bytes(prefix, "big"))
        self.largest_frame = max(self.largest_frame, len(body))
        self.decoder.feed(prefix + body)  # raises FRAME_TOO_LARGE past the announced max_frame
        (message,) = self.decoder.messages()
        assert message[:2] == (1, request_id), message[:4]
        reply: dict[str, Any] = message[2]
        return reply

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@pytest.fixture
async def strict(start_broker: StartBroker) -> Any:
    clients: list[StrictClient] = []

    async def connect() -> tuple[RunningBroker, StrictClient]:
        broker = await start_broker(max_frame=MAX_FRAME, max_payload=MAX_PAYLOAD)
        client = await StrictClient.connect(broker)
        clients.append(client)
        return broker, client

    yield connect
    for client in clients:
        await client.close()


async def enqueue_big(client: StrictClient, queue: str, count: int, **options: Any) -> list[str]:
    ids: list[str] = []
    for start in range(0, count, PER_BATCH):
        jobs = [job_spec(f"{queue}-{n:04}", "task", BIG, **options)
                for n in range(start, min(count, start + PER_BATCH))]
        ids += (await client.ok("enqueue", {"queue": queue, "jobs": jobs}))["ids"]
    return ids


def reserved_size(job: tuple[Any, ...], queue: str) -> int:
    """What the broker counts for a reserved job without progress (SPEC §8.3)."""
    return (RESERVED_JOB_OVERHEAD + len(job[R_PAYLOAD])
            + UTF8_MAX * (len(job[R_ID]) + len(queue) + len("task")))


# --------------------------------------------------------------------------- over TCP


async def test_a_large_reserve_stops_at_max_frame_and_loses_no_job(strict: Any) -> None:
    _, client = await strict()
    ids = await enqueue_big(client, "big", 100)

    got: list[str] = []
    sizes: list[int] = []
    while len(got) < len(ids):
        body = await client.ok("reserve", {"queues": ["big"], "max": 1_000})
        jobs = body["jobs"]
        assert jobs, "a reserve with jobs waiting gives at least one"
        sizes.append(len(jobs))
        got += [job[R_ID] for job in jobs]
        # Full, not merely short: one more job would have passed the budget.
        if len(got) < len(ids):
            counted = sum(reserved_size(job, "big") for job in jobs)
            assert counted + reserved_size(jobs[0], "big") > reserve_budget(MAX_FRAME)

    assert got == ids  # FIFO, each once: the job left out stays first in line
    assert len(sizes) > 1 and max(sizes) < 100
    assert client.largest_frame <= MAX_FRAME


async def test_small_jobs_still_come_a_thousand_at_a_time(strict: Any) -> None:
    _, client = await strict()
    await client.ok("enqueue", {"queue": "small",
                                "jobs": [job_spec(None, "t", b"p" * 100) for _ in range(1_000)]})
    body = await client.ok("reserve", {"queues": ["small"], "max": 1_000})
    assert len(body["jobs"]) == 1_000


async def test_a_parked_reserve_woken_by_resume_stops_at_max_frame(
    start_broker: StartBroker,
) -> None:
    broker = await start_broker(max_frame=MAX_FRAME, max_payload=MAX_PAYLOAD)
    worker = await StrictClient.connect(broker)
    producer = await StrictClient.connect(broker)
    try:
        await producer.ok("pause", {"queue": "late"})
        ids = await enqueue_big(producer, "late", 100)
        parked = asyncio.create_task(
            worker.ok("reserve", {"queues": ["late"], "max": 1_000, "wait_ms": 30_000}))
        for _ in range(3_000):  # until parked on the broker (30 s at most)
            if broker.server is not None and broker.server.ops.parking.reserves:
                break
            await asyncio.sleep(0.01)
        else:  # an unparked reserve after resume would take the other path: prove nothing here
            pytest.fail("the reserve never parked")
        await producer.ok("resume", {"queue": "late"})  # wakes the parked reserve
        jobs = (await parked)["jobs"]
        assert 0 < len(jobs) < 100
        assert [job[R_ID] for job in jobs] == ids[:len(jobs)]
        assert worker.largest_frame <= MAX_FRAME
    finally:
        await worker.close()
        await producer.close()


async def test_list_failed_stops_at_max_frame_and_pages_through_everything(
    strict: Any,
) -> None:
    _, client = await strict()
    ids = await enqueue_big(client, "dead", 60, max_attempts=1)
    error = "é" * 2_000  # counted at 4 bytes a character
    while True:
        jobs = (await client.ok("reserve", {"queues": ["dead"], "max": 1_000}))["jobs"]
        if not jobs:
            break
        items = [[job[R_ID], job[R_TOKEN], error, False] for job in jobs]
        results = (await client.ok("fail", {"items": items}))["results"]
        assert all(tuple(result) == ("OK", "failed") for result in results)

    listed: list[str] = []
    pages = 0
    while True:
        body = await client.ok("list_failed", {"queue": "dead", "limit": 1_000,
                                               "offset": len(listed)})
        assert body["total"] == 60
        if not body["jobs"]:
            break
        pages += 1
        listed += [job["id"] for job in body["jobs"]]
        assert all(job["state"] == "failed" and job["error"] == error for job in body["jobs"])

    assert pages > 1
    assert sorted(listed) == sorted(ids) and len(listed) == len(set(listed))
    assert client.largest_frame <= MAX_FRAME


# --------------------------------------------------------------------------- without I/O


def test_the_core_always_hands_out_one_job_and_keeps_the_next_first_in_line() -> None:
    core = Core(CoreConfig(), rng=random.Random(0), token_base=0)
    core.enqueue("q", [JobSpec(f"j{n}", "t", b"z" * 1_000) for n in range(5)], 1)

    first = core.reserve(["q"], 10, None, 1, 2, max_bytes=10)  # smaller than any job
    assert [job.job_id for job in first] == ["j0"]
    two = 2 * (RESERVED_JOB_OVERHEAD + 1_000 + UTF8_MAX * (2 + 1 + 1))
    assert [job.job_id for job in core.reserve(["q"], 10, None, 1, 3, max_bytes=two)] == [
        "j1", "j2"]
    assert [job.job_id for job in core.reserve(["q"], 10, None, 1, 4, max_bytes=two - 1)] == [
        "j3"]
    assert [job.job_id for job in core.reserve(["q"], 10, None, 1, 5)] == ["j4"]
    assert core.stats("q", 5)["q"].active == 5


def test_a_reserved_jobs_progress_counts_against_the_budget() -> None:
    core = Core(CoreConfig(), rng=random.Random(0), token_base=0)
    core.enqueue("q", [JobSpec("j0", "t", b"")], 1)
    (job,) = core.reserve(["q"], 1, None, 1, 2)
    core.progress(job.job_id, job.token, "p" * 5_000, 3)  # 5,003 bytes packed
    core.release_owner(1, 4)  # a failed attempt: delayed by the backoff
    core.tick(10_000)  # j0 is waiting again, ahead of the jobs enqueued next
    core.enqueue("q", [JobSpec(f"j{n}", "t", b"") for n in (1, 2)], 10_000)
    plain = RESERVED_JOB_OVERHEAD + UTF8_MAX * (2 + 1 + 1)

    got = core.reserve(["q"], 3, None, 2, 10_001, max_bytes=plain + 5_003 + plain - 1)
    assert [(j.job_id, j.progress) for j in got] == [("j0", "p" * 5_000)]
    got = core.reserve(["q"], 3, None, 2, 10_002, max_bytes=plain + plain)
    assert [j.job_id for j in got] == ["j1", "j2"]


def test_job_info_size_bounds_the_encoding() -> None:
    import msgpack

    info = JobInfo("id-é", "queue", "name", JobState.FAILED, -5, 3, 3, b"p" * 300,
                   {"done": [1, 2, 3]}, b"r" * 10, "erreur ☃" * 50, 2**53, 2**53, 2**53, 2**53,
                   None, timeout_ms=2**53)
    assert job_info_size(info) >= len(msgpack.packb(info.to_wire(), use_bin_type=True))


def test_config_requires_max_frame_to_hold_one_reserved_job() -> None:
    assert min_max_frame(1 << 20) <= load_settings({}, {}).max_frame  # the defaults agree
    with pytest.raises(ConfigError, match="max_frame must be at least"):
        load_settings({}, {"JOBWIRE_MAX_FRAME": "2MiB", "JOBWIRE_MAX_PAYLOAD": "1MiB"})
    need = min_max_frame(16 * 1024)
    assert load_settings({}, {"JOBWIRE_MAX_FRAME": str(need),
                              "JOBWIRE_MAX_PAYLOAD": "16KiB"}).max_frame == need
    with pytest.raises(ConfigError):
        load_settings({}, {"JOBWIRE_MAX_FRAME": str(need - 1), "JOBWIRE_MAX_PAYLOAD": "16KiB"})


def test_one_reserved_job_at_its_largest_fits_the_smallest_frame() -> None:
    import msgpack

    name = "名" * MAX_NAME_LEN  # 3 bytes a character in UTF-8
    job = ReservedJob(name, name, name, b"p" * 1_000, 2**20, 2**20, 2**64 - 1, 86_400_000,
                      2**53, 2**53, "x" * (1_000 - 3))  # progress packs to 1,000 bytes
    frame = msgpack.packb([1, 2**32 - 1, {"jobs": [job]}], use_bin_type=True)
    assert len(frame) <= min_max_frame(1_000)
