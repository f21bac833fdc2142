"""Job timeouts: the longest one attempt may run, enforced by the broker (pure policy).

Theory of operation
-------------------
A job enqueued with ``timeout_ms`` (``JobOptions.timeout_ms``) limits each attempt: the worker
cancels its handler ``timeout_ms`` after it received the job and reports the failure, and the
broker fails the attempt itself at the **attempt deadline**, ``started_at + timeout_ms +
TIMEOUT_GRACE_MS``, if no outcome came by then (a hung worker, a handler thread that cannot be
cancelled, a worker that does not know the option). The grace lets the worker's own report,
which left at the timeout, arrive first: it carries the handler's traceback, and the worker's
``on_failed`` callbacks fire only for an outcome the broker accepted.

The attempt deadline is independent of the lease: extending a lease never moves it, and a
lease may expire before it (then the attempt fails as "lease expired", as always). Both live in
the core's one lease heap (``CoreState.leases``, ``(time, token, job)``, lazy deletion): a lease
entry is filed at ``first_due`` (the earlier of the two), and ``tick`` re-files an entry popped
before the lease's (extended) deadline and the attempt deadline at the earlier of those. So
``next_deadline`` wakes the server's one timer for timeouts too, at no extra cost for jobs
without one.

Invariant: a live lease has an entry in the heap at a time no later than
``first_due(job.lease_deadline, job)``.
"""

from __future__ import annotations

from typing import Final

from broker.jobs import Job

TIMEOUT_GRACE_MS: Final = 1_000
"""How long after a job's timeout the broker waits for the worker's own report."""


def attempt_deadline(job: Job) -> int | None:
    """When the broker fails the active ``job``'s attempt for its timeout, or ``None`` (no
    timeout). Counts from the reservation (``started_at``), not from a lease extension."""
    timeout_ms = job.options.timeout_ms
    if timeout_ms is None or job.started_at is None:
        return None
    return job.started_at + timeout_ms + TIMEOUT_GRACE_MS


def first_due(lease_deadline: int, job: Job) -> int:
    """The earlier of the lease deadline and the attempt deadline: when ``tick`` must look."""
    deadline = attempt_deadline(job)
    return lease_deadline if deadline is None or lease_deadline < deadline else deadline


def timed_out(job: Job, now: int) -> bool:
    """Whether ``job``'s attempt ends by its timeout at ``now`` (its attempt deadline passed
    and came no later than its lease deadline: a lease that ran out first is a lease expiry)."""
    deadline = attempt_deadline(job)
    return (deadline is not None and deadline <= now
            and (job.lease_deadline is None or deadline <= job.lease_deadline))


def timeout_error(job: Job) -> str:
    """The error recorded for an attempt the broker failed for its timeout."""
    return f"timed out after {job.options.timeout_ms} ms (job timeout; the worker did not report)"
