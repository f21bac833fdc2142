"""JSON views of what the broker says: queues and jobs, as the REST API returns them.

Times are Unix **milliseconds** (the broker's own unit). A job's ``data`` and ``result`` are
opaque bytes to the broker; the gateway decodes them for people and programs: first with its own
serializer (msgpack unless configured otherwise), then msgpack, JSON, UTF-8 text, and finally
base64. ``data_encoding`` / ``result_encoding`` say which one worked. Values JSON cannot carry
(bytes inside msgpack, non-string map keys) are shown as ``{"$base64": ...}`` and as strings.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

from client.job import JobRecord
from client.serializers import JSON, MSGPACK, Serializer
from protocol.replies import QueueStats

_FALLBACKS: tuple[tuple[str, Serializer], ...] = (("msgpack", MSGPACK), ("json", JSON))


def queue_view(name: str, stats: QueueStats) -> dict[str, Any]:
    """One queue: its name, counts by state, paused flag and totals."""
    return {"name": name, **stats.to_wire()}


def job_view(job: JobRecord, raw_payload: bytes | None, raw_result: bytes | None,
             serializer_name: str, serializer: Serializer) -> dict[str, Any]:
    """Everything the broker knows about one job, decoded for JSON."""
    data, data_encoding = decode(raw_payload, serializer_name, serializer)
    result, result_encoding = decode(raw_result, serializer_name, serializer)
    return {
        "id": job.id,
        "queue": job.queue,
        "name": job.name,
        "state": None if job.state is None else job.state.value,
        "priority": job.priority,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "data": data,
        "data_encoding": data_encoding,
        "progress": jsonable(job.progress),
        "result": result,
        "result_encoding": result_encoding,
        "error": job.error,
        "created_at": to_ms(job.created_at),
        "run_at": to_ms(job.run_at),
        "started_at": to_ms(job.started_at),
        "finished_at": to_ms(job.finished_at),
        "lease_deadline": to_ms(job.lease_deadline),
        "timeout_ms": to_ms(job.timeout),
    }


def to_ms(seconds: float | None) -> int | None:
    """The client's seconds back to the broker's whole milliseconds."""
    return None if seconds is None else round(seconds * 1000)


def decode(raw: bytes | None, preferred_name: str, preferred: Serializer) -> tuple[Any, str | None]:
    """Decode opaque bytes for display; returns ``(value, encoding)``."""
    if raw is None:
        return None, None
    attempts = ((preferred_name, preferred), *(f for f in _FALLBACKS if f[0] != preferred_name))
    for name, serializer in attempts:
        if name == "raw":
            continue
        try:
            value = serializer.loads(raw)
        except Exception:  # any decoder failure means "not this encoding"
            continue
        if name == "msgpack" and isinstance(value, bytes):
            break  # a msgpack bin alone says nothing more than the bytes do
        return jsonable(value), name
    try:
        return raw.decode("utf-8"), "text"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def jsonable(value: Any) -> Any:
    """``value`` with whatever JSON cannot carry turned into something it can."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return repr(value)
