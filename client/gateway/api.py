"""The REST routes: one handler per route, each a thin translation to one client call.

Every handler waits for the broker connection (``503 BROKER_UNAVAILABLE`` if there is none),
checks its input (``400 BAD_ARGUMENT`` naming the field), calls the public Python client and
returns JSON. Client exceptions become JSON errors in ``client.gateway.app`` (one place). The
route table with each route's documentation is ``client.gateway.routes``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from client.gateway.bodies import SMALL_BODY, optional_object, parse_jobs, read_json
from client.gateway.errors import bad_argument
from client.gateway.lists import lease_holder
from client.gateway.metrics import CONTENT_TYPE, Snapshot, render
from client.gateway.params import job_param, query_int, queue_param, require_queue, unknown_queue
from client.gateway.present import job_view, queue_view
from client.gateway.state import gateway_of
from client.job import JobRecord
from client.serializers import RAW
from protocol.checks import MAX_BATCH, MAX_LIST_LIMIT, MAX_NAME_LEN
from protocol.model import CLEANABLE_STATES, JobState

DEFAULT_PAGE: Final = 50


async def list_queues(request: Request) -> Response:
    """``GET /api/queues``: every queue with its counts, and the broker's own numbers."""
    client = await gateway_of(request).ready()
    queues, broker = await asyncio.gather(client.stats(), client.broker_stats())
    return JSONResponse({
        "queues": [queue_view(name, queues[name]) for name in sorted(queues)],
        "broker": broker,
    })


async def get_queue(request: Request) -> Response:
    """``GET /api/queues/{queue}``: one queue's counts (404 if the broker does not know it)."""
    client = await gateway_of(request).ready()
    name = queue_param(request)
    stats = await client.stats()
    if name not in stats:
        raise unknown_queue(name)
    return JSONResponse(queue_view(name, stats[name]))


async def add_jobs(request: Request) -> Response:
    """``POST /api/queues/{queue}/jobs``: one job, or ``{"jobs": [...]}`` in one round trip."""
    gateway = gateway_of(request)
    client = await gateway.ready()
    name = queue_param(request)
    body = await read_json(request, gateway.max_frame)
    if body is None:
        raise bad_argument("body", 'a job {"name": ..., "data": ...} or {"jobs": [...]}')
    jobs, batch = parse_jobs(body, gateway.serializer, gateway.max_payload)
    queue = client.queue(name, serializer=RAW)
    if not batch:
        job = jobs[0]
        added = await queue.add(job.name, job.payload, **job.options)
        return JSONResponse({"job": added_view(added)}, status_code=200 if added.duplicate else 201)
    handles = await queue.add_bulk([(job.name, job.payload, job.options) for job in jobs])
    return JSONResponse({"jobs": [added_view(job) for job in handles]}, status_code=201)


def added_view(job: JobRecord) -> dict[str, Any]:
    """What an enqueue answers per job: its id, and whether it already existed."""
    state = None if job.state is None else job.state.value
    return {"id": job.id, "queue": job.queue, "name": job.name, "state": state,
            "duplicate": job.duplicate}


async def get_job(request: Request) -> Response:
    """``GET /api/jobs/{job_id}``: everything the broker knows about one job."""
    gateway = gateway_of(request)
    client = await gateway.ready()
    job = await client.get_job(job_param(request), serializer=RAW)
    view = job_view(job, job.data, job.result, gateway.serializer_name, gateway.serializer)
    view["lease_holder"] = None
    view["lease_holder_known"] = job.state != JobState.ACTIVE
    if job.state == JobState.ACTIVE:  # the scan is the fallback for a broker without ``owner``
        view["lease_holder"] = job.owner or await lease_holder(client, job.queue, job.id)
        view["lease_holder_known"] = view["lease_holder"] is not None
    return JSONResponse(view)


async def remove_job(request: Request) -> Response:
    """``DELETE /api/jobs/{job_id}``: delete a job in any state (an active job's lease is
    revoked)."""
    client = await gateway_of(request).ready()
    job_id = job_param(request)
    prior = await client.remove_job(job_id)
    return JSONResponse({"id": job_id, "removed": True, "state": prior.value})


async def list_failed(request: Request) -> Response:
    """``GET /api/queues/{queue}/failed?offset=&limit=``: failed jobs, newest failure first."""
    gateway = gateway_of(request)
    client = await gateway.ready()
    name = queue_param(request)
    offset = query_int(request, "offset", 0, 0, 2**31 - 1)
    limit = query_int(request, "limit", DEFAULT_PAGE, 1, MAX_LIST_LIMIT)
    await require_queue(client, name)
    jobs, total = await client.queue(name, serializer=RAW).failed_page(limit, offset)
    views = [job_view(job, job.data, job.result, gateway.serializer_name, gateway.serializer)
             for job in jobs]
    following = offset + len(views)
    return JSONResponse({
        "jobs": views, "total": total, "offset": offset, "limit": limit,
        "next_offset": following if following < total else None,
    })


async def retry_failed(request: Request) -> Response:
    """``POST /api/queues/{queue}/retry``: failed jobs back to waiting (all, ``ids``, or
    ``limit``)."""
    client = await gateway_of(request).ready()
    name = queue_param(request)
    body = optional_object(await read_json(request, SMALL_BODY))
    unknown = set(body) - {"ids", "limit"}
    if unknown:
        raise bad_argument(sorted(unknown)[0], "ids or limit (unknown field)")
    ids = body.get("ids")
    if ids is not None and (
        not isinstance(ids, list) or not 1 <= len(ids) <= MAX_BATCH
        or any(type(i) is not str or not 0 < len(i) <= MAX_NAME_LEN for i in ids)
    ):
        raise bad_argument("ids", f"an array of 1..{MAX_BATCH} job ids")
    limit = body.get("limit")
    if limit is not None and (type(limit) is not int or not 1 <= limit <= 2**31 - 1):
        raise bad_argument("limit", "an integer in 1..2147483647")
    await require_queue(client, name)
    retried = await client.queue(name).retry_failed(ids, limit=limit)
    return JSONResponse({"retried": retried})


async def pause_queue(request: Request) -> Response:
    """``POST /api/queues/{queue}/pause``: stop handing out the queue's jobs."""
    client = await gateway_of(request).ready()
    name = queue_param(request)
    await require_queue(client, name)
    await client.queue(name).pause()
    return JSONResponse({"name": name, "paused": True})


async def resume_queue(request: Request) -> Response:
    """``POST /api/queues/{queue}/resume``: hand out the queue's jobs again."""
    client = await gateway_of(request).ready()
    name = queue_param(request)
    await require_queue(client, name)
    await client.queue(name).resume()
    return JSONResponse({"name": name, "paused": False})


async def clean_queue(request: Request) -> Response:
    """``POST /api/queues/{queue}/clean``: delete jobs of one state older than ``older_than``
    ms."""
    client = await gateway_of(request).ready()
    name = queue_param(request)
    body = optional_object(await read_json(request, SMALL_BODY))
    unknown = set(body) - {"state", "older_than", "limit"}
    if unknown:
        raise bad_argument(sorted(unknown)[0], "state, older_than or limit (unknown field)")
    cleanable = sorted(state.value for state in CLEANABLE_STATES)
    state = body.get("state")
    if state not in cleanable:
        raise bad_argument("state", " or ".join(f'"{s}"' for s in cleanable))
    older_than = body.get("older_than", 0)
    if type(older_than) is not int or not 0 <= older_than <= 2**53:
        raise bad_argument("older_than", "an integer of milliseconds in 0..2^53")
    limit = body.get("limit")
    if limit is not None and (type(limit) is not int or not 1 <= limit <= 2**31 - 1):
        raise bad_argument("limit", "an integer in 1..2147483647")
    await require_queue(client, name)
    removed = await client.queue(name).clean(state, older_than=older_than / 1000, limit=limit)
    return JSONResponse({"removed": removed})


async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus exposition text from one ``stats`` request."""
    client = await gateway_of(request).ready()
    queues, broker, measured = await asyncio.gather(
        client.stats(), client.broker_stats(), client.metrics(buckets=True))
    return Response(render(Snapshot(queues, broker, measured)), media_type=CONTENT_TYPE)
