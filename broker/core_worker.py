"""The core's worker operations: reserve, ack, fail, extend, release, progress, a lost
connection (``release_owner``), and the clock (``tick``, ``next_deadline``).

Functions of a ``CoreState``, called by ``broker.core.Core`` (which documents each). ``reserve``
and ``ack`` are the hot path: they bind what they use to locals and inline the lease and state
bookkeeping that ``CoreState`` otherwise does per job; the comments say where.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any, Final

from broker import core_flow, core_lists, core_schedules
from broker.core_state import (
    ACTIVE,
    COMPLETED,
    DELAYED,
    WAITING,
    CoreError,
    CoreState,
    QueueState,
)
from broker.jobs import NO_OPTIONS, Job
from broker.replysize import RESERVED_JOB_OVERHEAD, UTF8_MAX, packed_size
from broker.timeouts import first_due, timed_out, timeout_error
from protocol.batches import AckBatch
from protocol.errors import ErrorCode
from protocol.model import AckItem, ExtendItem, FailItem, JobState, ReleaseItem
from protocol.observing import EventKind
from protocol.replies import OK, Outcome, ReservedJob

LEASE_EXPIRED: Final = "lease expired"
CONNECTION_LOST: Final = "worker connection lost"
_new_tuple = tuple.__new__  # builds a ReservedJob without NamedTuple.__new__'s argument handling
OK_COMPLETED: Final = Outcome(OK, COMPLETED.value)
"""The outcome of every successful ack item (one shared object: ``list.count`` finds them)."""
_OUTCOME_OF_STATE: Final = {state: Outcome(OK, state.value) for state in JobState}


def reserve(
    core: CoreState, queues: Sequence[str], max_jobs: int, lease_ms: int | None, owner: int,
    now: int, max_bytes: int | None = None,
) -> list[ReservedJob]:
    """``Core.reserve`` (documented there)."""
    core.promote_due(now)
    out: list[ReservedJob] = []
    jobs = core.jobs
    changed = core.changed_jobs
    lease_entries = core.leases.entries
    heappush = heapq.heappush
    default_lease = lease_ms or core.config.default_lease_ms
    owned: dict[Job, None] | None = None
    token = core.token
    room = max_bytes
    events = core.events
    for name in queues:
        q = core.queues.get(name)
        if q is None or not q.waiting or q.meta.paused:
            continue
        stop = max_jobs
        if q.limited:
            allowed = core_flow.room(q, now)
            if allowed <= 0:
                core_flow.started(core, q, now, 0)
                continue
            stop = min(max_jobs, len(out) + allowed)
        ready = q.ready
        qname = q.name
        listing = q.listing if q.listing is None else core_lists.kept(q, now)
        fixed = RESERVED_JOB_OVERHEAD + UTF8_MAX * len(qname)
        waits: list[int] = []  # the queue's wait_ms, counted once per queue
        wait = waits.append
        taken = 0
        limit = stop - len(out)  # this queue's jobs to take at most: taken < limit
        while taken < limit:
            lane = ready.front()
            if lane is None:
                break
            while lane and taken < limit:
                job = lane.popleft()
                job_id = job.id
                if job.state is not WAITING or jobs.get(job.key) is not job:
                    ready.stale -= 1
                    continue
                if room is not None:
                    size = fixed + len(job.payload) + UTF8_MAX * (len(job_id) + len(job.name))
                    if job.progress is not None:
                        size += packed_size(job.progress)
                    if size > room and out:
                        lane.appendleft(job)  # stays first in line
                        max_jobs = len(out)
                        limit = taken
                        break
                    room -= size
                if listing is not None:
                    listing.take_first(job)
                options = job.options
                if options is NO_OPTIONS:  # most jobs: no NamedTuple field reads
                    lease, timeout = default_lease, None
                else:
                    lease = options.lease_ms or default_lease
                    timeout = options.timeout_ms
                deadline = now + lease
                # WAITING -> ACTIVE is legal (TRANSITIONS); assigned directly on the hot path.
                job.state = ACTIVE
                attempts = job.attempts = job.attempts + 1
                job.started_at = now
                job.lease_token = token
                job.lease_deadline = deadline
                job.owner = owner
                # A job with a timeout files its entry at the earlier of its two deadlines.
                heappush(lease_entries, (
                    deadline if timeout is None else first_due(deadline, job), token, job))
                if owned is None:
                    owned = core.owned.get(owner)
                    if owned is None:
                        owned = core.owned[owner] = {}
                owned[job] = None
                changed[job.seq] = job
                out.append(_new_tuple(ReservedJob, (
                    job_id, qname, job.name, job.payload, attempts, job.max_attempts, token,
                    lease, deadline, job.created_at, job.progress, timeout,
                )))
                # Waiting since it became due (run_at), or since it was created if it was
                # enqueued with a run time already past.
                run_at = job.run_at
                wait(now - (run_at if run_at > job.created_at else job.created_at))
                if events is not None:
                    events.record(EventKind.ACTIVE, now, qname, job_id, job.name, (attempts,))
                token += 1
                taken += 1
        q.waiting -= taken
        q.active += taken
        if waits:
            q.metrics.wait_ms.observe_many(waits)
        if events is not None and taken and not q.waiting:
            events.record(EventKind.DRAINED, now, qname, None, None)
        if q.limited:
            core_flow.started(core, q, now, taken)
        if len(out) >= max_jobs:
            break
    core.token = token
    return out


def ack(core: CoreState, items: Sequence[AckItem], now: int) -> list[Outcome]:
    """``Core.ack`` (documented there)."""
    out: list[Outcome] = []
    jobs = core.jobs
    queues = core.queues
    owned_by = core.owned
    changed = core.changed_jobs
    finished_ids = core.finished_ids
    max_payload = core.config.max_payload
    leases = core.leases
    delete = core.delete
    events = core.events
    done = 0
    q: QueueState | None = None
    ran: list[int] = []  # processing_ms of the queue's completions, counted once per queue
    for job_id, token, result in items.columns() if type(items) is AckBatch else items:
        job = jobs.get(job_id)
        if job is None or job.lease_token != token:
            job = core.leased(job_id, token)  # user ids live in several queues (rare)
        if job is None or job.lease_token != token or job.state is not ACTIVE:
            out.append(_lease_problem(job, job_id))
            continue
        if result is not None and len(result) > max_payload:
            out.append(Outcome(
                ErrorCode.PAYLOAD_TOO_LARGE.value,
                f"result of {len(result)} bytes, limit {max_payload}",
            ))
            continue
        if q is None or q.name is not job.queue:
            if q is not None:
                _after_completions(core, q, done, ran, now)
                done = 0
                ran = []
            q = queues[job.queue]
        # The lease ends (CoreState.end_lease, inlined: this is the hot path).
        owned = owned_by.get(job.owner)  # type: ignore[arg-type]
        if owned is not None:
            owned.pop(job, None)
        job.lease_token = job.lease_deadline = job.owner = None
        leases.stale += 1
        # ACTIVE -> COMPLETED is legal (TRANSITIONS); assigned directly on the hot path.
        job.state = COMPLETED
        job.result = result
        job.finished_at = now
        done += 1
        finished_ids.add((job.queue, job_id))
        ran.append(now - job.started_at)  # type: ignore[operator]  # set when reserved
        if events is not None:  # before retention may drop the job: its result goes out
            events.record(EventKind.COMPLETED, now, q.name, job_id, job.name,
                          (job.attempts, result))
        if q.completed.add(job, jobs, delete):
            changed[job.seq] = job
        else:  # removed on completion: its parked waiters still get the result
            core.gone_at_finish[(job.queue, job_id)] = job
        out.append(OK_COMPLETED)
    if q is not None:
        _after_completions(core, q, done, ran, now)
    leases.maybe_compact(core.lease_entry_live)
    return out


def _after_completions(
    core: CoreState, queue: QueueState, done: int, ran: list[int], now: int
) -> None:
    """Counters and bookkeeping after ``done`` of the queue's active jobs completed, having
    run for ``ran`` ms each."""
    metrics = queue.metrics
    metrics.completed.add(now, done)
    metrics.processing_ms.observe_many(ran)
    queue.active -= done
    core.unfinished -= done
    meta = queue.meta
    if meta.concurrency is not None and queue.waiting and not meta.paused:
        core.ready_names.add(queue.name)  # concurrency slots freed
    meta.total_completed += done
    core.changed_queues[queue.name] = meta
    if queue.completed.scheduled is None:
        core.schedule_prune(queue.completed, queue)


def fail(core: CoreState, items: Sequence[FailItem], now: int) -> list[Outcome]:
    """``Core.fail`` (documented there)."""
    core.promote_due(now)
    out: list[Outcome] = []
    for job_id, token, error, retry, delay_ms in items:
        job = core.leased(job_id, token)
        problem = _check_lease(job, job_id, token)
        if problem is not None:
            out.append(problem)
            continue
        assert job is not None
        state = core.fail_attempt(job, core.queues[job.queue], error, retry, delay_ms, now)
        out.append(_OUTCOME_OF_STATE[state])
    return out


def extend(core: CoreState, items: Sequence[ExtendItem], now: int) -> list[Outcome]:
    """``Core.extend`` (documented there)."""
    out: list[Outcome] = []
    for job_id, token, lease_ms in items:
        job = core.leased(job_id, token)
        problem = _check_lease(job, job_id, token)
        if problem is not None:
            out.append(problem)
            continue
        assert job is not None and job.lease_deadline is not None
        length = lease_ms or job.options.lease_ms or core.config.default_lease_ms
        deadline = now + length
        if deadline < job.lease_deadline and first_due(deadline, job) == deadline:
            # The heap entry is later than the new deadline (and the attempt deadline, which
            # an extension never moves, is later still): add an earlier one.
            core.leases.push(deadline, token, job)
            core.leases.stale += 1
        job.lease_deadline = deadline
        core.changed_jobs[job.seq] = job
        out.append(Outcome(OK, deadline))
    return out


def release(core: CoreState, items: Sequence[ReleaseItem], now: int) -> list[Outcome]:
    """``Core.release`` (documented there)."""
    core.promote_due(now)
    out: list[Outcome] = []
    for job_id, token, delay_ms, pause_queue in items:
        job = core.leased(job_id, token)
        problem = _check_lease(job, job_id, token)
        if problem is not None:
            out.append(problem)
            continue
        assert job is not None
        queue = core.queues[job.queue]
        if pause_queue and delay_ms:
            core_flow.pause_for(core, queue, now + delay_ms)
        core.end_lease(job, queue, entry_popped=False)
        job.attempts = max(0, job.attempts - 1)
        core.changed_jobs[job.seq] = job
        if delay_ms:
            core.make_delayed(job, queue, now + delay_ms)
            out.append(_OUTCOME_OF_STATE[DELAYED])
        else:
            core.make_waiting(job, queue, now)
            out.append(_OUTCOME_OF_STATE[WAITING])
        events = core.events
        if events is not None:
            events.record(EventKind.RELEASED, now, job.queue, job_id, job.name, (job.run_at,))
            if delay_ms:
                events.record(EventKind.DELAYED, now, job.queue, job_id, job.name, (job.run_at,))
    return out


def progress(core: CoreState, job_id: str, token: int, value: Any, now: int) -> None:
    """``Core.progress`` (documented there)."""
    job = core.leased(job_id, token)
    problem = _check_lease(job, job_id, token)
    if problem is not None:
        raise CoreError(ErrorCode(problem.code), problem.value)
    assert job is not None
    size = packed_size(value)
    if size > core.config.max_payload:
        raise CoreError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"progress of {size} bytes, limit {core.config.max_payload}",
        )
    job.progress = value
    core.changed_jobs[job.seq] = job
    if core.events is not None:
        core.events.record(EventKind.PROGRESS, now, job.queue, job_id, job.name, (value,))


def _check_lease(job: Job | None, job_id: str, token: int) -> Outcome | None:
    """``None`` if ``job`` is active under ``token``, else the per-item error."""
    if job is None or job.state is not ACTIVE or job.lease_token != token:
        return _lease_problem(job, job_id)
    return None


def _lease_problem(job: Job | None, job_id: str) -> Outcome:
    if job is None:
        return Outcome(ErrorCode.NOT_FOUND.value, f"no job {job_id!r}")
    return Outcome(
        ErrorCode.STALE_LEASE.value,
        f"job {job_id!r} is {job.state.value}; the lease token is not its current one",
    )


def release_owner(core: CoreState, owner: int, now: int) -> int:
    """``Core.release_owner`` (documented there)."""
    held = core.owned.pop(owner, None)
    if not held:
        return 0
    core.promote_due(now)
    for job in list(held):
        core.fail_attempt(job, core.queues[job.queue], CONNECTION_LOST, True, None, now,
                          expired=True)
    return len(held)


def tick(core: CoreState, now: int) -> None:
    """``Core.tick`` (documented there)."""
    core.promote_due(now)
    leases = core.leases
    while (entry := leases.pop_due(now)) is not None:
        deadline, token, job = entry
        if not core.lease_entry_live(entry):
            leases.stale -= 1
            continue
        assert job.lease_deadline is not None
        due = first_due(job.lease_deadline, job)
        if due > deadline:
            leases.push(due, token, job)  # extended: expire in its turn
            continue
        if timed_out(job, now):  # the job's timeout (broker/timeouts), not the lease
            core.fail_attempt(job, core.queues[job.queue], timeout_error(job), True, None, now,
                              entry_popped=True)
            continue
        core.fail_attempt(
            job, core.queues[job.queue], LEASE_EXPIRED, True, None, now, entry_popped=True,
            expired=True,
        )
    if core.flow_wakes:
        core_flow.fire(core, now)
    if core.schedules.heap:
        core_schedules.fire(core, now)
    prunes = core.prunes
    while prunes and prunes[0][0] <= now:
        expiry, _, finished, queue = heapq.heappop(prunes)
        if finished.scheduled != expiry:
            continue
        finished.prune(now, core.jobs, core.delete)
        core.schedule_prune(finished, queue)


def next_deadline(core: CoreState) -> int | None:
    """``Core.next_deadline`` (documented there)."""
    leases = core.leases
    entries = leases.entries
    while entries and entries[0][2].lease_token != entries[0][1]:
        heapq.heappop(entries)
        leases.stale -= 1
    delayed = core.delayed
    entries = delayed.entries
    while entries and not core.delayed_entry_live(entries[0]):
        heapq.heappop(entries)
        delayed.stale -= 1
    times = [
        time for time in (
            delayed.peek_time(),
            leases.peek_time(),
            core.prunes[0][0] if core.prunes else None,
            core_flow.next_wake(core) if core.flow_wakes else None,
            core_schedules.next_wake(core) if core.schedules.heap else None,
        )
        if time is not None
    ]
    return min(times) if times else None
