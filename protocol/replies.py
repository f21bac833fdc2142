"""The values replies carry, each with its parser on the client's side. Sans-I/O.

The broker builds each reply body from these values (``to_wire`` where the form is a map); the
client parses the body back with the ``parse_*`` function beside the value, which the op's
declaration in ``protocol.operations`` names as its ``reply``. The client trusts the broker's
shapes (it checks only what it indexes) and ignores what a later protocol version appends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from protocol.checks import check_enum
from protocol.errors import bad_argument
from protocol.model import JobState, new_tuple

OK: Final = "OK"
"""The code of a successful per-item outcome."""


def parse_now(body: Mapping[str, Any]) -> int:
    """The broker's clock (Unix ms) in a ``ping`` reply."""
    return int(body.get("now", 0))


# --------------------------------------------------------------------------- writes


class EnqueueResult(NamedTuple):
    """An ``enqueue`` reply. Wire form: ``{ids: [str], duplicates: [index]}``."""

    ids: tuple[str, ...]
    duplicates: tuple[int, ...]
    """Indexes (into the batch) of jobs whose id already existed: nothing was created for them."""

    def to_wire(self) -> dict[str, Any]:
        return {"ids": self.ids, "duplicates": self.duplicates}


def parse_enqueued(body: Mapping[str, Any]) -> EnqueueResult:
    """The ids and duplicate indexes of an ``enqueue`` reply body."""
    ids, duplicates = body.get("ids"), body.get("duplicates", ())
    if type(ids) is not tuple or type(duplicates) is not tuple:
        raise bad_argument("ids", "array")
    return EnqueueResult(ids, duplicates)


class Outcome(NamedTuple):
    """The result of one batch item: ``code`` is ``"OK"`` or an error code.

    On success ``value`` is op-specific (the job's new state, or the new lease deadline); on
    error it is the message. Wire form: ``[code, value]``.
    """

    code: str
    value: Any

    @property
    def ok(self) -> bool:
        return self.code == OK


def parse_outcomes(body: Mapping[str, Any]) -> list[Outcome]:
    """The per-item outcomes of an ``ack``, ``fail``, ``extend`` or ``release`` reply body."""
    results = body.get("results")
    if type(results) is not tuple:
        raise bad_argument("results", "array")
    out = []
    for i, raw in enumerate(results):
        if type(raw) is not tuple or len(raw) != 2 or type(raw[0]) is not str:
            raise bad_argument(f"results[{i}]", "[code, value]")
        out.append(new_tuple(Outcome, raw))
    return out


def parse_state(body: Mapping[str, Any]) -> JobState:
    """The state a cancelled job was in."""
    return JobState(body["state"])


def parse_removed(body: Mapping[str, Any]) -> int:
    """How many jobs a ``clean`` removed."""
    return int(body["removed"])


class Retried(NamedTuple):
    retried: int
    not_failed: list[str]
    """Given ids that were not failed jobs of the queue."""


def parse_retried(body: Mapping[str, Any]) -> Retried:
    """The outcome of a ``retry_failed``."""
    return Retried(int(body["retried"]), list(body.get("not_failed") or ()))


# --------------------------------------------------------------------------- reserve


class ReservedJob(NamedTuple):
    """One job handed out by ``reserve``. Wire form: an array of these items in this order."""

    job_id: str
    queue: str
    name: str
    payload: bytes
    attempt: int
    """1 for the first delivery, 2 for the first retry, ..."""
    max_attempts: int
    token: int
    lease_ms: int
    lease_deadline_ms: int
    created_at_ms: int
    progress: Any = None
    timeout_ms: int | None = None
    """The job's timeout: the longest this attempt may run (``SPEC.md`` §11.9), or ``None``.
    A broker older than this item sends 11 items; the parser reads that as ``None``."""


def parse_reserved(body: Mapping[str, Any]) -> list[ReservedJob]:
    """The jobs of a ``reserve`` reply body.

    Items a later protocol version appends to a job's array are ignored (``SPEC.md`` §9.4).

    Raises:
        ProtocolError: ``BAD_ARGUMENT`` if the body is not shaped as SPEC.md says.
    """
    jobs = body.get("jobs")
    if type(jobs) is not tuple:
        raise bad_argument("jobs", "array")
    out = []
    for i, raw in enumerate(jobs):
        if type(raw) is not tuple or len(raw) < 11:
            raise bad_argument(f"jobs[{i}]", "array of at least 11 items")
        out.append(new_tuple(ReservedJob, raw if len(raw) == 12 else (*raw, None)[:12]))
    return out


# --------------------------------------------------------------------------- descriptions


JOB_INFO_FIELDS: Final = (
    "id", "queue", "name", "state", "priority", "attempts", "max_attempts", "payload",
    "progress", "result", "error", "created_at", "run_at", "started_at", "finished_at",
    "lease_deadline",
)
JOB_INFO_OPTIONAL: Final = ("owner", "timeout_ms")
"""Keys a newer broker adds to a ``JobInfo`` map (absent from an older broker's: ``None``)."""


class JobInfo(NamedTuple):
    """A job as ``get``, ``wait`` and ``list_failed`` describe it.

    Wire form: a map with these keys (``JOB_INFO_FIELDS``).
    """

    id: str
    queue: str
    name: str
    state: JobState
    priority: int
    attempts: int
    max_attempts: int
    payload: bytes
    progress: Any
    result: bytes | None
    error: str | None
    created_at: int
    run_at: int
    started_at: int | None
    finished_at: int | None
    lease_deadline: int | None
    owner: Mapping[str, Any] | None = None
    """The worker holding an active job's lease, ``{conn, client, host}`` as the ``workers``
    op shows it (``get`` and ``wait`` only; ``None`` otherwise, or from an older broker)."""
    timeout_ms: int | None = None
    """The job's timeout (one attempt's longest run), or ``None`` when it has none."""

    def to_wire(self) -> dict[str, Any]:
        wire = dict(zip(JOB_INFO_FIELDS, self, strict=False))
        wire["timeout_ms"] = self.timeout_ms
        if self.owner is not None:
            wire["owner"] = dict(self.owner)
        return wire

    @classmethod
    def from_wire(cls, body: Any) -> JobInfo:
        if not isinstance(body, Mapping):
            raise bad_argument("job", "map")
        try:
            values = [body[key] for key in JOB_INFO_FIELDS]
        except KeyError as exc:
            raise bad_argument(f"job.{exc.args[0]}", "present") from None
        values[3] = check_enum(JobState, values[3], "job.state")
        owner = body.get("owner")
        if owner is not None and not isinstance(owner, Mapping):
            raise bad_argument("job.owner", "map or nil")
        return cls._make([*values, owner, body.get("timeout_ms")])


QUEUE_STATS_FIELDS: Final = (
    "waiting", "delayed", "active", "completed", "failed", "paused", "oldest_waiting_ms",
    "total_completed", "total_failed",
)


class QueueStats(NamedTuple):
    """One queue's counters. Wire form: a map with these keys."""

    waiting: int
    delayed: int
    active: int
    completed: int
    failed: int
    paused: bool
    oldest_waiting_ms: int | None
    """Age of the oldest waiting job, or ``None`` when none waits."""
    total_completed: int
    """Completions since the queue was created (survives retention pruning and restarts)."""
    total_failed: int

    def to_wire(self) -> dict[str, Any]:
        return dict(zip(QUEUE_STATS_FIELDS, self, strict=True))

    @classmethod
    def from_wire(cls, body: Any) -> QueueStats:
        if not isinstance(body, Mapping):
            raise bad_argument("queue stats", "map")
        try:
            return cls(*(body[key] for key in QUEUE_STATS_FIELDS))
        except KeyError as exc:
            raise bad_argument(f"stats.{exc.args[0]}", "present") from None


def parse_job_info(body: Mapping[str, Any]) -> JobInfo:
    """The job of a ``get`` or ``wait`` reply body."""
    return JobInfo.from_wire(body.get("job"))


class FailedPage(NamedTuple):
    jobs: list[JobInfo]
    total: int
    """Failed jobs in the queue; more than ``len(jobs)`` when the page or the frame cut it."""


def parse_failed_page(body: Mapping[str, Any]) -> FailedPage:
    """The jobs and total of a ``list_failed`` reply."""
    jobs = [JobInfo.from_wire(raw) for raw in body["jobs"]]
    return FailedPage(jobs, int(body.get("total", len(jobs))))


class JobPage(NamedTuple):
    """A ``list_jobs`` reply."""

    jobs: list[JobInfo]
    total: int
    """Jobs of the queue in the states asked for; more than ``len(jobs)`` when paged."""
    holders: dict[str, int]
    """The connection id holding each active job of the page, by job id."""


def parse_job_page(body: Mapping[str, Any]) -> JobPage:
    """The jobs, total and lease holders of a ``list_jobs`` reply."""
    raws = body["jobs"]
    jobs = [JobInfo.from_wire(raw) for raw in raws]
    holders = {
        info.id: raw["conn"] for info, raw in zip(jobs, raws, strict=True)
        if raw.get("conn") is not None
    }
    return JobPage(jobs, int(body.get("total", len(jobs))), holders)


class StatsReply(NamedTuple):
    queues: dict[str, QueueStats]
    broker: dict[str, Any]
    """Broker-wide figures: ``{version, connections, uptime_ms, draining}``."""
    total: int
    """Queues in the broker (the page is ``queues``)."""


def parse_stats(body: Mapping[str, Any]) -> StatsReply:
    """The counters per queue, the number of queues and the broker-wide figures of a ``stats``
    reply."""
    queues = {name: QueueStats.from_wire(raw) for name, raw in body["queues"].items()}
    return StatsReply(queues, dict(body.get("broker") or {}), int(body.get("total", len(queues))))
