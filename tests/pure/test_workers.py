"""The workers table, pure tier: who is listed, in what order, with which queues and counts."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.workers import MAX_QUEUES, WorkerTable


def test_lists_workers_oldest_first_with_their_fields() -> None:
    table = WorkerTable()
    producer = table.open(1, "api:1", "10.0.0.1:5000", 1_000)
    worker = table.open(2, "box:42", "10.0.0.2:6000", 2_000)
    worker.asked(("mail", "sms"), 3_000)
    worker.completed += 5
    worker.failed += 1
    producer.last_seen = 4_000
    page, total = table.page(include_all=False, offset=0, limit=10,
                             held=lambda conn: {2: 3}.get(conn, 0))
    assert total == 1
    assert page == [{
        "conn": 2, "client": "box:42", "host": "10.0.0.2:6000", "queues": ["mail", "sms"],
        "held": 3, "completed": 5, "failed": 1, "connected_at": 2_000, "last_seen": 3_000,
    }]
    everyone, total = table.page(include_all=True, offset=0, limit=10, held=lambda conn: 0)
    assert [w["conn"] for w in everyone] == [1, 2] and total == 2
    assert everyone[0]["queues"] == [] and everyone[0]["last_seen"] == 4_000


def test_paging_and_close() -> None:
    table = WorkerTable()
    for conn in range(10):
        table.open(conn, f"w{conn}", "h", conn).asked(("q",), conn)
    table.close(3)
    table.close(3)
    page, total = table.page(include_all=False, offset=2, limit=3, held=lambda conn: 0)
    assert [w["conn"] for w in page] == [2, 4, 5] and total == 9
    assert len(table) == 9
    with pytest.raises(ValueError):
        table.open(4, "again", "h", 0)


def test_size_cap_stops_before_the_map_that_would_pass_it_but_lists_one() -> None:
    table = WorkerTable()
    for conn in range(5):
        table.open(conn, "x" * 100, "h", 0).asked(("q",), 0)

    def size(body: dict[str, object]) -> int:
        return len(msgpack.packb(body))

    one = size(table.page(include_all=False, offset=0, limit=1, held=lambda c: 0)[0][0])
    page, total = table.page(include_all=False, offset=0, limit=5, held=lambda c: 0,
                             max_bytes=2 * one + 1, size=size)
    assert len(page) == 2 and total == 5
    page, _ = table.page(include_all=False, offset=0, limit=5, held=lambda c: 0,
                         max_bytes=1, size=size)
    assert len(page) == 1


@given(st.lists(st.lists(st.sampled_from([f"q{i}" for i in range(100)]), min_size=1,
                         max_size=64), max_size=30))
def test_queues_are_the_most_recent_and_bounded(reserves: list[list[str]]) -> None:
    table = WorkerTable()
    info = table.open(1, "w", "h", 0)
    expected: list[str] = []  # most recent first
    for queues in reserves:
        info.asked(tuple(queues), 1)
        for queue in reversed(queues):
            if queue in expected:
                expected.remove(queue)
            expected.insert(0, queue)
        del expected[MAX_QUEUES:]
    assert info.to_wire(0)["queues"] == expected
