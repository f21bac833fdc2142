"""Repeatable jobs (job schedulers): the ``schedule_upsert``, ``schedule_remove`` and
``schedule_list`` operations and the scheduler record their replies carry. Sans-I/O.

Declared as ``protocol.operations`` declares the others; importing ``protocol.messages`` imports
this module, so they are in ``OPERATIONS`` wherever requests are parsed or built. The protocol
checks each field's type and range; the broker checks what needs the calendar (the cron pattern
and the time zone, ``broker/schedule``) and the template's payload against its cap, answering
``BAD_ARGUMENT`` naming the field either way. ``protocol/SPEC.md`` §8.25-8.27 is the contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from protocol.checks import (
    MAX_COUNT,
    MAX_EVERY_MS,
    MAX_LIST_LIMIT,
    MAX_SCHEDULE_KEY_LEN,
    MAX_TIME_MS,
    MIN_EVERY_MS,
    check_name,
    int_in,
    text,
)
from protocol.errors import ProtocolError, bad_argument
from protocol.model import JobSpec, job_to_wire, parse_job
from protocol.operations import Field, Operation, declare

MAX_CRON_LEN: Final = 200
MAX_TZ_LEN: Final = 64


def check_key(value: Any, field: str) -> str:
    """A scheduler key: a str of 1..``MAX_SCHEDULE_KEY_LEN`` characters."""
    if type(value) is not str or not 0 < len(value) <= MAX_SCHEDULE_KEY_LEN:
        raise bad_argument(field, f"str of 1..{MAX_SCHEDULE_KEY_LEN} characters")
    return value


def _nonempty(max_len: int) -> Any:
    plain = text(max_len)

    def check(value: Any, field: str) -> str:
        value = plain(value, field)
        if not value.strip():
            raise bad_argument(field, f"a non-empty str of at most {max_len} characters")
        return str(value)

    return check


def parse_template(value: Any, field: str) -> JobSpec:
    """The job template: an enqueue job array (``protocol/model.job_to_wire``) without an id, a
    delay or a run time (the broker gives each occurrence its id and run time)."""
    try:
        spec = parse_job(value, 0)
    except ProtocolError as exc:
        where = (exc.field or "jobs[0]").replace("jobs[0]", field, 1)
        raise ProtocolError(exc.code, exc.message.replace("jobs[0]", field, 1), where) from None
    for index, name in ((0, "id"), (4, "delay_ms"), (5, "run_at_ms")):
        if spec[index] is not None:
            raise bad_argument(f"{field}.{name}", "nil in a template (each run gets its own)")
    return spec


class ScheduleUpsert(NamedTuple):
    """Create or update the scheduler ``key`` of ``queue`` (idempotent: the same definition
    again changes nothing). Exactly one of ``every_ms`` and ``cron``."""

    queue: str
    key: str
    job: JobSpec
    every_ms: int | None = None
    cron: str | None = None
    tz: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    limit: int | None = None


class SchedulerInfo(NamedTuple):
    """A scheduler as the broker holds it (times in Unix ms).

    Attributes:
        next_run_at: the next occurrence (its job exists, delayed until then), or ``None`` when
            the scheduler has no more (past ``end_ms``, or ``limit`` reached).
        count: occurrences made so far (counted against ``limit``).
        created_at: when the scheduler was first upserted.
    """

    queue: str
    key: str
    job: JobSpec
    every_ms: int | None
    cron: str | None
    tz: str | None
    start_ms: int | None
    end_ms: int | None
    limit: int | None
    count: int  # type: ignore[assignment]  # shadows tuple.count; the wire name wins
    next_run_at: int | None
    created_at: int

    def to_wire(self) -> dict[str, Any]:
        return {"queue": self.queue, "key": self.key, "job": job_to_wire(self.job),
                "every_ms": self.every_ms, "cron": self.cron, "tz": self.tz,
                "start_ms": self.start_ms, "end_ms": self.end_ms, "limit": self.limit,
                "count": self.count, "next_run_at": self.next_run_at,
                "created_at": self.created_at}

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> SchedulerInfo:
        """The client's reading of a scheduler map (the broker is trusted)."""
        return cls(raw["queue"], raw["key"], parse_job(_tuples(raw["job"]), 0), raw.get("every_ms"),
                   raw.get("cron"), raw.get("tz"), raw.get("start_ms"), raw.get("end_ms"),
                   raw.get("limit"), int(raw.get("count", 0)), raw.get("next_run_at"),
                   int(raw.get("created_at", 0)))


def _tuples(value: Any) -> Any:
    """Arrays as tuples, as the strict decoder gives them (``parse_job`` expects those)."""
    if isinstance(value, list | tuple):
        return tuple(_tuples(item) for item in value)
    return value


class Upserted(NamedTuple):
    scheduler: SchedulerInfo
    created: bool
    """The key was new."""
    changed: bool
    """The definition differed from the stored one (a new key is changed too)."""


def parse_upserted(body: Mapping[str, Any]) -> Upserted:
    return Upserted(SchedulerInfo.from_wire(body["scheduler"]), bool(body["created"]),
                    bool(body["changed"]))


def _template_to_wire(job: JobSpec) -> Any:
    return job_to_wire(job)


SCHEDULE_UPSERT: Final[Operation[ScheduleUpsert, Upserted]] = declare(Operation(
    "schedule_upsert", ScheduleUpsert,
    (Field("queue", check_name), Field("key", check_key),
     Field("job", parse_template, to_wire=_template_to_wire),
     Field("every_ms", int_in(MIN_EVERY_MS, MAX_EVERY_MS), None),
     Field("cron", _nonempty(MAX_CRON_LEN), None),
     Field("tz", _nonempty(MAX_TZ_LEN), None),
     Field("start_ms", int_in(0, MAX_TIME_MS), None),
     Field("end_ms", int_in(0, MAX_TIME_MS), None),
     Field("limit", int_in(1, MAX_COUNT), None)),
    reply=parse_upserted,
    after_commit=True,
))
"""Reply: ``{scheduler: Scheduler map, created: bool, changed: bool}``."""


class ScheduleRemove(NamedTuple):
    queue: str
    key: str


def parse_removed_scheduler(body: Mapping[str, Any]) -> bool:
    return bool(body["removed"])


SCHEDULE_REMOVE: Final[Operation[ScheduleRemove, bool]] = declare(Operation(
    "schedule_remove", ScheduleRemove, (Field("queue", check_name), Field("key", check_key)),
    reply=parse_removed_scheduler,
    after_commit=True,
))
"""Reply: ``{removed: bool}`` (false: no such scheduler)."""


class ScheduleList(NamedTuple):
    queue: str | None = None
    offset: int = 0
    limit: int = MAX_LIST_LIMIT


class SchedulerPage(NamedTuple):
    schedulers: list[SchedulerInfo]
    total: int


def parse_scheduler_page(body: Mapping[str, Any]) -> SchedulerPage:
    items = [SchedulerInfo.from_wire(raw) for raw in body["schedulers"]]
    return SchedulerPage(items, int(body.get("total", len(items))))


SCHEDULE_LIST: Final[Operation[ScheduleList, SchedulerPage]] = declare(Operation(
    "schedule_list", ScheduleList,
    (Field("queue", check_name, None), Field("offset", int_in(0, MAX_COUNT), 0),
     Field("limit", int_in(1, MAX_LIST_LIMIT), MAX_LIST_LIMIT)),
    reply=parse_scheduler_page,
    after_commit=True,
))
"""Reply: ``{schedulers: [Scheduler map], total: int}``: ordered by ``(queue, key)``, from the
``offset``-th, at most ``limit``; answered after the commit, so a listed scheduler and its
next run are durable."""
