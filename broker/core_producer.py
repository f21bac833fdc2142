"""The core's producer operation, ``enqueue`` (a function of a ``CoreState``, documented on
``broker.core.Core``).

``enqueue`` has a fast path, ``_enqueue_plain``, for batches in which no job has an id or an
option (one job at a time, or a bulk of plain jobs): it skips the per-field decisions and
creates the jobs waiting at priority 0. From ``BULK`` jobs on (``PlainJobs`` from the parser, or
any such sequence) it takes the batch as a whole, ``_enqueue_bulk``: the jobs built by
``broker.jobs.new_waiting`` and filed with one C-level call per index. Every path follows the
rules in ``broker/core``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import islice, repeat
from operator import itemgetter
from typing import Final

from broker import core_lists
from broker.core_state import DELAYED, WAITING, CoreError, CoreState, QueueState
from broker.jobs import NO_OPTIONS, Job, JobOptions, new_waiting, seq_ids
from protocol.batches import BULK, PlainJobs
from protocol.errors import ErrorCode
from protocol.model import PLAIN_TAIL, JobSpec
from protocol.observing import EventKind
from protocol.replies import EnqueueResult

_NAME: Final = itemgetter(1)
_PAYLOAD: Final = itemgetter(2)


def enqueue(core: CoreState, queue: str, specs: Sequence[JobSpec], now: int) -> EnqueueResult:
    """``Core.enqueue`` (documented there)."""
    plain = _enqueue_plain(core, queue, specs, now)
    if plain is not None:
        return plain
    config = core.config
    find = core.find
    max_payload = config.max_payload
    fresh = 0
    seen: set[str] | None = None
    for index, spec in enumerate(specs):
        if len(spec.payload) > max_payload:
            raise CoreError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"jobs[{index}].payload: {len(spec.payload)} bytes, limit {max_payload}",
            )
        job_id = spec.job_id
        if job_id is not None:
            if find(queue, job_id) is not None:
                continue
            if seen is None:
                seen = {job_id}
            elif job_id in seen:
                continue
            else:
                seen.add(job_id)
        fresh += 1
    existing = core.queues.get(queue)
    if fresh:
        _check_room(core, queue, existing, fresh)
    core.promote_due(now)
    q = existing if existing is not None else core.queue(queue)
    qname = q.name
    ready = q.ready
    listing = q.listing if q.listing is None else core_lists.kept(q, now)
    names = core.names
    changed = core.changed_jobs
    default_attempts = config.default_max_attempts
    delayed = core.delayed
    add = core.add
    ids: list[str] = []
    duplicates: list[int] = []
    last_options = NO_OPTIONS
    seq = core.seq
    waiting = 0
    lane_priority: int | None = None
    lane = None
    events = core.events
    for index, spec in enumerate(specs):
        (job_id, name, payload, priority, delay_ms, run_at_ms, max_attempts, backoff,
         lease_ms, keep_completed, keep_failed, timeout_ms) = spec
        if job_id is None:
            job_id = str(seq)
        elif find(qname, job_id) is not None:
            ids.append(job_id)
            duplicates.append(index)
            continue
        if run_at_ms is not None:
            run_at = run_at_ms
        elif delay_ms:
            run_at = now + delay_ms
        else:
            run_at = now
        if backoff is None and lease_ms is None and keep_completed is None and (
            keep_failed is None and timeout_ms is None
        ):
            options = NO_OPTIONS
        else:
            options = JobOptions(backoff, lease_ms, keep_completed, keep_failed, timeout_ms)
            if options == last_options:
                options = last_options
            last_options = options
        interned = names.get(name)
        if interned is None:
            interned = core.intern(name)
        if run_at > now:
            job = Job(
                seq, job_id, qname, interned, payload, priority=priority, run_at=run_at,
                max_attempts=max_attempts or default_attempts, options=options,
                state=DELAYED, created_at=now,
            )
            q.delayed += 1
            delayed.push(run_at, seq, job)
            if events is not None:
                events.record(EventKind.ADDED, now, qname, job_id, interned, (DELAYED, run_at))
                events.record(EventKind.DELAYED, now, qname, job_id, interned, (run_at,))
        else:
            job = Job(
                seq, job_id, qname, interned, payload, priority=priority, run_at=now,
                max_attempts=max_attempts or default_attempts, options=options,
                state=WAITING, created_at=now,
            )
            waiting += 1
            if priority != lane_priority or lane is None:
                lane = ready.lane(priority, now)
                lane_priority = priority
            lane.append(job)
            if listing is not None:
                listing.add(job)
            if events is not None:
                events.record(EventKind.ADDED, now, qname, job_id, interned, (WAITING, now))
        add(job)
        changed[seq] = job
        seq += 1
        ids.append(job_id)
    core.seq = seq
    core.unfinished += fresh
    if fresh:
        q.metrics.added.add(now, fresh)
    if waiting:
        q.waiting += waiting
        if not q.meta.paused:
            core.ready_names.add(qname)
    return EnqueueResult(tuple(ids), tuple(duplicates))


def _enqueue_plain(
    core: CoreState, queue: str, specs: Sequence[JobSpec], now: int
) -> EnqueueResult | None:
    """``enqueue`` when no spec has an id or an option (the hot path, one job or a bulk
    batch); ``None``, having changed nothing, when one does. A batch of ``BULK`` jobs or more
    is enqueued as a whole (``_enqueue_bulk``); fewer cost less one by one, here."""
    if type(specs) is PlainJobs:  # parse_jobs checked every job: no id, no option
        return _enqueue_bulk(core, queue, specs.names, specs.payloads, now)
    config = core.config
    max_payload = config.max_payload
    for index, spec in enumerate(specs):
        if spec[0] is not None or spec[3:] != PLAIN_TAIL:
            return None
        if len(spec[2]) > max_payload:
            raise CoreError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"jobs[{index}].payload: {len(spec[2])} bytes, limit {max_payload}",
            )
    fresh = len(specs)
    if not fresh:
        return None
    if fresh >= BULK:
        return _enqueue_bulk(core, queue, list(map(_NAME, specs)), list(map(_PAYLOAD, specs)), now)
    q = _plain_target(core, queue, fresh, now)
    qname = q.name
    lane = q.ready.lane(0, now)
    jobs = core.jobs
    changed = core.changed_jobs
    names = core.names
    attempts = config.default_max_attempts
    seq = core.seq
    ids: list[str] = []
    events = core.events
    for spec in specs:
        name = spec[1]
        interned = names.get(name)
        if interned is None:
            interned = core.intern(name)
        job_id = str(seq)
        job = Job(
            seq, job_id, qname, interned, spec[2], priority=0, run_at=now,
            max_attempts=attempts, options=NO_OPTIONS, state=WAITING, created_at=now,
        )
        lane.append(job)
        jobs[job_id] = job  # a broker-assigned id is unique: no need for core.add
        changed[seq] = job
        ids.append(job_id)
        seq += 1
        if events is not None:
            events.record(EventKind.ADDED, now, qname, job_id, interned, (WAITING, now))
    core.seq = seq
    core.unfinished += fresh
    q.metrics.added.add(now, fresh)
    q.waiting += fresh
    if q.listing is not None and (listing := core_lists.kept(q, now)) is not None:
        # the batch is the lane's last ``fresh`` entries
        listing.add_all(reversed(list(islice(reversed(lane), fresh))))
    if not q.meta.paused:
        core.ready_names.add(qname)
    return EnqueueResult(tuple(ids), ())


def _enqueue_bulk(
    core: CoreState, queue: str, names: Sequence[str], payloads: Sequence[bytes], now: int
) -> EnqueueResult:
    """``_enqueue_plain`` of a batch, as a whole: the jobs are built in one loop
    (``new_waiting``) and filed in the job index, the changes, the lane and the ids with one
    C-level call each."""
    config = core.config
    max_payload = config.max_payload
    fresh = len(payloads)
    if max(map(len, payloads)) > max_payload:
        index = next(i for i, payload in enumerate(payloads) if len(payload) > max_payload)
        raise CoreError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"jobs[{index}].payload: {len(payloads[index])} bytes, limit {max_payload}",
        )
    q = _plain_target(core, queue, fresh, now)
    qname = q.name
    first = names[0]
    if names.count(first) == fresh:  # one name for the batch (the common case)
        interned: Iterable[str] = repeat(core.intern(first), fresh)
    else:
        known = {name: core.intern(name) for name in set(names)}
        interned = map(known.__getitem__, names)
    seq = core.seq
    end = seq + fresh
    ids = seq_ids(seq, end)
    made = new_waiting(seq, ids, qname, interned, payloads, now, config.default_max_attempts)
    q.ready.lane(0, now).extend(made)
    core.jobs.update(zip(ids, made, strict=True))  # broker-assigned ids are unique: no add
    core.changed_jobs.update(zip(range(seq, end), made, strict=True))
    events = core.events
    if events is not None:
        for job in made:
            events.record(EventKind.ADDED, now, qname, job.id, job.name, (WAITING, now))
    core.seq = end
    core.unfinished += fresh
    q.metrics.added.add(now, fresh)
    q.waiting += fresh
    if q.listing is not None and (listing := core_lists.kept(q, now)) is not None:
        listing.add_all(made)
    if not q.meta.paused:
        core.ready_names.add(qname)
    return EnqueueResult(ids, ())


def _plain_target(core: CoreState, queue: str, fresh: int, now: int) -> QueueState:
    """The queue that ``fresh`` plain jobs go to (made if new), once ``_check_room`` let them
    in and due delayed jobs were promoted ahead of them."""
    q = core.queues.get(queue)
    _check_room(core, queue, q, fresh)
    entries = core.delayed.entries
    if entries and entries[0][0] <= now:
        core.promote_due(now)
    return q if q is not None else core.queue(queue)


def _check_room(core: CoreState, queue: str, existing: QueueState | None, fresh: int) -> None:
    """Raise ``QUEUE_FULL`` if ``fresh`` more unfinished jobs would pass a limit."""
    config = core.config
    if config.max_queue_jobs is not None:
        held = existing.unfinished if existing is not None else 0
        if held + fresh > config.max_queue_jobs:
            raise CoreError(
                ErrorCode.QUEUE_FULL,
                f"queue {queue!r} holds {held} unfinished jobs, limit {config.max_queue_jobs}",
            )
    if config.max_total_jobs is not None and (
        core.unfinished + fresh > config.max_total_jobs
    ):
        raise CoreError(
            ErrorCode.QUEUE_FULL,
            f"the broker holds {core.unfinished} unfinished jobs, "
            f"limit {config.max_total_jobs}",
        )
