"""One handler per operation: a parsed request in, a core call, the reply body out.

A handler takes ``(broker, conn, request_id, request, now)``. ``broker`` is the ``OpContext``:
what every handler may use (the core, the committer, the parked requests, whether the broker is
draining); ``conn`` is the connection the request came on, seen only as ``Conn``. The handler
returns the reply body, which ``handle`` sends at once or only after the commit, as the op's
declaration in ``protocol.operations`` says (``after_commit``); or ``None`` when it answered or
parked the request itself. A ``CoreError`` it raises becomes an ERROR reply at once. Every
declared operation but ``hello`` (the session's handshake) has a handler; importing this module
checks that.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice
from typing import Any, Final, Protocol, TypeVar

from broker.committer import GroupCommitter
from broker.core import Core, CoreError
from broker.core_worker import OK_COMPLETED
from broker.longpoll import ParkedReserve, Parking, Waiter
from broker.observe import EventSink, Observation
from broker.replysize import CONN_KEY_SIZE, fit_job_infos, fit_stats, job_info, reserve_budget
from broker.schedule import Rule
from broker.workers import WorkerInfo
from protocol.errors import ErrorCode
from protocol.model import JobState
from protocol.observing import (
    METRICS,
    SUBSCRIBE,
    UNSUBSCRIBE,
    WORKERS,
    Metrics,
    Subscribe,
    Unsubscribe,
    Workers,
)
from protocol.operations import (
    ACK,
    CANCEL,
    CLEAN,
    ENQUEUE,
    EXTEND,
    FAIL,
    GET,
    HELLO,
    LIMIT,
    LIST_FAILED,
    LIST_JOBS,
    OBLITERATE,
    OPERATIONS,
    PAUSE,
    PING,
    PROGRESS,
    RELEASE,
    RESERVE,
    RESUME,
    RETRY_FAILED,
    STATS,
    TIME,
    WAIT,
    Ack,
    Cancel,
    Clean,
    Enqueue,
    Extend,
    Fail,
    Get,
    Limit,
    ListFailed,
    ListJobs,
    Obliterate,
    Operation,
    Pause,
    Progress,
    Release,
    Reserve,
    Resume,
    RetryFailed,
    Stats,
    Time,
    Wait,
)
from protocol.replies import OK, ReservedJob
from protocol.scheduling import (
    SCHEDULE_LIST,
    SCHEDULE_REMOVE,
    SCHEDULE_UPSERT,
    ScheduleList,
    ScheduleRemove,
    ScheduleUpsert,
)

_FINISHED: Final = frozenset({JobState.COMPLETED, JobState.FAILED})
_READ_NOT_DURABLE: Final = (
    "the job's state is not durable yet: the journal could not commit it; ask again"
)

Body = dict[str, Any]


class Conn(Waiter, EventSink, Protocol):
    """What a handler needs of the connection a request came on."""

    worker: WorkerInfo | None
    """What the ``workers`` op shows of this connection (set once it is accepted)."""

    def reply(self, request_id: int, body: Body) -> None:
        """Send a reply now."""

    def error(self, request_id: int, code: ErrorCode, text: str) -> None:
        """Send an ERROR reply now."""

    def begin(self) -> None:
        """Count one more request that will be answered later."""

    def reply_after_commit(self, request_id: int, body: Body, not_durable: str = ...) -> None:
        """Send ``body`` once everything the core changed so far is committed (else
        ``JOURNAL_FAILURE`` with the text ``not_durable``)."""

    def error_after_commit(self, request_id: int, code: ErrorCode, text: str) -> None:
        """Send an error once everything the core changed so far is committed."""


class OpContext:
    """What the handlers may use of the broker.

    Args:
        core: the state machine.
        committer: the group committer of the core's changes.
        max_frame: the broker's frame cap (replies are cut to fit it).
        output_budget: unsent reply bytes a connection may have (a reservation stays within it).
        max_parked: most parked reserve/wait requests in the broker.
        max_parked_per_connection: most parked reserve/wait requests on one connection.
        clock: wall-clock milliseconds (for reservations made when a parked reserve wakes).
        broker_stats: the broker-wide figures of a ``stats`` reply, given ``now``.
        observe: job events, metrics and the workers table.
        connections: how many connections are open.
    """

    __slots__ = ("_budget", "broker_stats", "clock", "committer", "connections", "core",
                 "draining", "max_frame", "observe", "output_budget", "parking")

    def __init__(
        self,
        core: Core,
        committer: GroupCommitter,
        *,
        max_frame: int,
        output_budget: int,
        max_parked: int,
        max_parked_per_connection: int,
        clock: Callable[[], int],
        broker_stats: Callable[[int], Body],
        observe: Observation,
        connections: Callable[[], int],
    ) -> None:
        self.core = core
        self.observe = observe
        self.connections = connections
        self.committer = committer
        self.max_frame = max_frame
        self.output_budget = output_budget
        self.clock = clock
        self.broker_stats = broker_stats
        self.draining = False
        """Set once shutdown starts: enqueues get ``DRAINING``, reserves get nothing."""
        self.parking = Parking(self._reserve_parked, max_parked, max_parked_per_connection)
        self._budget = reserve_budget(max_frame)

    def reserve(self, conn: Waiter, request: Reserve, now: int) -> list[ReservedJob]:
        """Lease jobs to a connection: the one route to ``Core.reserve``.

        The reply stays within ``max_frame`` and within the connection's output budget (at least
        one job is always handed out: a parked reserve woken while its connection's replies are
        unread adds one job at most). Journaled, but the reply does not wait: a reservation lost
        in a crash only leaves the job waiting with the attempt uncounted (docs/internals.md).
        """
        room = min(self._budget, self.output_budget - conn.unsent_bytes)
        jobs: list[ReservedJob] = self.core.reserve(
            request.queues, request.max_jobs, request.lease_ms, conn.conn_id, now, room
        )
        if jobs:
            self.committer.wake()
        return jobs

    def _reserve_parked(self, parked: ParkedReserve) -> list[ReservedJob]:
        return self.reserve(parked.session, parked.request, self.clock())


Handler = Callable[[OpContext, Conn, int, Any, int], Body | None]
HANDLERS: Final[dict[str, Handler]] = {}
"""Every handler by op name."""
_H = TypeVar("_H", bound=Callable[..., Body | None])


def handles(operation: Operation[Any, Any]) -> Callable[[_H], _H]:
    """Register the decorated function as the handler of ``operation``."""

    def register(handler: _H) -> _H:
        HANDLERS[operation.name] = handler
        return handler

    return register


@handles(PING)
def ping(broker: OpContext, conn: Conn, request_id: int, request: Any, now: int) -> Body:
    return {"now": now}


@handles(TIME)
def time(broker: OpContext, conn: Conn, request_id: int, request: Time, now: int) -> Body:
    return {"now": now}


@handles(ENQUEUE)
def enqueue(broker: OpContext, conn: Conn, request_id: int, request: Enqueue, now: int) -> Body:
    if broker.draining:
        raise CoreError(ErrorCode.DRAINING, "the broker is shutting down")
    return broker.core.enqueue(request.queue, request.jobs, now).to_wire()


@handles(RESERVE)
def reserve(
    broker: OpContext, conn: Conn, request_id: int, request: Reserve, now: int
) -> Body | None:
    if conn.worker is not None:
        conn.worker.asked(request.queues, now)
    if broker.draining:
        return {"jobs": ()}
    jobs = broker.reserve(conn, request, now)
    if jobs or request.wait_ms == 0:
        return {"jobs": jobs or ()}
    refusal = broker.parking.refusal(conn)
    if refusal is not None:
        raise CoreError(ErrorCode.OVERLOADED, refusal)
    conn.begin()
    broker.parking.park_reserve(conn, request_id, request)
    return None


@handles(ACK)
def ack(broker: OpContext, conn: Conn, request_id: int, request: Ack, now: int) -> Body:
    results = broker.core.ack(request.items, now)
    if conn.worker is not None:
        conn.worker.completed += results.count(OK_COMPLETED)  # by identity first: cheap
    return {"results": results}


@handles(FAIL)
def fail(broker: OpContext, conn: Conn, request_id: int, request: Fail, now: int) -> Body:
    results = broker.core.fail(request.items, now)
    if conn.worker is not None:
        conn.worker.failed += sum(1 for result in results if result.code == OK)
    return {"results": results}


@handles(EXTEND)
def extend(broker: OpContext, conn: Conn, request_id: int, request: Extend, now: int) -> Body:
    return {"results": broker.core.extend(request.items, now)}


@handles(RELEASE)
def release(broker: OpContext, conn: Conn, request_id: int, request: Release, now: int) -> Body:
    return {"results": broker.core.release(request.items, now)}


@handles(PROGRESS)
def progress(broker: OpContext, conn: Conn, request_id: int, request: Progress, now: int) -> Body:
    broker.core.progress(request.job_id, request.token, request.progress, now)
    return {}


def reply_job(
    broker: OpContext, conn: Conn, request_id: int, job_id: str, queue: str | None, missing: str,
    *, woken: bool = False,
) -> None:
    """Answer ``get``/``wait`` with the job as it is now, once that state is durable.

    The core may hold changes that are not committed yet (an ack whose transaction is running,
    or a batch held back by a journal fault): a state read now could be reverted by a crash. So
    the answer leaves after the transaction holding every change made so far commits; if that
    transaction fails, the caller gets ``JOURNAL_FAILURE`` and asks again. ``missing`` is the
    ``NOT_FOUND`` text when there is no such job; ``queue`` is the job's queue if known.
    ``woken``: a parked ``wait`` answered because its job finished (its ``queue`` is known),
    which gets the final state of a job deleted as it finished (retention keeping none) rather
    than ``NOT_FOUND``.
    """
    try:
        info = broker.core.get(job_id, queue)
    except CoreError as exc:  # AMBIGUOUS_ID: answered after the commit like every other answer
        conn.error_after_commit(request_id, exc.code, exc.message)
        return
    if info is None and woken and queue is not None:
        info = broker.core.final_info(job_id, queue)
    if info is None:
        conn.error_after_commit(request_id, ErrorCode.NOT_FOUND, missing)
    else:
        if info.owner is not None:  # the core knows the connection id; the table its name
            info = info._replace(owner=broker.observe.workers.owner(info.owner["conn"]))
        conn.reply_after_commit(request_id, {"job": info.to_wire()}, _READ_NOT_DURABLE)


@handles(GET)
def get(broker: OpContext, conn: Conn, request_id: int, request: Get, now: int) -> None:
    reply_job(broker, conn, request_id, request.job_id, request.queue, _missing(request.job_id))


def _missing(job_id: str) -> str:
    return f"no job {job_id!r}"


@handles(WAIT)
def wait(broker: OpContext, conn: Conn, request_id: int, request: Wait, now: int) -> None:
    info = broker.core.get(request.job_id, request.queue)
    if info is None or info.state in _FINISHED or request.timeout_ms == 0:
        reply_job(broker, conn, request_id, request.job_id, request.queue,
                  _missing(request.job_id))
    elif (refusal := broker.parking.refusal(conn)) is not None:
        raise CoreError(ErrorCode.OVERLOADED, refusal)
    else:
        conn.begin()
        # Parked under (queue, id): another queue's job of the same id does not wake it.
        broker.parking.park_wait(conn, request_id, request._replace(queue=info.queue))


@handles(CANCEL)
def cancel(broker: OpContext, conn: Conn, request_id: int, request: Cancel, now: int) -> Body:
    return {"state": broker.core.cancel(request.job_id, now, request.queue)}


@handles(STATS)
def stats(broker: OpContext, conn: Conn, request_id: int, request: Stats, now: int) -> Body:
    if request.queue is not None:
        queues, total = broker.core.stats(request.queue, now), 1
    else:
        queues, total = broker.core.stats_page(request.offset, request.limit, now)
        fit = fit_stats(list(queues), broker.max_frame)  # "total" tells there is more
        if fit < len(queues):
            queues = dict(islice(queues.items(), fit))
    return {
        "queues": {name: queue.to_wire() for name, queue in queues.items()},
        "total": total,
        "broker": broker.broker_stats(now),
    }


@handles(LIST_JOBS)
def list_jobs(broker: OpContext, conn: Conn, request_id: int, request: ListJobs, now: int) -> Body:
    jobs, total = broker.core.list_jobs(request.queue, request.states, request.offset,
                                        request.limit, now)
    infos = fit_job_infos([job_info(job) for job in jobs], broker.max_frame, CONN_KEY_SIZE)
    listed = []
    for job, info in zip(jobs, infos, strict=False):  # the frame may have cut the page short
        wire = info.to_wire()
        if job.owner is not None:
            wire["conn"] = job.owner
        listed.append(wire)
    return {"jobs": listed, "total": total}


@handles(PAUSE)
def pause(broker: OpContext, conn: Conn, request_id: int, request: Pause, now: int) -> Body:
    broker.core.pause(request.queue, now, request.for_ms)
    return {}


@handles(RESUME)
def resume(broker: OpContext, conn: Conn, request_id: int, request: Resume, now: int) -> Body:
    broker.core.resume(request.queue, now)
    return {}


@handles(LIMIT)
def limit(broker: OpContext, conn: Conn, request_id: int, request: Limit, now: int) -> Body:
    limits = broker.core.limit(request.queue, request.rate, request.concurrency, now)
    return {"limits": limits.to_wire()}


@handles(SCHEDULE_UPSERT)
def schedule_upsert(
    broker: OpContext, conn: Conn, request_id: int, request: ScheduleUpsert, now: int
) -> Body:
    rule = Rule(request.every_ms, request.cron, request.tz, request.start_ms, request.end_ms,
                request.limit, now)
    info, created, changed = broker.core.schedules.upsert(
        request.queue, request.key, request.job, rule, now)
    return {"scheduler": info.to_wire(), "created": created, "changed": changed}


@handles(SCHEDULE_REMOVE)
def schedule_remove(
    broker: OpContext, conn: Conn, request_id: int, request: ScheduleRemove, now: int
) -> Body:
    return {"removed": broker.core.schedules.remove(request.queue, request.key, now)}


@handles(SCHEDULE_LIST)
def schedule_list(
    broker: OpContext, conn: Conn, request_id: int, request: ScheduleList, now: int
) -> Body:
    found, total = broker.core.schedules.list(request.queue, request.offset, request.limit)
    budget = broker.max_frame - 4096  # the page is cut to fit the frame: the client pages on
    items: list[dict[str, Any]] = []
    for info in found:
        budget -= 600 + len(info.job.payload) + 4 * (len(info.key) + len(info.queue)
                                                     + len(info.job.name) + len(info.cron or ""))
        if budget < 0 and items:
            break
        items.append(info.to_wire())
    return {"schedulers": items, "total": total}


@handles(CLEAN)
def clean(broker: OpContext, conn: Conn, request_id: int, request: Clean, now: int) -> Body:
    removed = broker.core.clean(
        request.queue, request.state, request.older_than_ms, request.limit, now
    )
    return {"removed": removed}


@handles(LIST_FAILED)
def list_failed(
    broker: OpContext, conn: Conn, request_id: int, request: ListFailed, now: int
) -> Body:
    jobs, total = broker.core.list_failed(request.queue, request.limit, request.offset)
    jobs = fit_job_infos(jobs, broker.max_frame)  # "total" tells there is more
    return {"jobs": [info.to_wire() for info in jobs], "total": total}


@handles(RETRY_FAILED)
def retry_failed(
    broker: OpContext, conn: Conn, request_id: int, request: RetryFailed, now: int
) -> Body:
    retried, not_failed = broker.core.retry_failed(
        request.queue, request.job_ids, request.limit, now
    )
    return {"retried": retried, "not_failed": not_failed}


@handles(OBLITERATE)
def obliterate(
    broker: OpContext, conn: Conn, request_id: int, request: Obliterate, now: int
) -> Body:
    return {"removed": broker.core.obliterate(request.queue, request.force, now)}


@handles(SUBSCRIBE)
def subscribe(
    broker: OpContext, conn: Conn, request_id: int, request: Subscribe, now: int
) -> Body:
    return broker.observe.subscribe(conn, request)


@handles(UNSUBSCRIBE)
def unsubscribe(
    broker: OpContext, conn: Conn, request_id: int, request: Unsubscribe, now: int
) -> Body:
    return broker.observe.unsubscribe(conn.conn_id, request.sub)


@handles(METRICS)
def metrics(broker: OpContext, conn: Conn, request_id: int, request: Metrics, now: int) -> Body:
    return broker.observe.metrics_body(request, now, broker.connections())


@handles(WORKERS)
def workers(broker: OpContext, conn: Conn, request_id: int, request: Workers, now: int) -> Body:
    return broker.observe.workers_body(request)


_UNHANDLED: Final = set(OPERATIONS) - set(HANDLERS) - {HELLO.name}
if _UNHANDLED:
    raise RuntimeError(f"operations without a handler in broker.ops: {sorted(_UNHANDLED)}")

DISPATCH: Final[dict[str, tuple[Handler, bool]]] = {
    name: (handler, OPERATIONS[name].after_commit) for name, handler in HANDLERS.items()
}
"""Each op's handler and whether its reply waits for the commit."""


def handle(broker: OpContext, conn: Conn, request_id: int, op: str, request: Any, now: int) -> None:
    """Run ``op``'s handler and answer: at once or after the commit, as the op is declared; a
    ``CoreError`` becomes an ERROR reply at once."""
    handler, after_commit = DISPATCH[op]
    try:
        body = handler(broker, conn, request_id, request, now)
    except CoreError as exc:
        conn.error(request_id, exc.code, exc.message)
        return
    if body is None:
        return
    if after_commit:
        conn.reply_after_commit(request_id, body)
    else:
        conn.reply(request_id, body)
