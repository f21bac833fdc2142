"""The broker's in-memory job record, its states and their legal transitions.

A ``Job`` is the single source of truth for one job while it lives in the broker. It is kept
small (``__slots__``, payload as ``bytes``, rarely-set options in one shared ``JobOptions``)
because a broker holds millions of them: the budget is well under 600 bytes per waiting job.

Invariants:
- ``state`` changes only through ``Job.move_to``, which checks ``TRANSITIONS`` (the core's ack
  hot path assigns ACTIVE -> COMPLETED directly; that move is in the table and tested).
- ``lease_token``, ``lease_deadline`` and ``owner`` are set exactly while ``state`` is ACTIVE.
- ``attempts`` counts deliveries that have started (a reservation starts one; a ``release``
  hands the job back and takes its one back).
- ``seq`` is unique and increases with enqueue order; broker-assigned ids are ``str(seq)``.
- ``key`` is the job's key in the core's index (``CoreState.jobs``): its ``id``, or
  ``(queue, id)`` when another live job had the same user id when it was added (user ids are
  unique per queue; see ``CoreState.add``). It never changes while the job lives.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import repeat
from operator import add
from typing import Any, Final, NamedTuple

from protocol.model import Backoff, JobState, Retention

JobKey = str | tuple[str, str]
"""A job's key in the core's index: its id, or ``(queue, id)`` (see ``Job.key``)."""


class IllegalTransition(Exception):
    """A state change that the job model forbids: a bug in the caller, never a client error."""


TRANSITIONS: Final[dict[JobState, frozenset[JobState]]] = {
    JobState.WAITING: frozenset({JobState.ACTIVE, JobState.DELAYED}),
    JobState.DELAYED: frozenset({JobState.WAITING}),
    JobState.ACTIVE: frozenset(
        {JobState.COMPLETED, JobState.FAILED, JobState.DELAYED, JobState.WAITING}
    ),
    JobState.COMPLETED: frozenset(),
    JobState.FAILED: frozenset({JobState.WAITING}),
}
"""Legal moves. Removal (cancel, clean, retention) is not a state: the job is deleted."""


class JobOptions(NamedTuple):
    """Per-job overrides of the queue defaults. ``None`` means "use the default".

    Jobs enqueued with no overrides share ``NO_OPTIONS``; equal overrides within a batch can
    share one instance, so options cost nothing per job in the common case.
    """

    backoff: Backoff | None = None
    lease_ms: int | None = None
    keep_completed: Retention | None = None
    keep_failed: Retention | None = None
    timeout_ms: int | None = None
    """One attempt's longest run time (``broker/timeouts``); ``None``: no limit."""


NO_OPTIONS: Final = JobOptions()


class Job:
    """One job. Times are integer milliseconds since the Unix epoch."""

    __slots__ = (
        "attempts",
        "created_at",
        "error",
        "finished_at",
        "id",
        "key",
        "lease_deadline",
        "lease_token",
        "max_attempts",
        "name",
        "options",
        "owner",
        "payload",
        "priority",
        "progress",
        "queue",
        "result",
        "run_at",
        "seq",
        "started_at",
        "state",
    )

    def __init__(
        self,
        seq: int,
        job_id: str,
        queue: str,
        name: str,
        payload: bytes,
        *,
        priority: int,
        run_at: int,
        max_attempts: int,
        options: JobOptions,
        state: JobState,
        created_at: int,
        attempts: int = 0,
        started_at: int | None = None,
        finished_at: int | None = None,
        progress: Any = None,
        result: bytes | None = None,
        error: str | None = None,
    ) -> None:
        self.seq = seq
        self.id = job_id
        self.key: JobKey = job_id
        self.queue = queue
        self.name = name
        self.payload = payload
        self.priority = priority
        self.run_at = run_at
        self.max_attempts = max_attempts
        self.options = options
        self.state = state
        self.created_at = created_at
        self.attempts = attempts
        self.started_at = started_at
        self.finished_at = finished_at
        self.progress = progress
        self.result = result
        self.error = error
        self.lease_token: int | None = None
        self.lease_deadline: int | None = None
        self.owner: int | None = None

    def move_to(self, state: JobState) -> None:
        """Change state, enforcing ``TRANSITIONS``.

        Raises:
            IllegalTransition: the move is not allowed from the current state.
        """
        if state not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"job {self.id}: {self.state} -> {state}")
        self.state = state

    def clone(self) -> Job:
        """An independent copy with every field (as a journal row read back would give)."""
        copy = Job(
            self.seq, self.id, self.queue, self.name, self.payload, priority=self.priority,
            run_at=self.run_at, max_attempts=self.max_attempts, options=self.options,
            state=self.state, created_at=self.created_at, attempts=self.attempts,
            started_at=self.started_at, finished_at=self.finished_at, progress=self.progress,
            result=self.result, error=self.error,
        )
        copy.key = self.key
        copy.lease_token = self.lease_token
        copy.lease_deadline = self.lease_deadline
        copy.owner = self.owner
        return copy

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.queue}/{self.name} {self.state} attempts={self.attempts}>"


_new_job: Final = object.__new__
_DIGITS3: Final = tuple(f"{i:03d}" for i in range(1000))


def seq_ids(start: int, end: int) -> tuple[str, ...]:
    """The broker-assigned ids of ``seq`` ``start`` to ``end - 1``: ``tuple(map(str, range(start,
    end)))``, built a thousand at a time by joining each block's prefix to ready-made 3-digit
    suffixes (half the cost of converting each number)."""
    ids: list[str] = []
    while start < end:
        block, low = divmod(start, 1000)
        high = min(1000, low + end - start)
        if block:
            ids.extend(map(add, repeat(repr(block)), _DIGITS3[low:high]))
        else:  # below 1,000: no leading zeros
            ids.extend(map(repr, range(low, high)))
        start += high - low
    return tuple(ids)


def new_waiting(
    seq: int, ids: Sequence[str], queue: str, names: Iterable[str], payloads: Iterable[bytes],
    now: int, max_attempts: int,
) -> list[Job]:
    """Jobs just enqueued without options, waiting at priority 0 since ``now``, with the ``ids``
    and consecutive ``seq`` from ``seq``: each equal to ``Job(seq, id, queue, name, payload,
    priority=0, run_at=now, max_attempts=max_attempts, options=NO_OPTIONS,
    state=JobState.WAITING, created_at=now)``. The producer's hot path: allocated in one C
    loop and filled without ``__init__``'s call and keyword handling, a job costs a third of a
    ``Job(...)`` call.
    """
    made: list[Job] = list(map(_new_job, repeat(Job, len(ids))))
    waiting = JobState.WAITING
    for job, job_seq, job_id, name, payload in zip(  # names may be an endless repeat()
        made, range(seq, seq + len(made)), ids, names, payloads, strict=False
    ):
        job.seq = job_seq
        job.id = job.key = job_id
        job.queue = queue
        job.name = name
        job.payload = payload
        job.priority = 0
        job.run_at = job.created_at = now
        job.max_attempts = max_attempts
        job.options = NO_OPTIONS
        job.state = waiting
        job.attempts = 0
        job.started_at = job.finished_at = job.progress = job.result = job.error = None
        job.lease_token = job.lease_deadline = job.owner = None
    return made
