"""The worker's per-job fast paths give what the general paths give (``bench/bench_workerpath.py``).

``OutcomeBuffer._on_acked`` counts an ``ack`` reply whose every item is ``["OK", "completed"]``
without parsing an ``Outcome`` per item; any other reply goes through ``parse_outcomes``. Both
must count, fire callbacks and settle the same jobs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from client.context import JobContext
from client.events import EventCallbacks
from client.outcomes import OutcomeBuffer
from client.reserving import Reserver
from client.serializers import RAW
from protocol.errors import ProtocolError
from protocol.replies import ReservedJob, parse_reserved


class FakeConnection:
    """Records requests; the test answers their futures."""

    server = None
    connected = True
    request_timeout = 30.0

    def __init__(self) -> None:
        self.sent: list[tuple[Any, asyncio.Future[dict[str, Any]]]] = []

    def request_nowait(
        self, request: Any, *, timeout: float | None = None
    ) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.sent.append((request, future))
        return future


def _contexts(count: int) -> list[JobContext]:
    loop = asyncio.get_running_loop()
    return [
        JobContext(ReservedJob(f"j{i}", "q", "n", b"", 1, 3, 100 + i, 30_000, 0, 0), 0.0,
                   FakeConnection(), loop)  # type: ignore[arg-type]
        for i in range(count)
    ]


async def _acked(results: Any, count: int = 3) -> tuple[OutcomeBuffer, list[Any], list[Any]]:
    """Ack ``count`` jobs, answer with ``{"results": results}``; returns the buffer, the jobs
    settled and the ``on_completed`` calls."""
    conn = FakeConnection()
    events = EventCallbacks()
    calls: list[Any] = []
    events.completed.append(lambda ctx, result: calls.append((ctx.id, result, buffer.completed)))
    settled: list[Any] = []
    buffer = OutcomeBuffer(conn, events, settled.extend)
    for ctx in _contexts(count):
        ctx.result = ctx.id.upper()
        buffer.ack(ctx, RAW.dumps(b"x"))
    buffer.flush()
    (request, future), = conn.sent
    assert [item.token for item in request.items] == [100 + i for i in range(count)]
    future.set_result({"results": results})
    await asyncio.sleep(0)
    return buffer, [ctx.id for ctx in settled], calls


@pytest.mark.parametrize("last", [("OK", "completed"), ("OK", "a later value")])
async def test_all_ok_counts_fires_and_settles_alike_on_both_paths(last: Any) -> None:
    # ("OK", "completed") three times takes the fast path; another OK value the general one.
    results = (("OK", "completed"), ("OK", "completed"), last)
    buffer, settled, calls = await _acked(results)
    assert buffer.completed == 3 and buffer.refused == 0
    assert settled == ["j0", "j1", "j2"]
    # Counted before each callback, as the general path does.
    assert calls == [("j0", "J0", 1), ("j1", "J1", 2), ("j2", "J2", 3)]


async def test_a_refused_item_takes_the_general_path() -> None:
    results = (("OK", "completed"), ("STALE_LEASE", "lease expired"), ("OK", "completed"))
    buffer, settled, calls = await _acked(results)
    assert buffer.completed == 2 and buffer.refused == 1
    assert settled == ["j0", "j1", "j2"]
    assert [call[0] for call in calls] == ["j0", "j2"]


async def test_a_short_reply_counts_only_what_it_answers() -> None:
    buffer, settled, calls = await _acked((("OK", "completed"),) * 2)
    assert buffer.completed == 2 and [call[0] for call in calls] == ["j0", "j1"]
    assert settled == ["j0", "j1", "j2"]


async def test_a_lost_reply_counts_nothing_and_settles_every_job() -> None:
    conn = FakeConnection()
    settled: list[Any] = []
    buffer = OutcomeBuffer(conn, EventCallbacks(), settled.extend)
    for ctx in _contexts(2):
        buffer.ack(ctx, None)
    buffer.flush()
    conn.sent[0][1].set_exception(ConnectionResetError("gone"))
    await asyncio.sleep(0)
    assert buffer.completed == 0 and buffer.unacknowledged == 2 and len(settled) == 2


@pytest.mark.parametrize("last", [("OK", "completed"), ("OK", "a later value")])
async def test_without_callbacks_both_paths_count_alike(last: Any) -> None:
    conn = FakeConnection()
    buffer = OutcomeBuffer(conn, EventCallbacks())
    for ctx in _contexts(3):
        buffer.ack(ctx, None)
    buffer.flush()
    conn.sent[0][1].set_result({"results": (("OK", "completed"),) * 2 + (last,)})
    await asyncio.sleep(0)
    assert buffer.completed == 3 and buffer.refused == 0


_SLOTS = [name for name in JobContext.__slots__ if not name.startswith("_")]


def _view(ctx: JobContext) -> dict[str, Any]:
    return {name: getattr(ctx, name) for name in _SLOTS}


@pytest.mark.parametrize("width", [12, 11, 13])
async def test_reserved_jobs_make_the_same_contexts_as_parse_reserved(width: int) -> None:
    # 12 items: the fast path (no ReservedJob); 11 (an older broker) and 13 (a later one):
    # parse_reserved. Either way the contexts must be those parse_reserved's jobs give.
    loop = asyncio.get_running_loop()
    raws = tuple(
        (f"j{i}", "q", "n", bytes([i]), 1 + i, 3, 100 + i, 30_000 + i, 9, 1_700_000_000_000 + i,
         {"p": i}, None if i % 2 else 5_000 + i, "later")[:width]
        for i in range(4)
    )
    delivered: list[Any] = []
    reserver = Reserver(FakeConnection(), ("q",), 1_000, None,
                        room=lambda: (0, 0), min_overlap=1, deliver=delivered.extend)
    reserver.asked, reserver.outstanding = 4, 1
    future: asyncio.Future[dict[str, Any]] = loop.create_future()
    future.set_result({"jobs": raws})
    reserver._on_reserved(4, future)
    assert reserver.asked == 0 and reserver.outstanding == 0 and reserver.done.is_set()
    conn = FakeConnection()
    got = [_view(JobContext(job, 5.0, conn, loop)) for job in delivered]  # type: ignore[arg-type]
    want = [_view(JobContext(job, 5.0, conn, loop))  # type: ignore[arg-type]
            for job in parse_reserved({"jobs": raws})]
    assert got == want and len(got) == 4
    assert got[1]["timeout"] is None and got[3]["token"] == 103
    assert got[0]["timeout_at"] == (None if width == 11 else 10.0)


async def test_a_malformed_reserve_reply_is_refused_as_before() -> None:
    loop = asyncio.get_running_loop()
    delivered: list[Any] = []
    reserver = Reserver(FakeConnection(), ("q",), 1_000, None,
                        room=lambda: (0, 0), min_overlap=1, deliver=delivered.extend)
    reserver.asked, reserver.outstanding = 1, 1
    future: asyncio.Future[dict[str, Any]] = loop.create_future()
    future.set_result({"jobs": (("j", "q"),)})
    with pytest.raises(ProtocolError):
        reserver._on_reserved(1, future)
    assert delivered == []
