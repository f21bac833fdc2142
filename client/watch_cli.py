"""How ``jobwire events``, ``jobwire workers`` and the rate columns of ``jobwire stats`` show
what they get (the commands themselves are in ``client.cli``): one line per job event, the
workers table's rows, and rates and durations from the ``metrics`` op."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any, Final

from client.watch import JobEvent

RATE_HEADERS: Final = ["ADDED/S", "DONE/S", "WAIT P50", "WAIT P99", "RUN P50", "RUN P99"]
WORKER_HEADERS: Final = ["CLIENT", "HOST", "QUEUES", "HELD", "COMPLETED", "FAILED",
                         "CONNECTED", "LAST SEEN"]


def event_line(event: JobEvent) -> str:
    """One readable line: time (UTC, ms), seq, kind, queue, job and what the kind adds."""
    stamp = datetime.fromtimestamp(event.time, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    job = f"{event.job_id} ({event.name})" if event.job_id is not None else "-"
    extra = dict(event.fields)
    if extra.get("state") == "waiting":
        extra.pop("run_at", None)  # runs now: its run time says nothing
    if isinstance(extra.get("run_at"), int):
        extra["run_at"] = _clock(extra["run_at"]).replace(" ", "T")
    if event.kind == "completed":
        extra["result"] = event.result
    details = " ".join(f"{key}={_short(value)}" for key, value in extra.items()
                       if value is not None)
    return f"{stamp}  #{event.seq}  {event.kind:<13} {event.queue or '-'}  {job}  {details}"\
        .rstrip()


def event_json(event: JobEvent) -> str:
    """One JSON line (bytes as ``{"base64": ...}``; the result decoded)."""
    body = {"seq": event.seq, "kind": event.kind, "time": event.time, "queue": event.queue,
            "job_id": event.job_id, "name": event.name, **event.fields}
    if event.kind == "completed":
        body["result"] = event.result
    return json.dumps(plain(body), default=repr)


def worker_row(worker: dict[str, Any]) -> list[Any]:
    return [worker["client"] or "-", worker["host"], ",".join(worker["queues"]) or "-",
            worker["held"], worker["completed"], worker["failed"],
            _clock(worker["connected_at"]), _clock(worker["last_seen"])]


def rate_columns(metrics: dict[str, Any] | None, uptime_ms: int) -> list[str]:
    """``jobwire stats``'s extra cells for one queue: jobs added and completed per second over
    the last minute, and the p50/p99 of waiting and processing times."""
    if metrics is None:
        return ["-"] * len(RATE_HEADERS)
    window = max(1.0, min(60.0, uptime_ms / 1000))
    return [
        f"{metrics['added']['last_minute'] / window:.1f}",
        f"{metrics['completed']['last_minute'] / window:.1f}",
        _duration(metrics["wait_ms"]["p50"]), _duration(metrics["wait_ms"]["p99"]),
        _duration(metrics["processing_ms"]["p50"]), _duration(metrics["processing_ms"]["p99"]),
    ]


def plain(value: Any) -> Any:
    """``value`` with bytes as ``{"base64": ...}``, for JSON."""
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.0f}ms" if ms < 1_000 else f"{ms / 1000:.1f}s"


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(plain(value), default=repr)
    return text if len(text) <= limit else text[: limit - 1] + "…"
