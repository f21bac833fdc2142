"""Flow control and repeatable jobs over REST: a queue's rate and concurrency limits
(``/api/queues/{queue}/limits``, SPEC §8.18) and its job schedulers
(``/api/queues/{queue}/schedulers[/{key}]``, SPEC §8.25-8.27).

As everywhere in the gateway, durations are **milliseconds** and times Unix milliseconds; the
conversion to the Python client's seconds happens here. Each handler is a thin translation to one
public client call (``Queue.limits``/``set_rate_limit``/``set_concurrency``/...,
``Queue.schedulers``/``upsert_scheduler``/``remove_scheduler``).
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from client.call import send
from client.gateway.bodies import (
    SMALL_BODY,
    int_in,
    optional_object,
    parse_options,
    read_json,
)
from client.gateway.errors import GatewayError, bad_argument
from client.gateway.params import queue_param, require_queue
from client.gateway.present import decode, to_ms
from client.gateway.state import gateway_of
from client.operations import QueueLimits
from client.schedules import NOT_IN_TEMPLATE, Scheduler
from client.serializers import RAW
from protocol.checks import (
    MAX_CONCURRENCY,
    MAX_COUNT,
    MAX_EVERY_MS,
    MAX_NAME_LEN,
    MAX_RATE,
    MAX_RATE_PERIOD_MS,
    MAX_SCHEDULE_KEY_LEN,
    MAX_TIME_MS,
    MIN_EVERY_MS,
    MIN_RATE_PERIOD_MS,
)
from protocol.errors import ErrorCode
from protocol.model import Backoff, JobSpec, Retention
from protocol.scheduling import MAX_CRON_LEN, MAX_TZ_LEN

LIMIT_FIELDS: Final = frozenset({"rate", "concurrency"})
SCHEDULER_FIELDS: Final = frozenset({
    "every", "cron", "tz", "start", "end", "limit", "name", "data", "opts",
})


def limits_view(name: str, limits: QueueLimits) -> dict[str, Any]:
    """A queue's flow control in ms: ``rate`` ``{max, per}`` or null, ``concurrency`` or null,
    ``paused_until`` (a "not now" pause, Unix ms) or null, ``rate_free_at`` (when a full rate
    window next lets a job start, Unix ms) or null."""
    rate = None
    if limits.rate_max is not None and limits.rate_period is not None:
        rate = {"max": limits.rate_max, "per": to_ms(limits.rate_period)}
    return {"queue": name, "rate": rate, "concurrency": limits.concurrency,
            "paused_until": to_ms(limits.paused_until), "rate_free_at": to_ms(limits.rate_free_at)}


async def get_limits(request: Request) -> Response:
    """``GET /api/queues/{queue}/limits``: the queue's rate and concurrency limits."""
    client = await gateway_of(request).ready()
    name = queue_param(request)
    await require_queue(client, name)
    return JSONResponse(limits_view(name, await client.queue(name).limits()))


async def set_limits(request: Request) -> Response:
    """``PUT /api/queues/{queue}/limits``: ``{"rate": {"max", "per"} | null, "concurrency": n |
    null}``; a field left out is unchanged, ``null`` clears it. Creates the queue if new."""
    client = await gateway_of(request).ready()
    name = queue_param(request)
    body = optional_object(await read_json(request, SMALL_BODY))
    unknown = set(body) - LIMIT_FIELDS
    if unknown:
        raise bad_argument(sorted(unknown)[0], "rate or concurrency (unknown field)")
    if not body:
        raise bad_argument("body", '{"rate": {"max": n, "per": ms} or null, "concurrency": n '
                           "or null}")
    rate: tuple[int, float] | bool | None = None
    if "rate" in body:
        rate = False if body["rate"] is None else parse_rate(body["rate"])
    concurrency: int | bool | None = None
    if "concurrency" in body:
        value = body["concurrency"]
        concurrency = False if value is None else int_in(value, "concurrency", 1,
                                                         MAX_CONCURRENCY)
    # One ``limit`` request for both fields: the broker applies them together or not at all
    # (two requests could leave the rate changed and the concurrency not, if the second failed).
    limits = await send(client.connection, client.queue(name).limit_call(rate, concurrency))
    return JSONResponse(limits_view(name, limits))


def parse_rate(value: Any) -> tuple[int, float]:
    """``{"max": n, "per": ms}`` → ``(max, seconds)``."""
    if not isinstance(value, dict) or set(value) != {"max", "per"}:
        raise bad_argument("rate", '{"max": n, "per": ms} or null (clears it)')
    most = int_in(value["max"], "rate.max", 1, MAX_RATE)
    per = int_in(value["per"], "rate.per", MIN_RATE_PERIOD_MS, MAX_RATE_PERIOD_MS, unit=" ms")
    return most, per / 1000


async def clear_limits(request: Request) -> Response:
    """``DELETE /api/queues/{queue}/limits``: remove both limits."""
    client = await gateway_of(request).ready()
    name = queue_param(request)
    await require_queue(client, name)
    limits = await send(client.connection, client.queue(name).limit_call(False, False))
    return JSONResponse(limits_view(name, limits))


def key_param(request: Request) -> str:
    key: str = request.path_params["key"]
    if not 0 < len(key) <= MAX_SCHEDULE_KEY_LEN:
        raise bad_argument("key", f"a scheduler key of 1..{MAX_SCHEDULE_KEY_LEN} characters")
    return key


def template_options(spec: JobSpec) -> dict[str, Any]:
    """A template's job options as a POST job body's ``opts`` (ms), without the unset ones."""
    opts: dict[str, Any] = {"priority": spec.priority, "attempts": spec.max_attempts,
                            "lease": spec.lease_ms, "timeout": spec.timeout_ms}
    if spec.backoff is not None:
        opts["backoff"] = backoff_view(spec.backoff)
    for key, kept in (("remove_on_complete", spec.keep_completed),
                      ("remove_on_fail", spec.keep_failed)):
        if kept is not None:
            opts[key] = retention_view(kept)
    return {key: value for key, value in opts.items() if value is not None}


def backoff_view(backoff: Backoff) -> dict[str, Any]:
    view = {"type": backoff.kind.value, "delay": backoff.base_ms, "max": backoff.cap_ms,
            "jitter": backoff.jitter}
    return {key: value for key, value in view.items() if value is not None}


def retention_view(kept: Retention) -> dict[str, Any]:
    return {key: value for key, value in (("count", kept.count), ("age", kept.age_ms))
            if value is not None}


def scheduler_view(scheduler: Scheduler, serializer_name: str, gateway_serializer: Any,
                   ) -> dict[str, Any]:
    """One scheduler in ms: its rule, its template and its next run."""
    data, encoding = decode(scheduler.job.payload, serializer_name, gateway_serializer)
    return {
        "queue": scheduler.queue, "key": scheduler.key, "name": scheduler.name,
        "data": data, "data_encoding": encoding,
        "every": to_ms(scheduler.every), "cron": scheduler.cron, "tz": scheduler.tz,
        "start": to_ms(scheduler.start), "end": to_ms(scheduler.end),
        "limit": scheduler.limit, "count": scheduler.count,
        "next_run": to_ms(scheduler.next_run), "opts": template_options(scheduler.job),
    }


async def list_schedulers(request: Request) -> Response:
    """``GET /api/queues/{queue}/schedulers``: the queue's schedulers by key, with next runs."""
    gateway = gateway_of(request)
    client = await gateway.ready()
    name = queue_param(request)
    await require_queue(client, name)
    found = await client.queue(name, serializer=RAW).schedulers()
    views = [scheduler_view(s, gateway.serializer_name, gateway.serializer) for s in found]
    return JSONResponse({"schedulers": views, "total": len(views)})


async def upsert_scheduler(request: Request) -> Response:
    """``PUT /api/queues/{queue}/schedulers/{key}``: create (201) or update (200) a scheduler."""
    gateway = gateway_of(request)
    client = await gateway.ready()
    name = queue_param(request)
    key = key_param(request)
    body = await read_json(request, gateway.max_frame)
    if not isinstance(body, dict):
        raise bad_argument("body", 'an object: {"every": ms} or {"cron": "...", "tz": "..."}, '
                           'with "name", "data", "opts", "start", "end", "limit"')
    unknown = set(body) - SCHEDULER_FIELDS
    if unknown:
        raise bad_argument(sorted(unknown)[0],
                           f"one of {', '.join(sorted(SCHEDULER_FIELDS))} (unknown field)")
    rule = parse_rule(body)
    job_name = body.get("name", key)
    if type(job_name) is not str or len(job_name) > MAX_NAME_LEN:
        raise bad_argument("name", f"a string of at most {MAX_NAME_LEN} characters")
    try:
        payload = gateway.serializer.dumps(body.get("data"))
    except (ValueError, TypeError, OverflowError) as exc:
        raise bad_argument("data", f"a value the serializer can encode ({exc})") from None
    if len(payload) > gateway.max_payload:
        raise GatewayError(ErrorCode.PAYLOAD_TOO_LARGE, f"data: {len(payload)} bytes encoded, "
                           f"above the broker's max_payload of {gateway.max_payload}")
    opts = body.get("opts")
    options = {} if opts is None else parse_options(opts, "opts")
    for refused in NOT_IN_TEMPLATE:
        if refused in options:
            raise bad_argument(f"opts.{refused}",
                               "no job_id, delay or run_at in a template (each run gets its own)")
    queue = client.queue(name, serializer=RAW)
    scheduler = await queue.upsert_scheduler(key, name=job_name, data=payload, **rule,
                                             **options)
    view = scheduler_view(scheduler, gateway.serializer_name, gateway.serializer)
    return JSONResponse({"scheduler": view, "created": scheduler.created,
                         "changed": scheduler.changed},
                        status_code=201 if scheduler.created else 200)


def parse_rule(body: dict[str, Any]) -> dict[str, Any]:
    """``every`` (ms) or ``cron`` + ``tz``, and ``start``/``end`` (Unix ms), ``limit``, as
    ``upsert_scheduler`` keywords (seconds)."""
    every, cron = body.get("every"), body.get("cron")
    if (every is None) == (cron is None):
        raise bad_argument("every", 'exactly one of "every" (ms) and "cron" (a pattern)')
    rule: dict[str, Any] = {}
    if every is not None:
        rule["every"] = int_in(every, "every", MIN_EVERY_MS, MAX_EVERY_MS, unit=" ms") / 1000
    else:
        rule["cron"] = short_text(cron, "cron", MAX_CRON_LEN)
    tz = body.get("tz")
    if tz is not None:
        if every is not None:
            raise bad_argument("tz", 'nothing with "every" (a time zone goes with "cron")')
        rule["tz"] = short_text(tz, "tz", MAX_TZ_LEN)
    for field in ("start", "end"):
        if body.get(field) is not None:
            rule[field] = int_in(body[field], field, 0, MAX_TIME_MS, unit=" (Unix ms)") / 1000
    if "start" in rule and "end" in rule and rule["end"] < rule["start"]:
        raise bad_argument("end", "a time at or after start")
    if body.get("limit") is not None:
        rule["limit"] = int_in(body["limit"], "limit", 1, MAX_COUNT)
    return rule


def short_text(value: Any, field: str, most: int) -> str:
    if type(value) is not str or not value.strip() or len(value) > most:
        raise bad_argument(field, f"a non-empty string of at most {most} characters")
    return value


async def remove_scheduler(request: Request) -> Response:
    """``DELETE /api/queues/{queue}/schedulers/{key}``: delete it (404 if there was none)."""
    client = await gateway_of(request).ready()
    name = queue_param(request)
    key = key_param(request)
    if not await client.queue(name).remove_scheduler(key):
        raise GatewayError(ErrorCode.NOT_FOUND, f"no scheduler {key!r} in queue {name!r}")
    return JSONResponse({"queue": name, "key": key, "removed": True})
