"""Reply sizes: keep a ``reserve``, ``list_failed`` or ``list_jobs`` reply within the peer's
``max_frame``; and the wire description of a job (``job_info``), whose size they bound.

A reply that lists jobs (up to 1,000 for ``reserve``, ``list_failed`` and ``list_jobs``, each with
a payload of up to ``max_payload``) could be far larger than the frame a client accepts. The
broker stops adding jobs once the next one would take the reply past the frame, always giving at
least one job.

Sizes are upper bounds computed without encoding anything: the bytes a job's payload, result and
error texts take, plus a fixed per-job overhead covering every msgpack header and integer at its
largest. A string's UTF-8 size is bounded by four bytes per character. Only a job's progress value
(rare, and small) is measured by packing it.

Invariant: ``Settings`` validated by ``broker.config`` have ``max_frame >= min_max_frame(
max_payload)``, so one reserved job always fits in a frame: "at least one job" never produces a
``reserve`` reply the client refuses. (A ``list_failed`` job also carries a result and an error
text of up to 65,536 characters: with a ``max_frame`` below ``3 * max_payload`` plus 260 KiB, one
such job alone may pass it; it is still sent, alone.)
"""

from __future__ import annotations

from typing import Any, Final

import msgpack

from broker.jobs import Job
from protocol.checks import MAX_NAME_LEN
from protocol.replies import JOB_INFO_FIELDS, QUEUE_STATS_FIELDS, JobInfo

UTF8_MAX: Final = 4
"""Bytes per character at most in UTF-8."""
_INT: Final = 9  # a msgpack integer at its largest (uint64 / int64)
_STR_HEADER: Final = 5  # str32 / bin32 header at its largest

REPLY_ENVELOPE: Final = 64
"""``[1, request_id, {"jobs": [...], "total": n}]`` around the list: 40 bytes at most."""

RESERVED_JOB_OVERHEAD: Final = 1 + 3 * _STR_HEADER + _STR_HEADER + 7 * _INT + 1
"""A ``ReservedJob`` array beyond its payload and strings: the array header, three string
headers, the payload's bin header, seven integers (the timeout, or its ``nil``, is the
seventh) and a ``nil`` progress."""

JOB_INFO_OVERHEAD: Final = (
    3 + sum(1 + len(key) for key in (*JOB_INFO_FIELDS, "timeout_ms")) + 5 * _STR_HEADER
    + 9 * _INT + 2
)
"""A ``JobInfo`` map beyond its payload, result, error and strings: the map header, every key
(``timeout_ms`` included; ``owner`` is only in ``get``/``wait`` replies, never in a list), five
string/bin headers (id, queue, name, payload, result), nine integers (``nil`` fits an integer's
room), the state and the error header (counted with the error below)."""

_STATE_MAX: Final = 1 + len("completed")


def job_info(job: Job, *, with_owner: bool = False) -> JobInfo:
    """The wire description of a job (``get``, ``wait``, ``list_failed``). ``with_owner``: an
    active job's ``owner`` is ``{"conn": id}`` (the I/O layer adds the worker's client and host:
    ``Observation.owner``)."""
    owner = {"conn": job.owner} if with_owner and job.owner is not None else None
    return JobInfo(
        job.id, job.queue, job.name, job.state, job.priority, job.attempts, job.max_attempts,
        job.payload, job.progress, job.result, job.error, job.created_at, job.run_at,
        job.started_at, job.finished_at, job.lease_deadline, owner, job.options.timeout_ms,
    )


def packed_size(value: Any) -> int:
    """The msgpack size of a progress value, in bytes (the one size measured by packing)."""
    return len(msgpack.packb(value, use_bin_type=True))


def reserve_budget(max_frame: int) -> int:
    """The bytes a ``reserve`` reply's jobs may take (``Core.reserve``'s ``max_bytes``).

    ``Core.reserve`` counts a job as ``RESERVED_JOB_OVERHEAD`` plus its payload, its id, queue and
    name at ``UTF8_MAX`` bytes a character, and its progress value packed.

    Args:
        max_frame: the largest frame body the peer accepts.

    Returns:
        ``max_frame`` less the reply envelope.
    """
    return max_frame - REPLY_ENVELOPE


def job_info_size(info: JobInfo) -> int:
    """An upper bound on the encoded size of ``info.to_wire()``, without encoding it.

    Args:
        info: a job as ``list_failed`` describes it.

    Returns:
        Bytes: never less than the msgpack encoding takes.
    """
    size = (
        JOB_INFO_OVERHEAD + _STATE_MAX + len(info.payload)
        + UTF8_MAX * (len(info.id) + len(info.queue) + len(info.name))
    )
    if info.result is not None:
        size += len(info.result)
    if info.error is not None:
        size += _STR_HEADER + UTF8_MAX * len(info.error)
    if info.progress is not None:
        size += packed_size(info.progress)
    return size


CONN_KEY_SIZE: Final = 1 + len("conn") + _INT
"""The ``conn`` key and value a ``list_jobs`` reply adds to an active job's map."""


def fit_job_infos(infos: list[JobInfo], max_frame: int, extra: int = 0) -> list[JobInfo]:
    """The longest prefix of ``infos`` whose reply fits in ``max_frame`` (at least one job).

    Args:
        infos: jobs in reply order.
        max_frame: the largest frame body the peer accepts.
        extra: bytes each job's map may carry beyond ``job_info_size`` (``CONN_KEY_SIZE``).

    Returns:
        ``infos`` itself when all fit, else its first jobs (never empty if ``infos`` is not).
    """
    budget = max_frame - REPLY_ENVELOPE
    used = 0
    for index, info in enumerate(infos):
        used += job_info_size(info) + extra
        if used > budget and index > 0:
            return infos[:index]
    return infos


STATS_ENVELOPE: Final = 1024
"""A ``stats`` reply around its queues: the envelope, ``total`` and the ``broker`` map."""

QUEUE_STATS_OVERHEAD: Final = (
    _STR_HEADER + 3 + sum(1 + len(key) for key in QUEUE_STATS_FIELDS)
    + len(QUEUE_STATS_FIELDS) * _INT
)
"""One queue's entry in a ``stats`` reply beyond its name: the name's header, the map header,
every key and every value at its largest."""


def fit_stats(names: list[str], max_frame: int) -> int:
    """How many of the first ``names`` a ``stats`` reply can carry within ``max_frame`` (at
    least one; a ``stats`` page never lists 1,000 queues of 200 characters in a small frame).

    Args:
        names: the page's queue names, in reply order.
        max_frame: the largest frame body the peer accepts.

    Returns:
        A count, ``len(names)`` when all fit.
    """
    budget = max_frame - STATS_ENVELOPE
    used = 0
    for index, name in enumerate(names):
        used += QUEUE_STATS_OVERHEAD + UTF8_MAX * len(name)
        if used > budget and index > 0:
            return index
    return len(names)


def min_max_frame(max_payload: int) -> int:
    """The smallest ``max_frame`` the broker accepts with this ``max_payload``.

    A ``reserve`` reply of one job at its largest must fit: a payload and a packed progress value
    of ``max_payload`` bytes each, and an id, queue and name of ``MAX_NAME_LEN`` characters.
    (A job described in full by ``get``, ``wait`` or ``list_failed`` adds a result and an error
    text of up to ``MAX_ERROR_LEN`` characters; protocol/SPEC.md §2 says when that can be larger.)

    Args:
        max_payload: the broker's payload limit.

    Returns:
        Bytes.
    """
    return REPLY_ENVELOPE + RESERVED_JOB_OVERHEAD + 2 * max_payload + 3 * UTF8_MAX * MAX_NAME_LEN
