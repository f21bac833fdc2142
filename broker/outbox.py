"""A connection's outgoing replies: frames queued for the next write, and replies promised after
a commit.

Theory of operation
-------------------
Every reply is encoded when it is queued or promised, so a connection knows at any moment how
many bytes it owes its peer (``unsent_bytes``: queued, in the transport's buffer, or promised);
the session stops handling requests while that is over its output budget. Frames queued while one
chunk of input is handled, or while one commit completes, leave in a single ``transport.write``.

A promised reply waits for the transaction holding every change made before it. The promises of
one connection and one commit batch (``committer.generation``) gather in one list under a single
committer callback, so a commit answers all of them in one pass: the first promise of a batch
registers the list, later ones join it while the committer has not taken that batch yet (its
transaction then holds their changes too). If the transaction fails, each promised request gets
``JOURNAL_FAILURE`` with its own ``not_durable`` text instead.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, Final

from broker.committer import GroupCommitter
from protocol.codec import FrameEncoder
from protocol.errors import ErrorCode
from protocol.messages import error_message

NOT_DURABLE: Final = (
    "not acknowledged: the write could not be made durable; it may or may not take effect; "
    "retry (with the same job id) to be safe"
)

_Promise = tuple[int, bytes, str]
"""A promised reply: its request id, its encoded frame, its ``JOURNAL_FAILURE`` text."""


class Outbox:
    """The outgoing frames of one connection.

    Args:
        committer: the broker's group committer.
        answered: called once a commit batch's promises are settled, with their frames (replies,
            or ``JOURNAL_FAILURE`` errors), their size in bytes, and how many there are.
    """

    __slots__ = ("_batch", "_committer", "_deliver", "_encode", "_frames", "_generation",
                 "_transport", "promised_bytes", "queued_bytes")

    def __init__(
        self, committer: GroupCommitter, answered: Callable[[list[bytes], int, int], None]
    ) -> None:
        self._committer = committer
        self._deliver = answered
        self._encode = FrameEncoder().frame
        self._frames: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._batch: list[_Promise] | None = None
        self._generation = -1
        self.queued_bytes = 0
        """Encoded bytes queued for the next write."""
        self.promised_bytes = 0
        """Encoded bytes of replies waiting for their commit."""

    def attach(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    @property
    def unsent_bytes(self) -> int:
        """Encoded reply bytes not yet on the socket: queued, in the transport's buffer, or
        promised to requests that wait for a commit."""
        unsent = self.queued_bytes + self.promised_bytes
        if self._transport is not None:
            unsent += self._transport.get_write_buffer_size()
        return unsent

    def queue(self, message: Any) -> None:
        """Encode ``message`` and queue it for the next write."""
        frame = self._encode(message)
        self._frames.append(frame)
        self.queued_bytes += len(frame)

    def queue_frames(self, frames: list[bytes], size: int) -> None:
        """Queue frames already encoded (``size`` bytes in all)."""
        self._frames.extend(frames)
        self.queued_bytes += size

    def write(self) -> None:
        """Write every queued frame in one ``transport.write`` (unless the transport is closing)."""
        transport = self._transport
        if self._frames and transport is not None and not transport.is_closing():
            frames, self._frames = self._frames, []
            self.queued_bytes = 0
            transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def clear(self) -> None:
        """Drop what is queued (the connection is gone)."""
        self._frames.clear()
        self.queued_bytes = 0

    def promise(self, request_id: int, message: Any, not_durable: str) -> None:
        """Send ``message`` once everything the core changed so far is committed."""
        committer = self._committer
        batch = self._batch
        if batch is None or self._generation != committer.generation:
            batch = []
            self._batch = batch
            self._generation = committer.generation
            committer.after_commit(functools.partial(self._committed, batch))
        frame = self._encode(message)  # encoded now: its size counts against the budget
        self.promised_bytes += len(frame)
        batch.append((request_id, frame, not_durable))

    def _committed(self, batch: list[_Promise], exc: BaseException | None) -> None:
        """Settle every promise of ``batch`` (its transaction ended, ``exc`` if it failed)."""
        if self._batch is batch:
            self._batch = None
        size = sum(len(frame) for _, frame, _ in batch)
        self.promised_bytes -= size
        if exc is None:
            frames = [frame for _, frame, _ in batch]
        else:
            frames = [self._encode(error_message(request_id, ErrorCode.JOURNAL_FAILURE, text))
                      for request_id, _, text in batch]
            size = sum(len(frame) for frame in frames)
        self._deliver(frames, size, len(batch))
