"""The route table: each REST route declared once, with what the OpenAPI document says of it.

``API_ROUTES`` feeds both the router (``client.gateway.app``) and ``/openapi.json``
(``openapi_document``), so a route cannot exist without being documented. Units in bodies:
**milliseconds** for every duration, Unix milliseconds for times.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

import client.gateway.api as api
import client.gateway.flow as flow
import client.gateway.lists as lists
import client.gateway.sse as sse

Endpoint = Callable[[Request], Awaitable[Response]]

_MS = {"type": "integer", "minimum": 0, "description": "milliseconds"}
_RETENTION = {
    "description": "true: remove at once; false: keep; n: keep the newest n; or {count, age (ms)}",
    "oneOf": [{"type": "boolean"}, {"type": "integer", "minimum": 0},
              {"type": "object", "properties": {"count": {"type": "integer"}, "age": _MS},
               "additionalProperties": False}],
}
SCHEMAS: Final[dict[str, Any]] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string", "description": "the wire protocol's error code "
                     "(BAD_ARGUMENT, NOT_FOUND, ...) or BROKER_UNAVAILABLE / METHOD_NOT_ALLOWED"},
            "message": {"type": "string"}}}},
    },
    "Queue": {"type": "object", "properties": {
        "name": {"type": "string"},
        **{s: {"type": "integer"} for s in ("waiting", "delayed", "active", "completed",
                                            "failed", "total_completed", "total_failed")},
        "paused": {"type": "boolean"},
        "oldest_waiting_ms": {"type": ["integer", "null"]},
    }},
    "JobOptions": {
        "type": "object", "additionalProperties": False,
        "description": "As the Python client's options, but every duration in MILLISECONDS.",
        "properties": {
            "priority": {"type": "integer", "description": "lower runs first; default 0"},
            "delay": _MS,
            "run_at": {"type": "integer", "description": "Unix milliseconds"},
            "attempts": {"type": "integer", "minimum": 1},
            "backoff": {"description": "ms (exponential from that base) or {type, delay, max, "
                        "jitter} with delay and max in ms",
                        "oneOf": [_MS, {"type": "object", "properties": {
                            "type": {"enum": ["exponential", "fixed"]}, "delay": _MS, "max": _MS,
                            "jitter": {"type": "number", "minimum": 0, "maximum": 1}}}]},
            "job_id": {"type": "string", "description": "idempotency key: an existing id "
                       "returns the stored job (duplicate: true, HTTP 200)"},
            "lease": {**_MS, "minimum": 100},
            "timeout": {"type": "integer", "minimum": 1, "maximum": 604_800_000,
                        "description": "milliseconds one attempt may run (1 ms..7 days): the "
                        "worker cancels the handler, the broker fails the attempt if no outcome "
                        "came"},
            "remove_on_complete": _RETENTION,
            "remove_on_fail": _RETENTION,
        },
    },
    "NewJob": {"type": "object", "required": ["name"], "additionalProperties": False,
               "properties": {"name": {"type": "string"}, "data": {},
                              "opts": {"$ref": "#/components/schemas/JobOptions"}}},
    "AddedJob": {"type": "object", "properties": {
        "id": {"type": "string"}, "queue": {"type": "string"}, "name": {"type": "string"},
        "state": {"type": ["string", "null"]}, "duplicate": {"type": "boolean"}}},
    "Job": {"type": "object", "properties": {
        **{k: {"type": "string"} for k in ("id", "queue", "name", "state")},
        **{k: {"type": "integer"} for k in ("priority", "attempts", "max_attempts")},
        "data": {}, "result": {}, "progress": {},
        "data_encoding": {"enum": ["msgpack", "json", "text", "base64", None]},
        "result_encoding": {"enum": ["msgpack", "json", "text", "base64", None]},
        "error": {"type": ["string", "null"]},
        **{k: {"type": ["integer", "null"], "description": "Unix milliseconds"}
           for k in ("created_at", "run_at", "started_at", "finished_at", "lease_deadline")},
        "conn": {"type": ["integer", "null"], "description": "in lists of active jobs: the "
                 "broker connection id holding the lease (as in GET /api/workers)"},
        "lease_holder": {"type": ["object", "null"], "description": "GET /api/jobs/{id} of an "
                         "active job: {conn, client, host} of the worker holding its lease"},
        "lease_holder_known": {"type": "boolean", "description": "false when the job is active "
                               "but its holder is unknown (an older broker, and the job not "
                               "among the queue's first 1,000 active jobs)"},
        "timeout_ms": {"type": ["integer", "null"], "description": "the job's timeout (one "
                       "attempt's longest run), null when it has none"},
    }},
    "Limits": {"type": "object", "description": "a queue's flow control (SPEC §8.18), enforced "
               "by the broker across every worker", "properties": {
        "queue": {"type": "string"},
        "rate": {"type": ["object", "null"], "description": "at most max jobs start in any "
                 "window of per ms; null: no rate limit", "properties": {
                     "max": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
                     "per": {**_MS, "minimum": 1, "maximum": 2_678_400_000}}},
        "concurrency": {"type": ["integer", "null"], "minimum": 1, "maximum": 1_000_000,
                        "description": "at most this many active at once; null: no limit"},
        "paused_until": {"type": ["integer", "null"], "description": "a \"not now\" pause "
                         "(a worker's RateLimited) runs until this Unix ms; null: none"},
        "rate_free_at": {"type": ["integer", "null"], "description": "the rate window is "
                         "full: the next job may start at this Unix ms; null: one may now"}}},
    "SchedulerRule": {
        "type": "object", "additionalProperties": False,
        "description": "exactly one of every and cron; the template: name (default: the key), "
        "data, opts (as a job's, without job_id, delay, run_at)",
        "properties": {
            "every": {**_MS, "minimum": 1, "maximum": 31_622_400_000},
            "cron": {"type": "string", "description": "5 fields, or 6 with seconds first; "
                     "@daily, @hourly, ..."},
            "tz": {"type": "string", "description": "IANA time zone of cron (default UTC)"},
            "start": {"type": "integer", "description": "no run before (Unix ms)"},
            "end": {"type": "integer", "description": "no run after (Unix ms)"},
            "limit": {"type": "integer", "minimum": 1, "description": "at most this many runs"},
            "name": {"type": "string"}, "data": {},
            "opts": {"$ref": "#/components/schemas/JobOptions"}}},
    "Scheduler": {"type": "object", "properties": {
        **{k: {"type": "string"} for k in ("queue", "key", "name")},
        "data": {}, "data_encoding": {"enum": ["msgpack", "json", "text", "base64", None]},
        "every": {"type": ["integer", "null"], "description": "milliseconds"},
        "cron": {"type": ["string", "null"]}, "tz": {"type": ["string", "null"]},
        **{k: {"type": ["integer", "null"], "description": "Unix milliseconds"}
           for k in ("start", "end")},
        "limit": {"type": ["integer", "null"]},
        "count": {"type": "integer", "description": "runs made so far"},
        "next_run": {"type": ["integer", "null"], "description": "Unix ms of the next run (its "
                     "job exists, delayed); null: no more runs"},
        "opts": {"type": "object", "description": "each run's job options (ms)"}}},
    "Worker": {"type": "object", "properties": {
        "conn": {"type": "integer"}, "client": {"type": "string"}, "host": {"type": "string"},
        "queues": {"type": "array", "items": {"type": "string"}},
        **{k: {"type": "integer"} for k in ("held", "completed", "failed")},
        **{k: {"type": "integer", "description": "Unix milliseconds"}
           for k in ("connected_at", "last_seen")}}},
    "Event": {"type": "object", "description": "one SSE message's data (event: the kind, id: the "
              "seq); SPEC §9.8 with times in Unix ms", "properties": {
        "seq": {"type": "integer"}, "kind": {"type": "string"},
        "time": {"type": "integer", "description": "Unix milliseconds"},
        **{k: {"type": ["string", "null"]} for k in ("queue", "job_id", "name")},
        "dropped": {"type": ["integer", "null"], "description": "lagged: events lost (null: "
                    "unknown)"}}},
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


@dataclass(frozen=True, slots=True)
class ApiRoute:
    """One route: where, what runs, and what the OpenAPI document says."""

    method: str
    path: str
    endpoint: Endpoint
    summary: str
    response: dict[str, Any]
    errors: tuple[int, ...] = ()
    body: dict[str, Any] | None = None
    body_required: bool = False
    query: tuple[tuple[str, str, str], ...] = ()
    """``(name, type, description)`` of each query parameter."""
    status: int = 200
    media_type: str = "application/json"


_OBJ = {"type": "object"}
API_ROUTES: Final[tuple[ApiRoute, ...]] = (
    ApiRoute("GET", "/api/queues", api.list_queues, "Every queue with its counts, and the broker",
             {"type": "object", "properties": {"queues": {"type": "array", "items": ref("Queue")},
                                               "broker": _OBJ}}),
    ApiRoute("GET", "/api/queues/{queue}", api.get_queue, "One queue's counts", ref("Queue"),
             (404,)),
    ApiRoute("POST", "/api/queues/{queue}/jobs", api.add_jobs,
             "Add one job, or a batch {\"jobs\": [...]} (durations in ms)",
             {"oneOf": [{"type": "object", "properties": {"job": ref("AddedJob")}},
                        {"type": "object", "properties": {
                            "jobs": {"type": "array", "items": ref("AddedJob")}}}]},
             (400, 413, 429, 503),
             body={"oneOf": [ref("NewJob"), {"type": "object", "required": ["jobs"],
                                             "properties": {"jobs": {"type": "array",
                                                                     "items": ref("NewJob")}}}]},
             body_required=True, status=201),
    ApiRoute("GET", "/api/queues/{queue}/failed", api.list_failed,
             "Failed jobs, newest failure first, a page at a time",
             {"type": "object", "properties": {
                 "jobs": {"type": "array", "items": ref("Job")}, "total": {"type": "integer"},
                 "offset": {"type": "integer"}, "limit": {"type": "integer"},
                 "next_offset": {"type": ["integer", "null"]}}},
             (400, 404), query=(("offset", "integer", "first job to list (default 0)"),
                                ("limit", "integer", "jobs per page, 1..1000 (default 50)"))),
    ApiRoute("GET", "/api/queues/{queue}/jobs", lists.list_jobs,
             "A page of the queue's jobs in one or more states, each in its own order "
             "(waiting: run order; delayed: due time; active: lease deadline, with conn; "
             "completed, failed: newest first)",
             {"type": "object", "properties": {
                 "jobs": {"type": "array", "items": ref("Job")}, "total": {"type": "integer"},
                 "states": {"type": "array", "items": {"type": "string"}},
                 "offset": {"type": "integer"}, "limit": {"type": "integer"},
                 "next_offset": {"type": ["integer", "null"]}}},
             (400, 404), query=(
                 ("state", "string", "waiting, delayed, active, completed or failed; repeat it "
                  "or separate with commas for several (listed one after the other)"),
                 ("offset", "integer", "first job to list (default 0)"),
                 ("limit", "integer", "jobs per page, 1..1000 (default 50)"))),
    ApiRoute("POST", "/api/queues/{queue}/retry", api.retry_failed,
             "Move failed jobs back to waiting: all, the given ids, or up to limit",
             {"type": "object", "properties": {"retried": {"type": "integer"}}}, (400, 404, 409),
             body={"type": "object", "properties": {
                 "ids": {"type": "array", "items": {"type": "string"}},
                 "limit": {"type": "integer", "minimum": 1}}}),
    ApiRoute("POST", "/api/queues/{queue}/pause", api.pause_queue,
             "Stop handing out the queue's jobs",
             {"type": "object", "properties": {"name": {"type": "string"},
                                               "paused": {"type": "boolean"}}}, (404,)),
    ApiRoute("POST", "/api/queues/{queue}/resume", api.resume_queue,
             "Hand out the queue's jobs again",
             {"type": "object", "properties": {"name": {"type": "string"},
                                               "paused": {"type": "boolean"}}}, (404,)),
    ApiRoute("POST", "/api/queues/{queue}/clean", api.clean_queue,
             "Delete jobs of one state older than older_than ms (oldest first)",
             {"type": "object", "properties": {"removed": {"type": "integer"}}}, (400, 404),
             body={"type": "object", "required": ["state"], "properties": {
                 "state": {"enum": ["waiting", "delayed", "completed", "failed"]},
                 "older_than": _MS, "limit": {"type": "integer", "minimum": 1}}},
             body_required=True),
    ApiRoute("GET", "/api/queues/{queue}/limits", flow.get_limits,
             "The queue's rate and concurrency limits and its \"not now\" pause",
             ref("Limits"), (404,)),
    ApiRoute("PUT", "/api/queues/{queue}/limits", flow.set_limits,
             "Set the rate limit ({max, per ms}) and/or the concurrency limit; a field left out "
             "is unchanged, null clears it (creates the queue if new)", ref("Limits"), (400, 413),
             body={"type": "object", "additionalProperties": False, "properties": {
                 "rate": {"type": ["object", "null"], "properties": {
                     "max": {"type": "integer"}, "per": _MS}, "required": ["max", "per"]},
                 "concurrency": {"type": ["integer", "null"], "minimum": 1}}},
             body_required=True),
    ApiRoute("DELETE", "/api/queues/{queue}/limits", flow.clear_limits,
             "Remove the queue's rate and concurrency limits", ref("Limits"), (404,)),
    ApiRoute("GET", "/api/queues/{queue}/schedulers", flow.list_schedulers,
             "The queue's repeatable jobs (job schedulers) by key, each with its next run",
             {"type": "object", "properties": {
                 "schedulers": {"type": "array", "items": ref("Scheduler")},
                 "total": {"type": "integer"}}}, (404,)),
    ApiRoute("PUT", "/api/queues/{queue}/schedulers/{key}", flow.upsert_scheduler,
             "Create (201) or update (200) the scheduler key: every ms or cron + tz; the same "
             "definition again changes nothing",
             {"type": "object", "properties": {"scheduler": ref("Scheduler"),
                                               "created": {"type": "boolean"},
                                               "changed": {"type": "boolean"}}},
             (400, 413), body=ref("SchedulerRule"), body_required=True),
    ApiRoute("DELETE", "/api/queues/{queue}/schedulers/{key}", flow.remove_scheduler,
             "Delete the scheduler and its pending run's job if still delayed",
             {"type": "object", "properties": {"queue": {"type": "string"},
                                               "key": {"type": "string"},
                                               "removed": {"type": "boolean"}}}, (400, 404)),
    ApiRoute("GET", "/api/jobs/{job_id}", api.get_job, "One job: data, result, error, times",
             ref("Job"), (404,)),
    ApiRoute("DELETE", "/api/jobs/{job_id}", api.remove_job,
             "Delete a job in any state (an active job's lease is revoked)",
             {"type": "object", "properties": {"id": {"type": "string"},
                                               "removed": {"type": "boolean"},
                                               "state": {"type": "string"}}}, (404,)),
    ApiRoute("GET", "/api/workers", lists.list_workers,
             "The connected workers, oldest connection first",
             {"type": "object", "properties": {
                 "workers": {"type": "array", "items": ref("Worker")},
                 "total": {"type": "integer"}}},
             (400,), query=(("all", "boolean", "true: every connection, not only workers"),)),
    ApiRoute("GET", "/api/events", sse.events,
             "Job events as Server-Sent Events (event: kind, id: seq, data: JSON), as the "
             "broker commits them; a lagged event says how many were lost",
             {"type": "string", "description": "text/event-stream; each data line is an Event"},
             (400, 429, 503), query=(
                 ("queue", "string", "a queue to follow; repeat for several (default: all)"),
                 ("kind", "string", "an event kind to follow; repeat for several (default: "
                  "all)")),
             media_type="text/event-stream"),
    ApiRoute("GET", "/metrics", api.metrics, "Prometheus exposition text",
             {"type": "string"}, media_type="text/plain; version=0.0.4"),
)

_PARAM = re.compile(r"{(\w+)}")


def openapi_document(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``API_ROUTES`` (and of itself)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in API_ROUTES:
        params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                  for name in _PARAM.findall(route.path)]
        params += [{"name": name, "in": "query", "required": name == "state",
                    "description": text, "schema": {"type": kind}}
                   for name, kind, text in route.query]
        responses: dict[str, Any] = {str(route.status): {
            "description": "success",
            "content": {route.media_type: {"schema": route.response}},
        }}
        for status in (401, *route.errors):
            responses[str(status)] = {"description": "error",
                                      "content": {"application/json": {"schema": ref("Error")}}}
        operation: dict[str, Any] = {"summary": route.summary, "parameters": params,
                                     "responses": responses, "security": [{"bearer": []}]}
        if route.body is not None:
            operation["requestBody"] = {"required": route.body_required,
                                        "content": {"application/json": {"schema": route.body}}}
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    paths["/openapi.json"] = {"get": {"summary": "This document", "security": [],
                                      "responses": {"200": {"description": "OpenAPI 3.1"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "jobwire HTTP gateway", "version": version,
                 "description": "REST access to a jobwire broker. Every duration in a body is in "
                 "MILLISECONDS; times are Unix milliseconds. Errors: {\"error\": {\"code\", "
                 "\"message\"}} with the wire protocol's codes."},
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "required when the gateway has a token"}}},
    }
