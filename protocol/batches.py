"""The request batches of the hot paths as the broker parses them: checked as a whole, kept as
columns, their items built only on demand. Sans-I/O.

A batch of ``BULK`` plain jobs or more (no id, no option) parses as ``PlainJobs``, a batch of
``BULK`` valid ack items or more as ``AckBatch``: the checks run as C loops over the whole batch
(``zip(*raws)``, ``map(type, ...)``, ``count``), which costs a fraction of a Python loop per item,
and no ``JobSpec`` or ``AckItem`` is built (that alone cost more than the checks). The core reads
the columns (``broker/core_producer``, ``broker/core_worker``). A batch the fast checks do not
accept takes the per-item checks of ``protocol.model``, which name what is wrong; a smaller
batch too, which costs less item by item. Either way the result equals the tuple of its items.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import repeat
from operator import add
from typing import Any, Final, TypeVar, overload

from protocol.checks import MAX_NAME_LEN, MAX_TOKEN, check_array
from protocol.errors import bad_argument
from protocol.model import (
    PLAIN_TAIL,
    AckItem,
    JobSpec,
    batch_item,
    new_tuple,
    parse_job,
)

_T = TypeVar("_T", bound=tuple[Any, ...])


class LazyBatch(Sequence[_T]):
    """A batch of a request as the broker parses it on a hot path: checked as a whole, kept in
    the columns the core reads, and building an item (a ``NamedTuple``) only when one is asked
    for. Equal to (and hashes like) the tuple of its items. Subclasses give ``__len__``,
    ``__iter__`` and ``_item``."""

    __slots__ = ()

    def _item(self, index: int) -> _T:
        raise NotImplementedError

    @overload
    def __getitem__(self, index: int) -> _T: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[_T, ...]: ...

    def __getitem__(self, index: int | slice) -> _T | tuple[_T, ...]:
        if isinstance(index, slice):
            return tuple(self)[index]
        return self._item(index)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (tuple, LazyBatch)):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))


class PlainJobs(LazyBatch[JobSpec]):
    """An enqueue batch in which no job has an id or an option: job ``i`` is
    ``JobSpec(None, names[i], payloads[i], *PLAIN_TAIL)``, with a name and a payload that
    ``parse_job`` accepts. ``parse_jobs`` gives one for such a batch of ``BULK`` jobs or more
    (the producer's hot path), and the core reads ``names`` and ``payloads`` without looking at
    each job's options again. Any other sequence of ``JobSpec`` promises nothing.
    """

    __slots__ = ("_raws", "names", "payloads")

    def __init__(
        self, raws: tuple[tuple[None, str, bytes], ...], names: tuple[str, ...],
        payloads: tuple[bytes, ...],
    ) -> None:
        self._raws = raws
        self.names = names
        self.payloads = payloads

    def __len__(self) -> int:
        return len(self._raws)

    def _item(self, index: int) -> JobSpec:
        return new_tuple(JobSpec, self._raws[index] + PLAIN_TAIL)

    def __iter__(self) -> Iterator[JobSpec]:
        return map(new_tuple, repeat(JobSpec), map(add, self._raws, repeat(PLAIN_TAIL)))


_NONE: Final = type(None)
BULK: Final = 4
"""Batches of at least this many jobs take the whole-batch paths (``PlainJobs``, the core's
bulk enqueue); smaller ones cost less one job at a time."""


def _plain_jobs(raws: tuple[Any, ...]) -> PlainJobs | None:
    """``raws`` as ``PlainJobs`` if every item is ``[nil, name, payload]`` with a name and
    payload ``parse_job`` accepts, else ``None``. The checks run as C loops (``zip``, ``map``,
    ``count``) over the whole batch: a fraction of a Python loop's cost per item."""
    count = len(raws)
    if list(map(type, raws)).count(tuple) != count:
        return None
    try:
        ids, names, payloads = zip(*raws, strict=True)
    except ValueError:  # items of other lengths than 3, or of several lengths
        return None
    if (
        ids.count(None) != count
        or list(map(type, names)).count(str) != count
        or list(map(type, payloads)).count(bytes) != count
        or max(map(len, names)) > MAX_NAME_LEN
    ):
        return None
    return PlainJobs(raws, names, payloads)


def parse_jobs(value: Any, field: str) -> Sequence[JobSpec]:
    """The ``jobs`` array of an enqueue request (the producer's hot path: keep it lean).

    Returns:
        ``PlainJobs`` when no job has an id or an option, else a tuple of ``JobSpec``.
    """
    raws = check_array(value, field)
    if len(raws) >= BULK:
        plain = _plain_jobs(raws)
        if plain is not None:
            return plain
    jobs: list[JobSpec] = []
    append = jobs.append
    for index, raw in enumerate(raws):
        # The common job: no id, no options ([nil, name, payload]).
        if type(raw) is tuple and len(raw) == 3 and raw[0] is None:
            name, payload = raw[1], raw[2]
            if type(payload) is bytes and type(name) is str and len(name) <= MAX_NAME_LEN:
                append(new_tuple(JobSpec, (None, name, payload, *PLAIN_TAIL)))
                continue
        append(parse_job(raw, index))
    return tuple(jobs)


# --------------------------------------------------------------------------- ack items


class AckBatch(LazyBatch[AckItem]):
    """The items of an ack request as ``parse_ack_items`` gives a batch of ``BULK`` items or
    more, every one valid: item ``i`` is ``AckItem(ids[i], tokens[i], results[i])``
    (``results`` is ``None`` when no item has one). The core reads the columns."""

    __slots__ = ("ids", "results", "tokens")

    def __init__(
        self, ids: tuple[str, ...], tokens: tuple[int, ...],
        results: tuple[bytes | None, ...] | None,
    ) -> None:
        self.ids = ids
        self.tokens = tokens
        self.results = results

    def __len__(self) -> int:
        return len(self.ids)

    def _item(self, index: int) -> AckItem:
        result = None if self.results is None else self.results[index]
        return AckItem(self.ids[index], self.tokens[index], result)

    def __iter__(self) -> Iterator[AckItem]:
        return map(new_tuple, repeat(AckItem), self.columns())

    def columns(self) -> Iterator[tuple[str, int, bytes | None]]:
        """``(id, token, result)`` per item, as plain tuples (the core's hot path)."""
        results = repeat(None) if self.results is None else self.results
        return zip(self.ids, self.tokens, results, strict=False)  # results may be a repeat()


def _ack_items(raws: tuple[Any, ...]) -> AckBatch | None:
    """``raws`` as an ``AckBatch`` if every item is a valid ``[id, token]`` (or every one a
    valid ``[id, token, result]``), else ``None`` (the per-item checks then name what is
    wrong). The checks run as C loops over the whole batch, as in ``_plain_jobs``."""
    count = len(raws)
    if list(map(type, raws)).count(tuple) != count:
        return None
    try:
        columns = tuple(zip(*raws, strict=True))
    except ValueError:  # items of several lengths
        return None
    results: tuple[Any, ...] | None = None
    if len(columns) == 2:
        ids, tokens = columns
    elif len(columns) == 3:
        ids, tokens, results = columns
        if list(map(type, results)).count(bytes) + results.count(None) != count:
            return None
    else:
        return None
    if list(map(type, ids)).count(str) != count or list(map(type, tokens)).count(int) != count:
        return None
    lengths = list(map(len, ids))
    if min(lengths) < 1 or max(lengths) > MAX_NAME_LEN or min(tokens) < 0 or (
        max(tokens) > MAX_TOKEN
    ):
        return None
    return AckBatch(ids, tokens, results)


def parse_ack_items(value: Any, field: str) -> Sequence[AckItem]:
    """The ``items`` of an ack request (the worker's hot path): an ``AckBatch`` for a batch of
    ``BULK`` valid items or more, else a tuple of ``AckItem``."""
    raws = check_array(value, field)
    if len(raws) >= BULK:
        fast = _ack_items(raws)
        if fast is not None:
            return fast
    items: list[AckItem] = []
    append = items.append
    for i, raw in enumerate(raws):
        # A well-formed item passes these checks inline; anything else takes the slow path
        # below, which names the offending field.
        if type(raw) is tuple and 2 <= len(raw) <= 3:
            job_id, token = raw[0], raw[1]
            result = raw[2] if len(raw) == 3 else None
            if (
                type(job_id) is str and 0 < len(job_id) <= MAX_NAME_LEN
                and type(token) is int and 0 <= token <= MAX_TOKEN
                and (result is None or type(result) is bytes)
            ):
                append(new_tuple(AckItem, (job_id, token, result)))
                continue
        raw = batch_item(raw, i, 2, 3)
        result = raw[2] if len(raw) > 2 else None
        if result is not None and type(result) is not bytes:
            raise bad_argument(f"items[{i}].result", "bin or nil")
        append(new_tuple(AckItem, (raw[0], raw[1], result)))
    return tuple(items)
