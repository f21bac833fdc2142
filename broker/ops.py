"""One handler per operation: a validated request in, a core call, a reply (now or after commit).

Each handler takes ``(session, request_id, request, now)``. Writes call the core, then
``session.reply_after_commit`` so the reply leaves only once the change is durable; reads and
``reserve`` reply at once (docs/internals.md says which is which). A ``CoreError`` raised here
is turned into an ERROR reply by the session. The reply bodies are listed in
``protocol/SPEC.md`` and at the top of ``broker/session.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from broker.replysize import fit_job_infos
from protocol.errors import ErrorCode
from protocol.messages import (
    Ack,
    Cancel,
    Clean,
    Enqueue,
    Extend,
    Fail,
    Get,
    JobState,
    ListFailed,
    Op,
    Pause,
    Progress,
    Release,
    Request,
    Reserve,
    Resume,
    RetryFailed,
    Stats,
    Wait,
)

if TYPE_CHECKING:
    from broker.session import Session

_FINISHED: Final = frozenset({JobState.COMPLETED, JobState.FAILED})



def ping(session: Session, request_id: int, request: Request, now: int) -> None:
    session.reply(request_id, {"now": now})


def enqueue(session: Session, request_id: int, request: Request, now: int) -> None:
    assert isinstance(request, Enqueue)
    if session.server.draining:
        session.error(request_id, ErrorCode.DRAINING, "the broker is shutting down")
        return
    result = session.server.core.enqueue(request.queue, request.jobs, now)
    # Duplicates wait too: the first enqueue of that id may not be committed yet.
    session.reply_after_commit(request_id, {"ids": result.ids, "duplicates": result.duplicates})


def reserve(session: Session, request_id: int, request: Request, now: int) -> None:
    assert isinstance(request, Reserve)
    if session.server.draining:
        session.reply(request_id, {"jobs": ()})
        return
    jobs = session.server.reserve_for(session, request, now)
    if jobs:
        session.reply(request_id, {"jobs": jobs})
    elif request.wait_ms > 0:
        refusal = session.server.parking_refusal(session)
        if refusal is not None:
            session.error(request_id, ErrorCode.OVERLOADED, refusal)
            return
        session.begin()
        session.server.park_reserve(session, request_id, request)
    else:
        session.reply(request_id, {"jobs": ()})


def ack(session: Session, request_id: int, request: Request, now: int) -> None:
    assert isinstance(request, Ack)
    outcomes = session.server.core.ack(request.items, now)
    session.reply_after_commit(request_id, {"results": outcomes})


def fail(session: Session, request_id: int, request: Request, now: int) -> None:
    assert isinstance(request, Fail)
    outcomes = session.server.core.fail(request.items, now)
    session.reply_after_commit(request_id, {"results": outcomes})


def extend(session: Session, request_id: int, request: Request, now: int) -> None:
    assert isinstance(request, Extend)
    outcomes = session.server.core.extend(request.items, now)
    session.reply_after_commit(request_id, {"results": outcomes})


def release(session: Session, request_id: int, request: Request, now: int) -> None:
    assert isinstance(request, Release)
    outcomes = session.server.core.release(request.items, now)
    session.reply_after_commit(request_id, {"results": outcomes})


def progress(session: Session, request_id: int, request: Request, now: int) -> None:
    assert isinstance(request, Progress)
    session.server.core.progress(request.job_id, request.token, request.progress, now)
    session.reply_after_commit(request_id, {})


def get(session: Session, request_id: int, request: Request, now: int) -> None:
    assert isinstance(request, Get)
    session.reply_job(request_id, request.job_id, f"no job {request.job_id!r}")


def wait(session: Session, request_id: int, request: Request, now: int) -> None:
    assert isinstance(request, Wait)
    info = session.server.core.get(request.job_id)
    if info is None or info.state in _FINISHED or request.timeout_ms == 0:
        session.reply_job(request_id, request.job_id, f"no job {request.job_id!r}")
    elif (refusal := session.server.parking_refusal(session)) is not None:
        session.error(request_id, ErrorCode.OVERLOADED, refusal)
    else:
        session.begin()
        session.server.park_wait(session, request_id, request)


def cancel(session: Session, request_id: int, request: Request, now: int) -> None:
    assert isinstance(request, Cancel)
    prior = session.server.core.cancel(request.job_id, now)
    session.reply_after_commit(request_id, {"state": prior})


def stats(session: Session, request_id: int, request: Request, now: int) -> None:
    assert isinstance(request, Stats)
    queues = session.server.core.stats(request.queue, now)
    session.reply(request_id, {
        "queues": {name: queue.to_wire() for name, queue in queues.items()},
        "broker": session.server.broker_stats(now),
    })


def pause(session: Session, request_id: int, request: Request, now: int) -> None:
    assert isinstance(request, Pause)
    session.server.core.pause(request.queue, now)
    session.reply_after_commit(request_id, {})


def resume(session: Session, request_id: int, request: Request, now: int) -> None:
    assert isinstance(request, Resume)
    session.server.core.resume(request.queue, now)
    session.reply_after_commit(request_id, {})


def clean(session: Session, request_id: int, request: Request, now: int) -> None:
    assert isinstance(request, Clean)
    removed = session.server.core.clean(
        request.queue, request.state, request.older_than_ms, request.limit, now
    )
    session.reply_after_commit(request_id, {"removed": removed})


def list_failed(session: Session, request_id: int, request: Request, now: int) -> None:
    assert isinstance(request, ListFailed)
    jobs, total = session.server.core.list_failed(request.queue, request.limit, request.offset)
    jobs = fit_job_infos(jobs, session.server.settings.max_frame)  # "total" tells there is more
    session.reply(request_id, {"jobs": [info.to_wire() for info in jobs], "total": total})


def retry_failed(session: Session, request_id: int, request: Request, now: int) -> None:
    assert isinstance(request, RetryFailed)
    retried, not_failed = session.server.core.retry_failed(
        request.queue, request.job_ids, request.limit, now
    )
    session.reply_after_commit(request_id, {"retried": retried, "not_failed": not_failed})


Handler = Callable[["Session", int, Request, int], None]
HANDLERS: Final[dict[str, Handler]] = {
    Op.PING: ping,
    Op.ENQUEUE: enqueue,
    Op.RESERVE: reserve,
    Op.ACK: ack,
    Op.FAIL: fail,
    Op.EXTEND: extend,
    Op.RELEASE: release,
    Op.PROGRESS: progress,
    Op.GET: get,
    Op.WAIT: wait,
    Op.CANCEL: cancel,
    Op.STATS: stats,
    Op.PAUSE: pause,
    Op.RESUME: resume,
    Op.CLEAN: clean,
    Op.LIST_FAILED: list_failed,
    Op.RETRY_FAILED: retry_failed,
}
"""Every operation but ``hello`` (the session handles the handshake itself)."""
