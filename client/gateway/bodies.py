"""Request bodies: read with a size cap, parse JSON, check every field before the broker sees it.

Units: every duration and time in an HTTP body is an integer number of **milliseconds** (``delay``,
``backoff``, ``lease``, ``timeout``, retention ``age``, ``older_than``; ``run_at`` is Unix
milliseconds), as in BullMQ and the JavaScript world. The Python client takes seconds; the
conversion happens here, once. Fields are checked against the protocol's limits
(``protocol.messages``), so a request the broker would refuse with ``BAD_ARGUMENT`` is refused
here with the same code and field path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from starlette.requests import ClientDisconnect, Request

from client.gateway.errors import GatewayError, bad_argument
from client.serializers import Serializer
from protocol.checks import (
    MAX_ATTEMPTS,
    MAX_BATCH,
    MAX_DELAY_MS,
    MAX_LEASE_MS,
    MAX_NAME_LEN,
    MAX_TIME_MS,
    MAX_TIMEOUT_MS,
    MIN_LEASE_MS,
    MIN_TIMEOUT_MS,
    PRIORITY_MAX,
    PRIORITY_MIN,
)
from protocol.errors import ErrorCode
from protocol.model import Backoff, BackoffKind, Retention

JOB_FIELDS: Final = frozenset({"name", "data", "opts"})
OPTION_FIELDS: Final = frozenset({
    "priority", "delay", "run_at", "attempts", "backoff", "job_id", "lease",
    "remove_on_complete", "remove_on_fail", "timeout",
})
SMALL_BODY: Final = 64 * 1024
"""Cap on the bodies of the admin routes (retry, clean): they carry ids and numbers only."""


async def read_json(request: Request, cap: int) -> Any:
    """The request's body parsed as JSON, or ``None`` when the body is empty.

    A ``Content-Length`` above ``cap`` is refused before any of the body is read; a body sent
    without one (chunked) is read only until it passes ``cap``.

    Raises:
        GatewayError: ``PAYLOAD_TOO_LARGE`` (413) past ``cap``; ``BAD_ARGUMENT`` (400) for a
            bad ``Content-Length`` or a body that is not JSON.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise bad_argument("Content-Length", "a decimal number of bytes")
        if int(declared) > cap:
            raise _too_large(int(declared), cap)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise _too_large(size, cap)
            chunks.append(chunk)
    except ClientDisconnect:  # nobody hears the answer; not a bug of ours either
        raise GatewayError(ErrorCode.BAD_ARGUMENT, "body: the client disconnected") from None
    if size == 0:
        return None
    try:
        return json.loads(b"".join(chunks), parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise GatewayError(ErrorCode.BAD_ARGUMENT, f"body: expected JSON ({exc})") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _too_large(size: int, cap: int) -> GatewayError:
    return GatewayError(
        ErrorCode.PAYLOAD_TOO_LARGE, f"body: {size} bytes, above this route's limit of {cap}"
    )


@dataclass(frozen=True, slots=True)
class JobRequest:
    """One job of a ``POST /api/queues/{queue}/jobs`` body, checked and converted."""

    name: str
    payload: bytes
    """``data`` encoded with the gateway's serializer (within the broker's ``max_payload``)."""
    options: dict[str, Any]
    """Options for ``Queue.add`` in the Python client's units (seconds)."""


def parse_jobs(
    body: Any, serializer: Serializer, max_payload: int
) -> tuple[list[JobRequest], bool]:
    """The jobs of an enqueue body: one job ``{"name", "data", "opts"}`` or ``{"jobs": [...]}``.

    Returns:
        The jobs, and whether the body was a batch.

    Raises:
        GatewayError: ``BAD_ARGUMENT`` naming the field; ``PAYLOAD_TOO_LARGE`` for a job whose
            encoded data is above ``max_payload``.
    """
    if not isinstance(body, dict):
        raise bad_argument("body", 'an object: {"name": ..., "data": ..., "opts": {...}} or '
                           '{"jobs": [...]}')
    if "jobs" in body:
        extra = set(body) - {"jobs"}
        if extra:
            raise bad_argument(sorted(extra)[0], 'nothing beside "jobs" in a batch')
        items = body["jobs"]
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            raise bad_argument("jobs", f"an array of 1..{MAX_BATCH} jobs")
        return [
            parse_job(item, f"jobs[{index}]", serializer, max_payload)
            for index, item in enumerate(items)
        ], True
    return [parse_job(body, "", serializer, max_payload)], False


def parse_job(item: Any, where: str, serializer: Serializer, max_payload: int) -> JobRequest:
    """Check one job object; ``where`` prefixes field paths (``"jobs[3]"``)."""
    prefix = f"{where}." if where else ""
    if not isinstance(item, dict):
        raise bad_argument(where or "body", "a job object")
    unknown = set(item) - JOB_FIELDS
    if unknown:
        raise bad_argument(f"{prefix}{sorted(unknown)[0]}",
                           f"one of {', '.join(sorted(JOB_FIELDS))} (unknown field)")
    name = item.get("name")
    if type(name) is not str or not 0 < len(name) <= MAX_NAME_LEN:
        raise bad_argument(f"{prefix}name", f"a string of 1..{MAX_NAME_LEN} characters")
    try:
        payload = serializer.dumps(item.get("data"))
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. msgpack's nesting limit
        raise bad_argument(f"{prefix}data", f"a value the serializer can encode ({exc})") from None
    if len(payload) > max_payload:
        raise GatewayError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"{prefix}data: {len(payload)} bytes encoded, above the broker's max_payload "
            f"of {max_payload}",
        )
    opts = item.get("opts")
    options = {} if opts is None else parse_options(opts, f"{prefix}opts")
    return JobRequest(name, payload, options)


def parse_options(opts: Any, where: str) -> dict[str, Any]:
    """HTTP job options (milliseconds) → ``Queue.add`` keyword options (seconds)."""
    if not isinstance(opts, dict):
        raise bad_argument(where, "an object of job options")
    unknown = set(opts) - OPTION_FIELDS
    if unknown:
        raise bad_argument(f"{where}.{sorted(unknown)[0]}",
                           f"one of {', '.join(sorted(OPTION_FIELDS))} (unknown option)")
    out: dict[str, Any] = {}
    for key, value in opts.items():
        if value is None:
            continue
        field = f"{where}.{key}"
        if key == "priority":
            out[key] = int_in(value, field, PRIORITY_MIN, PRIORITY_MAX)
        elif key == "delay":
            out[key] = int_in(value, field, 0, MAX_DELAY_MS, unit=" ms") / 1000
        elif key == "run_at":
            out[key] = int_in(value, field, 0, MAX_TIME_MS, unit=" (Unix ms)") / 1000
        elif key == "attempts":
            out[key] = int_in(value, field, 1, MAX_ATTEMPTS)
        elif key == "lease":
            out[key] = int_in(value, field, MIN_LEASE_MS, MAX_LEASE_MS, unit=" ms") / 1000
        elif key == "timeout":
            out[key] = int_in(value, field, MIN_TIMEOUT_MS, MAX_TIMEOUT_MS, unit=" ms") / 1000
        elif key == "job_id":
            if type(value) is not str or not 0 < len(value) <= MAX_NAME_LEN:
                raise bad_argument(field, f"a string of 1..{MAX_NAME_LEN} characters")
            out[key] = value
        elif key == "backoff":
            out[key] = parse_backoff(value, field)
        else:  # remove_on_complete, remove_on_fail
            out[key] = parse_retention(value, field)
    return out


def int_in(value: Any, field: str, low: int, high: int, *, unit: str = "") -> int:
    """``value`` if it is an integer (not a bool) in ``low..high``."""
    if type(value) is not int or not low <= value <= high:
        raise bad_argument(field, f"an integer in {low}..{high}{unit}")
    return value


def parse_backoff(value: Any, field: str) -> Backoff:
    """``1000`` (exponential from 1 s) or ``{"type", "delay", "max", "jitter"}``, in ms."""
    if type(value) is int:
        return Backoff(BackoffKind.EXPONENTIAL, int_in(value, field, 0, MAX_DELAY_MS, unit=" ms"))
    if not isinstance(value, dict):
        raise bad_argument(field, 'milliseconds, or {"type": "exponential"|"fixed", "delay": ms, '
                           '"max": ms, "jitter": 0..1}')
    unknown = set(value) - {"type", "delay", "max", "jitter"}
    if unknown:
        raise bad_argument(f"{field}.{sorted(unknown)[0]}", "one of type, delay, max, jitter")
    kind_name = value.get("type", "exponential")
    if kind_name not in ("exponential", "fixed"):
        raise bad_argument(f"{field}.type", '"exponential" or "fixed"')
    base = int_in(value.get("delay", 1000), f"{field}.delay", 0, MAX_DELAY_MS, unit=" ms")
    cap = value.get("max")
    if cap is not None:
        cap = int_in(cap, f"{field}.max", 0, MAX_DELAY_MS, unit=" ms")
    jitter = value.get("jitter", 0)
    if type(jitter) not in (int, float) or not 0 <= jitter <= 1:
        raise bad_argument(f"{field}.jitter", "a number in 0..1")
    return Backoff(BackoffKind(kind_name), base, cap, float(jitter))


def parse_retention(value: Any, field: str) -> Retention | bool | int:
    """``true`` (remove at once), ``false`` (keep), a count, or ``{"count", "age": ms}``."""
    if type(value) is bool:
        return value
    if type(value) is int:
        return int_in(value, field, 0, 2**31 - 1)
    if not isinstance(value, dict) or set(value) - {"count", "age"}:
        raise bad_argument(field, 'true, false, a count, or {"count": n, "age": ms}')
    count = value.get("count")
    age = value.get("age")
    return Retention(
        None if count is None else int_in(count, f"{field}.count", 0, 2**31 - 1),
        None if age is None else int_in(age, f"{field}.age", 0, MAX_DELAY_MS, unit=" ms"),
    )


def optional_object(body: Any, field: str = "body") -> Mapping[str, Any]:
    """An optional JSON object body (``{}`` when the body was empty)."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise bad_argument(field, "a JSON object")
    return body
