"""The core against a plain-Python model: a hypothesis RuleBasedStateMachine with a fake clock.

The model keeps jobs in a dict and derives every order by sorting (ready order by
``(priority, ready_stamp)``, finish order by ``finish_stamp``, lease expiry by
``(deadline, token)``, promotion by ``(run_at, seq)``), so it shares no data structure with the
core. After every step the two must agree on every job's fields, per-queue stats, the queues
that became ready and the jobs that finished.

A fake journal (``FakeJournal``) applies ``take_changes()`` after every step, copying jobs as a
real journal's rows would; the ``restore`` rule rebuilds the core from it with ``Core.restore``,
which also checks that the changes the core reports are complete. The crash-and-replay machine
against the real SQLite journal (tests/tcp/test_core_journal_model.py) overrides ``commit`` and
``recovered_snapshot``.

A job's timeout (broker/timeouts.py) is modelled plainly: an active job with one is due at the
earlier of its lease deadline and ``started_at + timeout + TIMEOUT_GRACE_MS``, which extending
the lease never moves, and fails as "timed out" when the second comes first (ties too).

Repeatable jobs: the model keeps each scheduler as ``(period, limit, end, anchor, count,
next_at)`` and makes occurrences by brute force (the first grid point after a time), with the
job of each occurrence created as an enqueue of ``repeat:<key>:<ms>`` would; the tick makes the
next occurrence of every scheduler whose ``next_at`` came, in ``(next_at, queue, key)`` order.
The crash-and-replay machine checks that the scheduler and its job are never replayed twice.

Retention in the model is uniform per state (plus "remove at once" per job), which keeps the
model a few lines; per-job retention overrides are covered by unit tests in test_core.py.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from broker.core import Changes, Core, CoreConfig, CoreError, QueueMeta, Snapshot
from broker.jobs import Job
from broker.replysize import RESERVED_JOB_OVERHEAD, UTF8_MAX
from broker.schedule import Rule, Scheduler
from broker.timeouts import TIMEOUT_GRACE_MS
from protocol.batches import BULK, AckBatch, PlainJobs, parse_ack_items, parse_jobs
from protocol.errors import ErrorCode
from protocol.model import (
    PLAIN_TAIL,
    AckItem,
    Backoff,
    BackoffKind,
    ExtendItem,
    FailItem,
    JobSpec,
    JobState,
    ReleaseItem,
    Retention,
)

W, D, A, C, F = (JobState.WAITING, JobState.DELAYED, JobState.ACTIVE, JobState.COMPLETED,
                 JobState.FAILED)
T0 = 1_000_000
QUEUES = ("a", "b", "c")
IDS = ("x", "y", "z")
OWNERS = (1, 2)
KEEP_COMPLETED = Retention(2, 5_000)
KEEP_FAILED = Retention(2, None)
CONFIG = CoreConfig(
    default_max_attempts=2,
    default_backoff=Backoff(BackoffKind.EXPONENTIAL, 100, 400),
    default_lease_ms=1_000,
    keep_completed=KEEP_COMPLETED,
    keep_failed=KEEP_FAILED,
    max_payload=8,
    max_queue_jobs=6,
    max_total_jobs=10,
)
PAYLOADS = (b"", b"p", b"pp", b"12345678") * 3 + (b"123456789",)  # the last is too large
RESULTS = (None, None, b"r", b"123456789")
BACKOFFS = (None, Backoff(BackoffKind.FIXED, 0, None), Backoff(BackoffKind.FIXED, 300, None),
            Backoff(BackoffKind.EXPONENTIAL, 50, 120))


def backoff_delay(attempt: int, policy: Backoff) -> int:
    if policy.kind is BackoffKind.FIXED:
        value = policy.base_ms
    else:
        value = policy.base_ms * 2 ** (attempt - 1)
    return value if policy.cap_ms is None else min(value, policy.cap_ms)


@dataclass
class MJob:
    id: str
    seq: int
    queue: str
    payload: bytes
    priority: int
    state: JobState
    run_at: int
    created_at: int
    max_attempts: int
    backoff: Backoff | None
    lease_ms: int | None
    remove_on_complete: bool
    timeout_ms: int | None = None
    attempts: int = 0
    error: str | None = None
    result: bytes | None = None
    progress: Any = None
    started_at: int | None = None
    finished_at: int | None = None
    token: int | None = None
    deadline: int | None = None
    owner: int | None = None
    ready_stamp: int = 0
    finish_stamp: int = 0

    @property
    def attempt_deadline(self) -> int | None:
        if self.timeout_ms is None or self.started_at is None:
            return None
        return self.started_at + self.timeout_ms + TIMEOUT_GRACE_MS

    @property
    def due(self) -> int:
        """When an active job's attempt ends without an outcome: lease expiry or timeout."""
        assert self.deadline is not None
        timeout_at = self.attempt_deadline
        return self.deadline if timeout_at is None else min(self.deadline, timeout_at)

    @property
    def times_out(self) -> bool:
        """Its attempt ends by its timeout rather than its lease (ties go to the timeout)."""
        timeout_at = self.attempt_deadline
        return timeout_at is not None and self.deadline is not None and timeout_at <= self.deadline


@dataclass
class MQueue:
    paused: bool = False
    total_completed: int = 0
    total_failed: int = 0
    rate: tuple[int, int] | None = None    # (max, period_ms): periods below 1,024 ms are exact
    concurrency: int | None = None
    paused_until: int | None = None
    starts: list[int] = dataclasses.field(default_factory=list)

    @property
    def limited(self) -> bool:
        return (self.rate is not None or self.concurrency is not None
                or self.paused_until is not None)


@dataclass
class MScheduler:
    every: int
    limit: int | None
    end: int | None
    payload: bytes
    anchor: int
    count: int = 0
    next_at: int | None = None


class Model:
    """What the core should do, written as plainly as possible."""

    def __init__(self, token_base: int) -> None:
        self.jobs: dict[tuple[str, str], MJob] = {}
        """By ``(queue, id)``: user ids are unique per queue."""
        self.queues: dict[str, MQueue] = {}
        self.seq = 1
        self.token = token_base + 1
        self.stamp = 0
        self.ready: set[str] = set()
        self.limit_changed: set[str] = set()
        """Queues whose limits were ever set or changed: a raised or cleared limit may wake
        their waiters, and a flow wake scheduled before a limit was cleared may still fire (wakes
        the core may report, not ones it must; missed wakes are still caught)."""
        self.finished: set[tuple[str, str]] = set()
        self.schedulers: dict[tuple[str, str], MScheduler] = {}

    def _stamp(self) -> int:
        self.stamp += 1
        return self.stamp

    def queue(self, name: str) -> MQueue:
        return self.queues.setdefault(name, MQueue())

    def in_state(self, queue: str, state: JobState) -> list[MJob]:
        return [j for j in self.jobs.values() if j.queue == queue and j.state is state]

    def unfinished(self, queue: str | None = None) -> int:
        return sum(1 for j in self.jobs.values()
                   if j.state in (W, D, A) and (queue is None or j.queue == queue))

    def finish_list(self, queue: str, state: JobState) -> list[MJob]:
        return sorted(self.in_state(queue, state), key=lambda j: j.finish_stamp)

    # -- transitions

    def make_waiting(self, job: MJob, run_at: int) -> None:
        job.state, job.run_at, job.ready_stamp = W, run_at, self._stamp()
        if not self.queue(job.queue).paused:
            self.ready.add(job.queue)

    def delete(self, job: MJob) -> None:
        del self.jobs[(job.queue, job.id)]
        self.finished.add((job.queue, job.id))

    def promote(self, now: int) -> None:
        for job in sorted((j for j in self.jobs.values() if j.state is D and j.run_at <= now),
                          key=lambda j: (j.run_at, j.seq)):
            self.make_waiting(job, job.run_at)

    def prune(self, queue: str, state: JobState, now: int | None) -> None:
        """Count pruning (and age pruning when ``now`` is given), from the oldest end."""
        keep = KEEP_COMPLETED if state is C else KEEP_FAILED
        entries = self.finish_list(queue, state)
        while entries:
            head = entries[0]
            over = keep.count is not None and len(entries) > keep.count
            old = (now is not None and keep.age_ms is not None and head.finished_at is not None
                   and head.finished_at + keep.age_ms <= now)
            if not (over or old):
                break
            entries.pop(0)
            self.delete(head)

    def finish(self, job: MJob, state: JobState, now: int) -> None:
        job.state, job.finished_at, job.finish_stamp = state, now, self._stamp()
        job.token = job.deadline = job.owner = None
        self.finished.add((job.queue, job.id))
        if state is C and job.remove_on_complete:
            self.delete(job)
            return
        self.prune(job.queue, state, None)

    def fail_attempt(self, job: MJob, error: str, retry: bool, delay: int | None,
                     now: int) -> JobState:
        job.error = error
        if not retry or job.attempts >= job.max_attempts:
            self.queue(job.queue).total_failed += 1
            self.finish(job, F, now)
            return F
        job.token = job.deadline = job.owner = None
        if delay is None:
            delay = backoff_delay(max(job.attempts, 1), job.backoff or CONFIG.default_backoff)
        if delay <= 0:
            self.make_waiting(job, now)
            return W
        job.state, job.run_at = D, now + delay
        return D

    def room(self, name: str, now: int) -> int:
        """How many of the queue's jobs may start now: the flow control, plainly."""
        queue = self.queue(name)
        allowed = 1 << 62
        if queue.paused_until is not None and queue.paused_until > now:
            return 0
        if queue.concurrency is not None:
            allowed = queue.concurrency - len(self.in_state(name, A))
        if queue.rate is not None:
            limit, period = queue.rate
            allowed = min(allowed, limit - sum(1 for at in queue.starts if at > now - period))
        return max(0, allowed)

    def unblocked_at(self, name: str, now: int) -> int:
        """When the rate limit and the pause next let a job start (by brute force)."""
        queue = self.queue(name)
        at = now
        while True:
            paused = queue.paused_until is not None and queue.paused_until > at
            if queue.rate is not None:
                limit, period = queue.rate
                full = sum(1 for s in queue.starts if s > at - period) >= limit
            else:
                full = False
            if not (paused or full):
                return at
            at += 1
    def leased(self, job_id: str, token: int) -> MJob | None:
        """The job of that id holding ``token``, else any job of that id (tokens are unique)."""
        same = [job for job in self.jobs.values() if job.id == job_id]
        for job in same:
            if job.state is A and job.token == token:
                return job
        return same[0] if same else None

    def lease_problem(self, job_id: str, token: int) -> str | None:
        job = self.leased(job_id, token)
        if job is None:
            return "NOT_FOUND"
        if job.state is not A or job.token != token:
            return "STALE_LEASE"
        return None

    # -- repeatable jobs

    def add_repeat_job(self, queue: str, job_id: str, payload: bytes, at: int, now: int) -> None:
        """What an enqueue of one job with this id and run time does (QUEUE_FULL: nothing)."""
        if (queue, job_id) in self.jobs:
            return
        if (self.unfinished(queue) + 1 > (CONFIG.max_queue_jobs or 0)
                or self.unfinished() + 1 > (CONFIG.max_total_jobs or 0)):
            return
        self.promote(now)
        self.queue(queue)
        job = MJob(job_id, self.seq, queue, payload, 0, D, at, now, CONFIG.default_max_attempts,
                   None, None, False)
        self.seq += 1
        self.jobs[(queue, job_id)] = job
        if at <= now:
            self.make_waiting(job, now)

    def make_next(self, queue: str, key: str, scheduler: MScheduler, after: int,
                  now: int) -> None:
        at: int | None = scheduler.anchor
        assert at is not None
        while at <= after:
            at += scheduler.every
        if scheduler.limit is not None and scheduler.count >= scheduler.limit:
            at = None
        if at is not None and scheduler.end is not None and at > scheduler.end:
            at = None
        scheduler.next_at = at
        if at is not None:
            scheduler.count += 1
            self.add_repeat_job(queue, f"repeat:{key}:{at}", scheduler.payload, at, now)

    def drop_pending(self, queue: str, key: str, scheduler: MScheduler) -> int:
        job = self.jobs.get((queue, f"repeat:{key}:{scheduler.next_at}"))
        if scheduler.next_at is None or job is None or job.state is not D:
            return 0
        self.delete(job)
        return 1

    def fire_schedulers(self, now: int) -> None:
        due = sorted((s.next_at, queue, key) for (queue, key), s in self.schedulers.items()
                     if s.next_at is not None and s.next_at <= now)
        for at, queue, key in due:
            self.make_next(queue, key, self.schedulers[(queue, key)], max(at, now), now)

    def age_prune_all(self, now: int) -> None:
        for queue in list(self.queues):
            for state in (C, F):
                self.prune(queue, state, now)


class FakeJournal:
    """Applies ``Changes`` the way the real journal does: a copy of each job at commit time."""

    def __init__(self) -> None:
        self.jobs: dict[int, Job] = {}
        self.queues: dict[str, QueueMeta] = {}
        self.schedulers: dict[tuple[str, str], Scheduler] = {}
        self.next_seq = 0

    def apply(self, core: Core) -> None:
        self.apply_changes(core.take_changes())

    def apply_changes(self, changes: Changes) -> None:
        for seq, job in changes.jobs.items():
            if job is None:
                self.jobs.pop(seq, None)
            else:
                self.jobs[seq] = job.clone()
        for name, meta in changes.queues.items():
            if meta is None:
                self.queues.pop(name, None)
            else:
                self.queues[name] = dataclasses.replace(meta)
        for ident, scheduler in changes.schedules.items():
            if scheduler is None:
                self.schedulers.pop(ident, None)
            else:
                self.schedulers[ident] = dataclasses.replace(scheduler)
        self.next_seq = changes.next_seq

    def snapshot(self) -> Snapshot:
        return Snapshot([job.clone() for job in self.jobs.values()],
                        [dataclasses.replace(meta) for meta in self.queues.values()],
                        self.next_seq,
                        [dataclasses.replace(s) for s in self.schedulers.values()])


specs_strategy = st.lists(
    st.tuples(
        st.sampled_from((None, None, *IDS)),           # job id
        st.sampled_from(PAYLOADS),                     # payload (limit 8)
        st.sampled_from((-1, 0, 0, 1)),                # priority
        st.sampled_from((None, 0, 100, 1_500)),        # delay_ms
        st.sampled_from((None, None, -10, 200)),       # run_at_ms offset from now
        st.sampled_from((None, 1, 2, 3)),              # max_attempts
        st.sampled_from(BACKOFFS),
        st.sampled_from((None, None, 500)),            # lease_ms
        st.sampled_from((False, False, False, True)),  # remove on complete
        st.sampled_from((None, None, None, 1, 200, 1_500)),  # timeout_ms
    ),
    min_size=1, max_size=4,
)


class CoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.restores = 0
        self.core = Core(CONFIG, rng=random.Random(0), token_base=0)
        self.model = Model(0)
        self.journal = FakeJournal()
        self.leases: list[tuple[str, int]] = []

    # ------------------------------------------------------------------ producer

    @rule(queue=st.sampled_from(("a", "a", "a", "b", "c")), raw=specs_strategy,
          parsed=st.booleans())
    def enqueue(self, queue: str, raw: list[tuple[Any, ...]], parsed: bool = False) -> None:
        now, model = self.now, self.model
        specs = [
            JobSpec(job_id, "task", payload, priority, delay_ms,
                    None if offset is None else now + offset, attempts, backoff, lease_ms,
                    Retention(0, None) if remove else None, None, timeout_ms)
            for (job_id, payload, priority, delay_ms, offset, attempts, backoff, lease_ms, remove,
                 timeout_ms) in raw
        ]
        if parsed and all(spec.job_id is None and spec[3:] == PLAIN_TAIL for spec in specs):
            # As the broker parses plain jobs off the wire (PlainJobs: the core's bulk path).
            specs = parse_jobs(tuple(spec[:3] for spec in specs), "jobs")  # type: ignore[assignment]
            assert (type(specs) is PlainJobs) is (len(specs) >= BULK)
        expected_error: ErrorCode | None = None
        seen: set[str] = set()
        fresh = 0
        for spec in specs:
            if len(spec.payload) > CONFIG.max_payload:
                expected_error = ErrorCode.PAYLOAD_TOO_LARGE
                break
            if spec.job_id is None or ((queue, spec.job_id) not in model.jobs
                                       and spec.job_id not in seen):
                fresh += 1
            if spec.job_id is not None:
                seen.add(spec.job_id)
        if expected_error is None and (
            model.unfinished(queue) + fresh > (CONFIG.max_queue_jobs or 0)
            or model.unfinished() + fresh > (CONFIG.max_total_jobs or 0)
        ):
            expected_error = ErrorCode.QUEUE_FULL
        if expected_error is not None:
            try:
                self.core.enqueue(queue, specs, now)
            except CoreError as exc:
                assert exc.code is expected_error
            else:
                raise AssertionError(f"expected {expected_error}")
            return
        result = self.core.enqueue(queue, specs, now)
        model.promote(now)
        model.queue(queue)
        ids, duplicates = [], []
        for index, spec in enumerate(specs):
            job_id = spec.job_id
            if job_id is None:
                job_id = str(model.seq)
            elif (queue, job_id) in model.jobs:
                ids.append(job_id)
                duplicates.append(index)
                continue
            run_at = (spec.run_at_ms if spec.run_at_ms is not None
                      else now + spec.delay_ms if spec.delay_ms else now)
            job = MJob(job_id, model.seq, queue, spec.payload, spec.priority, D, run_at, now,
                       spec.max_attempts or CONFIG.default_max_attempts, spec.backoff,
                       spec.lease_ms, spec.keep_completed is not None, spec.timeout_ms)
            model.seq += 1
            model.jobs[(queue, job_id)] = job
            if run_at <= now:
                model.make_waiting(job, now)
            ids.append(job_id)
        assert result.ids == tuple(ids)
        assert result.duplicates == tuple(duplicates)

    @rule(count=st.integers(1, 6), priority=st.sampled_from((0, 1)), parsed=st.booleans())
    def enqueue_plain(self, count: int, priority: int, parsed: bool = False) -> None:
        """Plain jobs into queue "a" (weights the runs towards long queues and finished lists)."""
        plain = (None, b"p", priority, None, None, None, None, None, False, None)
        self.enqueue("a", [plain] * count, parsed)

    # ------------------------------------------------------------------ worker

    @rule(queues=st.lists(st.sampled_from((*QUEUES, "none")), min_size=1, max_size=3,
                          unique=True),
          max_jobs=st.integers(1, 4), lease_ms=st.sampled_from((None, 300, 2_000)),
          owner=st.sampled_from(OWNERS), max_bytes=st.sampled_from((None, None, 0, 202, 210, 300)))
    def reserve(self, queues: list[str], max_jobs: int, lease_ms: int | None,
                owner: int, max_bytes: int | None = None) -> None:
        now, model = self.now, self.model
        got = self.core.reserve(queues, max_jobs, lease_ms, owner, now, max_bytes)
        model.promote(now)
        expected: list[tuple[Any, ...]] = []
        used = 0
        for name in queues:
            if name not in model.queues or model.queues[name].paused:
                continue
            stop = min(max_jobs, len(expected) + model.room(name, now))
            for job in sorted(model.in_state(name, W), key=lambda j: (j.priority, j.ready_stamp)):
                if len(expected) >= stop:
                    break
                # The reply's byte budget (broker.replysize): the first job always goes.
                used += (RESERVED_JOB_OVERHEAD + len(job.payload)
                         + UTF8_MAX * (len(job.id) + len(name) + len("task"))
                         + (0 if job.progress is None else len(msgpack.packb(job.progress))))
                if max_bytes is not None and used > max_bytes and expected:
                    max_jobs = stop = len(expected)
                    break
                lease = job.lease_ms or lease_ms or CONFIG.default_lease_ms
                job.state, job.attempts, job.started_at = A, job.attempts + 1, now
                job.token, job.deadline, job.owner = model.token, now + lease, owner
                model.token += 1
                model.queues[name].starts.append(now)
                expected.append((job.id, name, job.payload, job.attempts, job.max_attempts,
                                 job.token, lease, job.deadline, job.created_at, job.progress,
                                 job.timeout_ms))
        assert [(j.job_id, j.queue, j.payload, j.attempt, j.max_attempts, j.token, j.lease_ms,
                 j.lease_deadline_ms, j.created_at_ms, j.progress, j.timeout_ms)
                for j in got] == expected
        self.leases.extend((j.job_id, j.token) for j in got)
        for name in queues:  # liveness: a queue left blocked by its rate or pause has a wake
            queue = model.queues.get(name)
            if (queue is not None and queue.limited and not queue.paused
                    and model.in_state(name, W) and model.room(name, now) == 0):
                unblocked = model.unblocked_at(name, now)
                if unblocked > now:
                    deadline = self.core.next_deadline()
                    assert deadline is not None and deadline <= unblocked, (name, deadline)

    @rule(queue=st.sampled_from(("a", "a", "b")), count=st.integers(1, 3),
          owner=st.sampled_from(OWNERS))
    def reserve_and_ack(self, queue: str, count: int, owner: int) -> None:
        """A worker's round trip, so runs reach deep finished lists quickly."""
        before = len(self.leases)
        self.reserve([queue], count, None, owner)
        fresh = self.leases[before:]
        if fresh:
            self._ack_items([AckItem(job_id, token, b"r") for job_id, token in fresh])

    @rule(count=st.integers(1, 3))
    def work(self, count: int) -> None:
        """Another weight towards completions in queue "a"."""
        self.reserve_and_ack("a", count, 1)

    def _pick_leases(self, data: st.DataObject, most: int = 3) -> list[tuple[str, int]]:
        pool = [*self.leases[-8:], ("x", 12345), ("nope", 1)]
        return data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=most))

    @rule(data=st.data(), parsed=st.booleans())
    def ack(self, data: st.DataObject, parsed: bool = False) -> None:
        if parsed:  # as the broker parses a batch off the wire (AckBatch from BULK items on)
            leases = self._pick_leases(data, 6)
            if data.draw(st.booleans()):
                wire: list[tuple[Any, ...]] = leases  # type: ignore[assignment]
            else:
                wire = [(job_id, token, data.draw(st.sampled_from(RESULTS)))
                        for job_id, token in leases]
            items = parse_ack_items(tuple(wire), "items")
            assert (type(items) is AckBatch) is (len(items) >= BULK)
            self._ack_items(items)
            return
        self._ack_items([AckItem(job_id, token, data.draw(st.sampled_from(RESULTS)))
                         for job_id, token in self._pick_leases(data)])

    def _ack_items(self, items: Sequence[AckItem]) -> None:
        now, model = self.now, self.model
        got = self.core.ack(items, now)
        expected = []
        for item in items:
            problem = model.lease_problem(item.job_id, item.token)
            if problem is None and item.result is not None and len(item.result) > 8:
                problem = "PAYLOAD_TOO_LARGE"
            if problem is not None:
                expected.append(problem)
                continue
            job = model.leased(item.job_id, item.token)
            job.result = item.result
            model.queue(job.queue).total_completed += 1
            model.finish(job, C, now)
            expected.append("completed")
        assert [o.value if o.ok else o.code for o in got] == expected

    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        now, model = self.now, self.model
        items = [FailItem(job_id, token, data.draw(st.sampled_from(("e1", "e2"))),
                          data.draw(st.booleans()),
                          data.draw(st.sampled_from((None, None, 0, 250))))
                 for job_id, token in self._pick_leases(data)]
        got = self.core.fail(items, now)
        model.promote(now)
        expected: list[str] = []
        for item in items:
            problem = model.lease_problem(item.job_id, item.token)
            if problem is not None:
                expected.append(problem)
                continue
            job = model.leased(item.job_id, item.token)
            assert job is not None
            state = model.fail_attempt(job, item.error, item.retry, item.delay_ms, now)
            expected.append(state.value)
        assert [o.value if o.ok else o.code for o in got] == expected

    @rule(data=st.data())
    def extend(self, data: st.DataObject) -> None:
        now, model = self.now, self.model
        items = [ExtendItem(job_id, token, data.draw(st.sampled_from((None, 100, 3_000))))
                 for job_id, token in self._pick_leases(data)]
        got = self.core.extend(items, now)
        expected: list[Any] = []
        for item in items:
            problem = model.lease_problem(item.job_id, item.token)
            if problem is not None:
                expected.append(problem)
                continue
            job = model.leased(item.job_id, item.token)
            job.deadline = now + (item.lease_ms or job.lease_ms or CONFIG.default_lease_ms)
            expected.append(job.deadline)
        assert [o.value if o.ok else o.code for o in got] == expected

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        self._release_items([ReleaseItem(job_id, token, data.draw(st.sampled_from((None, 0, 250))),
                                         data.draw(st.sampled_from((False, False, True))))
                             for job_id, token in self._pick_leases(data)])

    @rule(queue=st.sampled_from(("a", "b")), count=st.integers(1, 3),
          owner=st.sampled_from(OWNERS), delay_ms=st.sampled_from((None, 0, 250)))
    def reserve_and_release(self, queue: str, count: int, owner: int,
                            delay_ms: int | None) -> None:
        """A worker that stops before starting its jobs (live leases, unlike most picks)."""
        before = len(self.leases)
        self.reserve([queue], count, None, owner)
        fresh = self.leases[before:]
        if fresh:
            self._release_items([ReleaseItem(job_id, token, delay_ms) for job_id, token in fresh])

    def _release_items(self, items: list[ReleaseItem]) -> None:
        now, model = self.now, self.model
        got = self.core.release(items, now)
        model.promote(now)
        expected: list[str] = []
        for item in items:
            problem = model.lease_problem(item.job_id, item.token)
            if problem is not None:
                expected.append(problem)
                continue
            job = model.leased(item.job_id, item.token)
            queue = model.queue(job.queue)
            if item.pause_queue and item.delay_ms:  # "not now" for the whole queue
                queue.paused_until = max(queue.paused_until or 0, now + item.delay_ms)
            job.attempts -= 1  # the attempt its reservation counted is taken back
            job.token = job.deadline = job.owner = None
            if item.delay_ms:
                job.state, job.run_at = D, now + item.delay_ms
            else:
                model.make_waiting(job, now)
            expected.append(job.state.value)
        assert [o.value if o.ok else o.code for o in got] == expected

    # Values as the wire delivers them: arrays decode as tuples (a list would come back from
    # the journal as a tuple and differ from the model after a restart).
    @rule(data=st.data(), value=st.sampled_from((1, "half", (1, 2), "x" * 10)))
    def progress(self, data: st.DataObject, value: Any) -> None:
        job_id, token = self._pick_leases(data)[0]
        problem = self.model.lease_problem(job_id, token)
        if problem is None and len(msgpack.packb(value)) > CONFIG.max_payload:
            problem = "PAYLOAD_TOO_LARGE"
        try:
            self.core.progress(job_id, token, value, self.now)
        except CoreError as exc:
            assert exc.code == problem
        else:
            assert problem is None
            self.model.leased(job_id, token).progress = value  # type: ignore[union-attr]

    @rule(owner=st.sampled_from(OWNERS))
    def release_owner(self, owner: int) -> None:
        now, model = self.now, self.model
        count = self.core.release_owner(owner, now)
        held = sorted((j for j in model.jobs.values() if j.state is A and j.owner == owner),
                      key=lambda j: j.token or 0)
        if held:
            model.promote(now)
        for job in held:
            model.fail_attempt(job, "worker connection lost", True, None, now)
        assert count == len(held)

    # ------------------------------------------------------------------ clock

    @rule(step=st.sampled_from((1, 50, 100, 300, 1_000, 2_500, 6_000)))
    def tick(self, step: int) -> None:
        self.now += step
        now, model = self.now, self.model
        self.core.tick(now)
        model.promote(now)
        for job in sorted((j for j in model.jobs.values() if j.state is A and j.due <= now),
                          key=lambda j: (j.due, j.token)):
            if job.times_out:
                error = f"timed out after {job.timeout_ms} ms (job timeout; the worker did not " \
                        "report)"
            else:
                error = "lease expired"
            model.fail_attempt(job, error, True, None, now)
        model.fire_schedulers(now)
        model.age_prune_all(now)

    @rule(step=st.sampled_from((1, 100, 1_000)))
    def advance_without_tick(self, step: int) -> None:
        self.now += step

    # ------------------------------------------------------------------ admin

    @rule(data=st.data(), by_id=st.booleans())
    def cancel(self, data: st.DataObject, by_id: bool) -> None:
        """By ``(queue, id)``, or by id alone (``AMBIGUOUS_ID`` when it is in several queues)."""
        queue, job_id = data.draw(st.sampled_from([*sorted(self.model.jobs), ("a", "nope")]))
        if by_id:
            same = [job for job in self.model.jobs.values() if job.id == job_id]
            job = same[0] if len(same) == 1 else None
            expected = ErrorCode.AMBIGUOUS_ID if len(same) > 1 else ErrorCode.NOT_FOUND
        else:
            job = self.model.jobs.get((queue, job_id))
            expected = ErrorCode.NOT_FOUND
        try:
            prior = self.core.cancel(job_id, self.now, None if by_id else queue)
        except CoreError as exc:
            assert job is None and exc.code is expected
            return
        assert job is not None and prior is job.state
        self.model.delete(job)

    @rule(queue=st.sampled_from(QUEUES), force=st.booleans())
    def obliterate(self, queue: str, force: bool) -> None:
        model = self.model
        doomed = [job for job in model.jobs.values() if job.queue == queue]
        if not force and any(job.state is A for job in doomed):
            try:
                self.core.obliterate(queue, force, self.now)
            except CoreError as exc:
                assert exc.code is ErrorCode.CONFLICT
            else:
                raise AssertionError("expected CONFLICT")
            return
        assert self.core.obliterate(queue, force, self.now) == len(doomed)
        for job in doomed:
            model.delete(job)
        for ident in [ident for ident in model.schedulers if ident[0] == queue]:
            del model.schedulers[ident]
        model.queues.pop(queue, None)
        model.ready.discard(queue)

    @rule(queue=st.sampled_from(QUEUES))
    def pause(self, queue: str) -> None:
        self.core.pause(queue, self.now)
        self.model.queue(queue).paused = True

    @rule(queue=st.sampled_from(QUEUES),
          rate=st.sampled_from((None, False, (1, 300), (2, 1_000), (3, 50))),
          concurrency=st.sampled_from((None, False, 1, 2)))
    def limit(self, queue: str, rate: tuple[int, int] | bool | None,
              concurrency: int | bool | None) -> None:
        now, model = self.now, self.model
        limits = self.core.limit(queue, rate, concurrency, now)
        model.limit_changed.add(queue)
        if rate is None and concurrency is None:
            known = model.queues.get(queue)
            if known is None:
                assert limits == (None, None, None, None, None)
                return
        target = model.queue(queue)
        if rate is False:
            target.rate = None
        elif isinstance(rate, tuple):
            if target.rate is None:
                target.starts = []  # a new rate limit counts the starts from now on
            target.rate = rate
        if concurrency is False:
            target.concurrency = None
        elif isinstance(concurrency, int) and concurrency is not True:
            target.concurrency = concurrency
        assert limits[:3] == (*(target.rate or (None, None)), target.concurrency)
        pause = limits.paused_until
        assert (pause is not None and pause > now) == (
            target.paused_until is not None and target.paused_until > now)
        free_at = limits.rate_free_at
        assert free_at is None or (target.rate is not None and free_at > now)

    @rule(queue=st.sampled_from(QUEUES))
    def resume(self, queue: str) -> None:
        self.core.resume(queue, self.now)
        self.model.queue(queue).paused = False
        self.model.queue(queue).paused_until = None
        if self.model.in_state(queue, W):
            self.model.ready.add(queue)

    @rule(queue=st.sampled_from(QUEUES), data=st.data(),
          limit=st.sampled_from((None, 1, 2)))
    def retry_failed(self, queue: str, data: st.DataObject, limit: int | None) -> None:
        now, model = self.now, self.model
        known = sorted({job_id for _, job_id in model.jobs})
        job_ids = data.draw(st.none() | st.lists(st.sampled_from([*known, "nope"]), max_size=3))
        retried, not_failed = self.core.retry_failed(queue, job_ids, limit, now)
        model.promote(now)
        chosen: list[MJob] = []
        expected_not_failed = []
        if job_ids is None:
            chosen = model.finish_list(queue, F)[:limit]
        else:
            for job_id in job_ids:
                job = model.jobs.get((queue, job_id))
                if job is None or job.state is not F:
                    expected_not_failed.append(job_id)
                elif job not in chosen:
                    chosen.append(job)
        for job in chosen:
            job.attempts, job.finished_at, job.result = 0, None, None
            model.make_waiting(job, now)
        assert (retried, not_failed) == (len(chosen), expected_not_failed)

    @rule(queue=st.sampled_from(QUEUES), state=st.sampled_from(list(JobState)),
          older_than=st.sampled_from((0, 500, 3_000)), limit=st.sampled_from((None, 1, 3)))
    def clean(self, queue: str, state: JobState, older_than: int, limit: int | None) -> None:
        now, model = self.now, self.model
        if state is A:
            try:
                self.core.clean(queue, state, older_than, limit, now)
            except CoreError as exc:
                assert exc.code is ErrorCode.BAD_ARGUMENT
            else:
                raise AssertionError("cleaning active jobs must be refused")
            return
        removed = self.core.clean(queue, state, older_than, limit, now)
        cutoff = now - older_than
        victims: list[MJob] = []
        if state in (C, F):
            for job in model.finish_list(queue, state):
                if (limit is not None and len(victims) >= limit) or (job.finished_at or 0) > cutoff:
                    break
                victims.append(job)
        else:
            victims = sorted((j for j in model.in_state(queue, state) if j.created_at <= cutoff),
                             key=lambda j: j.seq)[:limit]
        for job in victims:
            model.delete(job)
        assert removed == len(victims)

    @rule(queue=st.sampled_from(QUEUES), limit=st.integers(1, 3), offset=st.integers(0, 2))
    def list_failed(self, queue: str, limit: int, offset: int) -> None:
        jobs, total = self.core.list_failed(queue, limit, offset)
        expected = self.model.finish_list(queue, F)[::-1]
        assert [j.id for j in jobs] == [j.id for j in expected[offset:offset + limit]]
        assert total == len(expected)

    # ------------------------------------------------------------------ repeatable jobs

    @rule(queue=st.sampled_from(("a", "b")), key=st.sampled_from(("k", "j")),
          every=st.sampled_from((100, 700, 2_000)), limit=st.sampled_from((None, None, 1, 3)),
          end=st.sampled_from((None, None, 1_500)), payload=st.sampled_from(PAYLOADS[-3:]))
    def schedule_upsert(self, queue: str, key: str, every: int, limit: int | None,
                        end: int | None, payload: bytes) -> None:
        now, model = self.now, self.model
        end_ms = None if end is None else now + end
        template = JobSpec(None, "task", payload)
        rule_ = Rule(every, None, None, None, end_ms, limit, 0)
        if len(payload) > CONFIG.max_payload:
            try:
                self.core.schedules.upsert(queue, key, template, rule_, now)
            except CoreError as exc:
                assert exc.code is ErrorCode.BAD_ARGUMENT
            else:
                raise AssertionError("expected BAD_ARGUMENT")
            return
        info, created, changed = self.core.schedules.upsert(queue, key, template, rule_, now)
        old = model.schedulers.get((queue, key))
        expected = MScheduler(every, limit, end_ms, payload, now if old is None else old.anchor)
        if old is not None and (old.every, old.limit, old.end, old.payload) == (
                every, limit, end_ms, payload):
            assert (created, changed) == (False, False)
        else:
            assert (created, changed) == (old is None, True)
            if old is not None:
                expected.count = old.count - model.drop_pending(queue, key, old)
            model.schedulers[(queue, key)] = expected
            model.make_next(queue, key, expected, now - 1, now)
        scheduler = model.schedulers[(queue, key)]
        assert (info.count, info.next_run_at) == (scheduler.count, scheduler.next_at)

    @rule(queue=st.sampled_from(("a", "b")), key=st.sampled_from(("k", "j")))
    def schedule_remove(self, queue: str, key: str) -> None:
        model = self.model
        removed = self.core.schedules.remove(queue, key, self.now)
        scheduler = model.schedulers.pop((queue, key), None)
        assert removed == (scheduler is not None)
        if scheduler is not None:
            model.drop_pending(queue, key, scheduler)

    # ------------------------------------------------------------------ restart

    def commit(self) -> None:
        """Persist the core's changes (after every step, so everything is committed)."""
        self.journal.apply(self.core)

    def recovered_snapshot(self) -> Snapshot:
        """What a restarted broker loads (test_core_journal_model.py: the real journal)."""
        return self.journal.snapshot()

    @rule()
    def restore(self) -> None:
        """Rebuild the core from the journal's copy (everything was committed)."""
        self.commit()
        self.restart()

    def restart(self) -> None:
        """Drop the core, rebuild it from ``recovered_snapshot`` and apply the recovery rule
        to the model (which must hold what was committed)."""
        self.core.take_ready()
        self.core.take_finished()
        self.model.ready.clear()
        self.model.finished.clear()
        self.restores += 1
        base = self.restores * 1_000_000
        now, model = self.now, self.model
        self.core = Core.restore(CONFIG, self.recovered_snapshot(), now, rng=random.Random(0),
                                 token_base=base)
        model.token = base + 1
        for job in sorted(model.jobs.values(), key=lambda j: (j.priority, j.run_at, j.seq)):
            if job.state is W:
                job.ready_stamp = model._stamp()
        for job in sorted(model.jobs.values(), key=lambda j: (j.finished_at or 0, j.seq)):
            if job.state in (C, F):
                job.finish_stamp = model._stamp()
        for name, queue in model.queues.items():  # the window is rebuilt from started_at
            queue.starts = [j.started_at for j in model.jobs.values()
                            if j.queue == name and j.started_at is not None]
        for job in sorted(model.jobs.values(), key=lambda j: j.seq):
            if job.state is A:
                model.fail_attempt(job, "broker restarted during the attempt", True, None, now)
        model.age_prune_all(now)
        for name, queue in model.queues.items():
            if not queue.paused and model.in_state(name, W):
                model.ready.add(name)

    # ------------------------------------------------------------------ agreement

    @invariant()
    def agree(self) -> None:
        core, model, now = self.core, self.model, self.now
        ready = core.take_ready()
        # A queue with flow control may also be reported when a slot or its window frees (a
        # waiter then tries, and may find nothing): spurious wakes are allowed, missed ones not.
        assert model.ready <= ready
        assert all(model.queue(name).limited or name in model.limit_changed
                   for name in ready - model.ready), ready
        assert core.take_finished() == model.finished
        model.ready.clear()
        model.finished.clear()
        self.commit()
        assert {(j.queue, j.id) for j in core.iter_jobs()} == set(model.jobs)
        for job in model.jobs.values():
            info = core.get(job.id, job.queue)
            assert info is not None
            assert (info.state, info.queue, info.priority, info.attempts, info.max_attempts,
                    info.payload, info.progress, info.result, info.error, info.created_at,
                    info.run_at, info.started_at, info.finished_at, info.lease_deadline) == (
                job.state, job.queue, job.priority, job.attempts, job.max_attempts,
                job.payload, job.progress, job.result, job.error, job.created_at,
                job.run_at, job.started_at, job.finished_at, job.deadline,
            ), job.id
        stats = core.stats(None, now)
        assert set(stats) == set(model.queues)
        for name, queue in model.queues.items():
            waiting = model.in_state(name, W)
            oldest = now - min(j.run_at for j in waiting) if waiting else None
            assert tuple(stats[name]) == (
                len(waiting), len(model.in_state(name, D)), len(model.in_state(name, A)),
                len(model.in_state(name, C)), len(model.in_state(name, F)), queue.paused,
                oldest, queue.total_completed, queue.total_failed,
            ), name
        due = [j.run_at for j in model.jobs.values() if j.state is D]
        due += [j.due for j in model.jobs.values() if j.state is A]
        due += [(j.finished_at or 0) + (KEEP_COMPLETED.age_ms or 0)
                for j in model.jobs.values() if j.state is C]
        due += [s.next_at for s in model.schedulers.values() if s.next_at is not None]
        deadline = core.next_deadline()
        if due:
            assert deadline is not None and deadline <= min(due)
        listed, total = core.schedules.list(None, 0, 100)
        assert total == len(model.schedulers)
        assert [(s.queue, s.key, s.every_ms, s.limit, s.end_ms, s.count, s.next_run_at)
                for s in listed] == [
            (queue, key, s.every, s.limit, s.end, s.count, s.next_at)
            for (queue, key), s in sorted(model.schedulers.items())]


CoreMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestCoreModel = CoreMachine.TestCase
