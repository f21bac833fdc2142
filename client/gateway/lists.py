"""The list routes: a queue's jobs by state (``list_jobs``, SPEC §8.19), the connected workers
(``workers``, §8.24), and who holds an active job's lease.

Lease holders: ``get`` (§8.8, JobInfo ``owner`` §9.6) names the worker holding an active job's
lease, and ``GET /api/jobs/{id}`` shows it. Only with an older broker, whose ``get`` lacks
``owner``, does the gateway fall back to reading the first ``HOLDER_SCAN`` active jobs of the
queue (``list_jobs`` gives each one's ``conn``) and naming the holder with what ``workers`` says
of that connection; past that many active jobs ``lease_holder`` is then ``null``
(``lease_holder_known`` false).
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from client.gateway.errors import bad_argument
from client.gateway.params import query_int, queue_param, require_queue
from client.gateway.present import decode, jsonable
from client.gateway.state import gateway_of
from client.queue import Client
from client.serializers import Serializer
from protocol.checks import MAX_LIST_LIMIT
from protocol.model import JobState
from protocol.replies import JobInfo

DEFAULT_PAGE: Final = 50
HOLDER_SCAN: Final = 1000
STATES: Final = tuple(state.value for state in JobState)


def info_view(info: JobInfo, serializer_name: str, serializer: Serializer,
              holder: int | None = None) -> dict[str, Any]:
    """A ``JobInfo`` (times already in ms) as the REST API shows a job."""
    data, data_encoding = decode(info.payload, serializer_name, serializer)
    result, result_encoding = decode(info.result, serializer_name, serializer)
    return {
        "id": info.id, "queue": info.queue, "name": info.name, "state": info.state.value,
        "priority": info.priority, "attempts": info.attempts, "max_attempts": info.max_attempts,
        "data": data, "data_encoding": data_encoding, "progress": jsonable(info.progress),
        "result": result, "result_encoding": result_encoding, "error": info.error,
        "created_at": info.created_at, "run_at": info.run_at, "started_at": info.started_at,
        "finished_at": info.finished_at, "lease_deadline": info.lease_deadline,
        "timeout_ms": info.timeout_ms, "conn": holder,
    }


async def list_jobs(request: Request) -> Response:
    """``GET /api/queues/{queue}/jobs?state=&offset=&limit=``: a page of the queue's jobs in one
    or more states (``state`` repeated or comma-separated), each state in its own order."""
    gateway = gateway_of(request)
    client = await gateway.ready()
    name = queue_param(request)
    states: list[str] = []
    for text in request.query_params.getlist("state"):
        states += [part for part in text.split(",") if part]
    if not states:
        raise bad_argument("state", f"one or more of {', '.join(STATES)}")
    for index, state in enumerate(states):
        if state not in STATES:
            raise bad_argument(f"state[{index}]", f"one of {', '.join(STATES)}")
    if len(set(states)) != len(states):
        raise bad_argument("state", "distinct states")
    offset = query_int(request, "offset", 0, 0, 2**31 - 1)
    limit = query_int(request, "limit", DEFAULT_PAGE, 1, MAX_LIST_LIMIT)
    await require_queue(client, name)
    page = await client.queue(name).jobs(states, offset=offset, limit=limit)
    views = [info_view(info, gateway.serializer_name, gateway.serializer,
                       page.holders.get(info.id)) for info in page.jobs]
    following = offset + len(views)
    return JSONResponse({
        "queue": name, "states": states, "jobs": views, "total": page.total, "offset": offset,
        "limit": limit, "next_offset": following if following < page.total else None,
    })


async def list_workers(request: Request) -> Response:
    """``GET /api/workers?all=true``: the connected workers (every connection with ``all``)."""
    client = await gateway_of(request).ready()
    flag = request.query_params.get("all", "false").lower()
    if flag not in ("true", "false", "1", "0"):
        raise bad_argument("all", "true or false")
    workers = await client.workers(include_all=flag in ("true", "1"))
    return JSONResponse({"workers": [jsonable(w) for w in workers], "total": len(workers)})


async def lease_holder(client: Client, queue: str, job_id: str) -> dict[str, Any] | None:
    """The worker holding active job ``job_id`` of ``queue`` for an older broker (whose ``get``
    lacks ``owner``), when found among the first ``HOLDER_SCAN`` active jobs (see the module's
    docstring); ``None`` otherwise."""
    page = await client.queue(queue).jobs("active", limit=HOLDER_SCAN)
    conn = page.holders.get(job_id)
    if conn is None:
        return None
    for worker in await client.workers(include_all=True):
        if worker.get("conn") == conn:
            return {"conn": conn, "client": worker.get("client"), "host": worker.get("host")}
    return {"conn": conn, "client": None, "host": None}
