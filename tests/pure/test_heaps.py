"""The core's ordered structures on their own: ReadyQueue, DeadlineHeap, FinishedList."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from broker.heaps import COMPACT_MARGIN, DeadlineHeap, ReadyQueue
from broker.jobs import NO_OPTIONS, Job, JobOptions
from broker.retention import NO_LIMIT, FinishedList
from protocol.model import JobState, Retention


def job(seq: int, priority: int = 0, state: JobState = JobState.WAITING,
        options: JobOptions = NO_OPTIONS, finished_at: int | None = None) -> Job:
    return Job(seq, str(seq), "q", "n", b"", priority=priority, run_at=0, max_attempts=1,
               options=options, state=state, created_at=0, finished_at=finished_at)


def drain(ready: ReadyQueue) -> list[int]:
    out = []
    while (lane := ready.front()) is not None:
        out.append(lane.popleft().seq)
    return out


@given(st.lists(st.integers(-3, 3), max_size=60))
def test_ready_queue_orders_by_priority_then_arrival(priorities: list[int]) -> None:
    ready = ReadyQueue()
    jobs = [job(seq, priority) for seq, priority in enumerate(priorities)]
    for item in jobs:
        ready.push(item)
    expected = [j.seq for j in sorted(jobs, key=lambda j: (j.priority, j.seq))]
    assert drain(ready) == expected
    assert ready.front() is None


def test_ready_queue_lane_appends_and_rebuild_drops_stale() -> None:
    ready = ReadyQueue()
    lane = ready.lane(5, 0)
    for seq in range(4):
        lane.append(job(seq, 5))
    ready.push(job(10, 1))
    live = {0, 2, 10}
    ready.stale = 2
    ready.rebuild(lambda j: j.seq in live)
    assert ready.stale == 0
    assert [j.seq for j in ready] == [10, 0, 2]
    assert drain(ready) == [10, 0, 2]


def test_ready_queue_compacts_only_past_the_margin() -> None:
    ready = ReadyQueue()
    for seq in range(COMPACT_MARGIN + 10):
        ready.push(job(seq))
    ready.stale = COMPACT_MARGIN + 10
    ready.maybe_compact(live=20, is_live=lambda j: False)
    assert ready.stale == COMPACT_MARGIN + 10  # stale <= live + margin: kept as is
    ready.stale = COMPACT_MARGIN + 10
    ready.maybe_compact(live=0, is_live=lambda j: False)
    assert ready.stale == 0 and ready.front() is None


def test_ready_queue_earliest_run_at_drops_stale_fronts() -> None:
    ready = ReadyQueue()
    for seq, priority, run_at in ((1, 0, 10), (2, 0, 20), (3, 1, 15)):
        item = job(seq, priority)
        item.run_at = run_at
        ready.push(item)
    ready.stale = 1
    assert ready.earliest_run_at(lambda j: j.seq != 1) == 15
    assert ready.stale == 0
    assert ready.earliest_run_at(lambda j: j.seq == 2) == 20
    assert ready.earliest_run_at(lambda j: False) is None


def test_ready_queue_bounds_stay_right_when_priorities_churn() -> None:
    # Lanes that fill and empty without a stats call in between leave bounds behind; past
    # COMPACT_MARGIN of them the bounds are rebuilt, and the lane being filled must keep one.
    for churn in range(COMPACT_MARGIN - 2, COMPACT_MARGIN + 6):
        ready = ReadyQueue()
        for priority in range(churn):
            ready.lane(priority, priority).append(job(priority + 1, priority))
            lane = ready.front()
            assert lane is not None
            lane.popleft()
        last = job(churn + 1, churn)
        last.run_at = 7
        ready.lane(churn, 7).append(last)
        assert ready.earliest_run_at(lambda j, last=last: j is last) == 7


@given(st.lists(st.tuples(st.sampled_from(("new", "again", "pop")), st.integers(0, 3)),
                max_size=80),
       st.booleans())
def test_ready_queue_oldest_is_seq_order(steps: list[tuple[str, int]], rebuilt: bool) -> None:
    # Jobs just created go through lane() with the next seq; jobs waiting again (or late) go
    # through push() with an older one; reserve pops fronts. oldest() must still give seq order.
    ready = ReadyQueue()
    seq = 0
    popped: list[Job] = []
    waiting: set[int] = set()
    for action, priority in steps:
        if action == "new":
            seq += 1
            ready.lane(priority, 0).append(job(seq, priority))
            waiting.add(seq)
        elif action == "again" and popped:
            ready.push(popped[0])
            waiting.add(popped.pop(0).seq)
        elif action == "pop" and (lane := ready.front()) is not None:
            popped.append(lane.popleft())
            waiting.discard(popped[-1].seq)
    if rebuilt:
        ready.rebuild(lambda j: True)
    taken: set[int] = set()
    for item in ready.oldest(lambda j: j.seq in waiting and j.seq not in taken):
        assert item.seq == min(waiting - taken)
        taken.add(item.seq)  # the caller takes each job out of waiting (clean deletes it)
    assert taken == waiting


def test_deadline_heap_pops_due_in_order_and_compacts() -> None:
    heap = DeadlineHeap()
    jobs = [job(i) for i in range(5)]
    for i, item in enumerate(jobs):
        heap.push(100 - i * 10, i, item)
    assert heap.peek_time() == 60
    assert heap.pop_due(59) is None
    popped = []
    while (entry := heap.pop_due(100)) is not None:
        popped.append(entry[1])
    assert popped == [4, 3, 2, 1, 0]
    for i in range(COMPACT_MARGIN + 3):
        heap.push(i, i, jobs[0])
    heap.stale = COMPACT_MARGIN + 2
    heap.maybe_compact(lambda entry: entry[1] == 0)
    assert len(heap) == 1 and heap.stale == 0


def test_finished_list_counts_limits_and_prunes_from_the_oldest_end() -> None:
    finished = FinishedList(JobState.COMPLETED, Retention(2, 1_000))
    live: dict[str, Job] = {}
    removed: list[str] = []

    def remove(item: Job) -> None:
        removed.append(item.id)
        live.pop(item.id, None)

    for seq in range(4):
        item = job(seq, state=JobState.COMPLETED, finished_at=seq * 100)
        live[item.id] = item
        assert finished.add(item, live, remove)
    assert removed == ["0", "1"] and finished.count == 2
    gone = job(9, state=JobState.COMPLETED, options=JobOptions(keep_completed=Retention(0, None)))
    assert not finished.add(gone, live, remove)
    assert removed[-1] == "9" and finished.count == 2
    assert finished.next_expiry(live) == 1_200
    finished.prune(1_250, live, remove)
    assert removed[-1] == "2" and finished.count == 1
    assert [j.id for j in finished.live(live)] == ["3"]


def test_finished_list_override_holds_back_and_tightest_bounds() -> None:
    finished = FinishedList(JobState.FAILED, Retention(1, None))
    live: dict[str, Job] = {}
    removed: list[Job] = []
    keep_all = JobOptions(keep_failed=Retention(None, None))
    first = job(1, state=JobState.FAILED, options=keep_all, finished_at=0)
    live[first.id] = first
    finished.add(first, live, removed.append)
    assert finished.tightest == NO_LIMIT
    for seq in (2, 3):
        item = job(seq, state=JobState.FAILED, finished_at=seq)
        live[item.id] = item
        finished.add(item, live, removed.append)
    assert removed == [] and finished.count == 3  # the kept-forever head holds the rest back
    assert finished.tightest == 1
    del live["1"]
    finished.count -= 1  # as the core does when it deletes a job by hand
    finished.remove((), live)
    assert finished.count == 2 and finished.tightest == 1
    later = job(4, state=JobState.FAILED, finished_at=4)
    live[later.id] = later
    finished.add(later, live, removed.append)
    assert [j.id for j in removed] == ["2", "3"]
    assert [j.id for j in finished.live(live)] == ["4"]
