"""``add_bulk``'s common case without I/O: ``(name, data)`` items → job specs and requests.

Per job this is the client's share of a bulk enqueue, and with one request in flight the
client's time adds to the broker's, so the loops here run in C where they can (``map``,
``set``, ``sum``) and the one loop in Python makes each spec directly: what ``build_spec``
makes without options. ``QueueOperations.add_bulk_call`` takes this path when every item is a
``(name, data)`` tuple and the queue has no default options, and the general one (an item's
options merged over the defaults, ``build_spec`` per job) otherwise; tests check that both give
the same requests and handles.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, Final

from client.endpoint import ServerInfo
from client.options import FRAME_BUDGET, PER_JOB_OVERHEAD, split_batches
from client.serializers import RawSerializer, Serializer
from protocol.model import JobSpec, new_tuple

_NAME: Final = itemgetter(0)
"""An item's name."""
_DATA: Final = itemgetter(1)
"""An item's data."""
_PAYLOAD: Final = itemgetter(2)
"""A spec's payload (``JobSpec.payload`` is field 2)."""


def plain_items(items: list[Any]) -> bool:
    """Whether there are items and every one is a ``(name, data)`` tuple (no options)."""
    return bool(items) and set(map(type, items)) == {tuple} and set(map(len, items)) == {2}


def plain_specs(items: list[tuple[str, Any]], serializer: Serializer) -> tuple[
        list[JobSpec], list[Any], int]:
    """The specs of ``plain_items`` (every option left to the broker), their data, and the sum
    of their ``spec_size``.

    ``RawSerializer.dumps`` returns exact ``bytes`` as they are: when every data is, it is not
    called job by job.
    """
    datas = list(map(_DATA, items))
    names = sum(map(len, map(_NAME, items))) + PER_JOB_OVERHEAD * len(items)
    if type(serializer) is RawSerializer and set(map(type, datas)) == {bytes}:
        specs = [new_tuple(JobSpec, (None, name, payload, 0, None, None, None, None, None, None,
                                     None, None)) for name, payload in items]
        return specs, datas, names + sum(map(len, datas))
    dumps = serializer.dumps
    specs = [new_tuple(JobSpec, (None, name, dumps(data), 0, None, None, None, None, None, None,
                                 None, None)) for name, data in items]
    return specs, datas, names + sum(map(len, map(_PAYLOAD, specs)))


def split_bulk(specs: list[JobSpec], size: int, server: ServerInfo | None) -> list[list[JobSpec]]:
    """``split_batches`` at the broker's ``max_batch`` and a share of its frame limit (the
    defaults before the first handshake); ``size``: the sum of the specs' ``spec_size``.

    A call that fits one request, the usual one, is not looked at job by job.
    """
    max_batch = server.max_batch if server else 10_000
    max_bytes = int((server.max_frame if server else 8 << 20) * FRAME_BUDGET)
    if len(specs) <= max_batch and size <= max_bytes:
        return [specs] if specs else []  # what split_batches gives: no job would start a new one
    return split_batches(specs, max_batch, max_bytes)
