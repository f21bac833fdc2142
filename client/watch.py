"""Following jobs from the producer side: ``Client.events`` (an async iterator of ``JobEvent``)
and ``QueueEvents`` (BullMQ-style ``on("completed", callback)``).

Theory of operation
-------------------
A stream subscribes on the client's connection (``subscribe``, SPEC §8.20) and receives the
broker's ``events`` messages for its subscription id. One ``EventRouter`` per connection listens
to the connection's server events and hands each batch to its stream by id. Streams hold what
arrived in a bounded buffer, the broker's policy again: past ``max_buffer`` events the buffered
ones are dropped and one ``lagged`` event counts them, so a consumer that stops iterating costs
bounded memory.

Subscriptions end with their connection. When the connection comes back, the router subscribes
each open stream again and puts a ``lagged`` event with ``dropped=None`` in it: events of the
time in between are lost, and their number is unknown (read the jobs you follow with
``get_job``).

Invariants:

1. A stream receives only the batches of its current subscription id, in the order they came.
2. A stream's buffer holds at most ``max_buffer + 1`` events.
3. A closed stream is unsubscribed (best effort: a lost connection ended it anyway) and leaves
   the router; iterating it ends.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Self

from client.connection import Connection
from client.log import get_logger
from client.serializers import Serializer
from protocol.observing import (
    EVENTS,
    EventBatch,
    EventKind,
    Subscribe,
    Unsubscribe,
    parse_events,
    parse_subscribed,
)

log = get_logger("jobwire.events")

_COMMON = frozenset({"seq", "kind", "time", "queue", "job_id", "name"})


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One job event (SPEC §9.8). Times are Unix seconds, as everywhere in the Python client.

    ``fields`` holds the kind's own keys (``attempt``, ``error``, ``will_retry``, ``progress``,
    ``dropped``...); ``result`` is the ``completed`` job's result, decoded with the stream's
    serializer (``None`` for other kinds).
    """

    kind: str
    seq: int
    time: float
    queue: str | None
    job_id: str | None
    name: str | None
    fields: dict[str, Any] = field(default_factory=dict)
    result: Any = None

    @property
    def final(self) -> bool:
        """Whether the job is finished after this event (completed, or failed for good)."""
        return self.kind == EventKind.COMPLETED or (
            self.kind in (EventKind.FAILED, EventKind.LEASE_EXPIRED)
            and not self.fields.get("will_retry")
        )

    @classmethod
    def from_wire(cls, body: dict[str, Any], serializer: Serializer) -> JobEvent:
        fields = {key: value for key, value in body.items() if key not in _COMMON}
        result = None
        raw = fields.get("result")
        if body.get("kind") == EventKind.COMPLETED and isinstance(raw, bytes):
            try:
                result = serializer.loads(raw)
            except Exception:  # a result some other client serialized differently
                result = raw
        return cls(
            kind=str(body.get("kind")), seq=int(body.get("seq", 0)),
            time=int(body.get("time", 0)) / 1000.0, queue=body.get("queue"),
            job_id=body.get("job_id"), name=body.get("name"), fields=fields, result=result,
        )


def _gap(dropped: int | None, seq: int, time: float) -> JobEvent:
    return JobEvent(EventKind.LAGGED.value, seq, time, None, None, None, {"dropped": dropped})


class EventStream:
    """Job events of some queues (or all), as an async iterator. Made by ``Client.events``.

    ``async with client.events(["emails"], kinds=["completed", "failed"]) as stream:
    async for event in stream: ...``; or iterate it directly and ``await stream.close()``.
    """

    def __init__(
        self, router: EventRouter, queues: Iterable[str] | None, kinds: Iterable[str] | None,
        serializer: Serializer, max_buffer: int,
    ) -> None:
        self._router = router
        self.queues = None if queues is None else tuple(queues)
        self.kinds = None if kinds is None else frozenset(EventKind(kind) for kind in kinds)
        self._serializer = serializer
        self._max_buffer = max_buffer
        self._buffer: deque[JobEvent] = deque()
        self._wakeup = asyncio.Event()
        self.sub: int | None = None
        """The broker's subscription id (``None`` while not subscribed)."""
        self.closed = False
        self._started = False

    async def start(self) -> Self:
        """Subscribe (done by ``async with`` or the first ``__anext__``).

        Raises:
            BrokerError: ``BAD_ARGUMENT`` (a queue or kind) or ``OVERLOADED`` (too many
                subscriptions).
        """
        if not self._started:
            self._started = True
            self._router.add(self)
            await self._subscribe()
        return self

    async def _subscribe(self) -> None:
        body = await self._router.connection.request(Subscribe(self.queues, self.kinds))
        self.sub = parse_subscribed(body).sub
        self._router.bind(self)

    async def close(self) -> None:
        """Unsubscribe and end the iteration (safe to call twice)."""
        if self.closed:
            return
        self.closed = True
        self._wakeup.set()
        self._router.remove(self)
        sub, self.sub = self.sub, None
        if sub is not None and self._router.connection.connected:
            try:
                await self._router.connection.request(Unsubscribe(sub))
            except Exception as exc:  # the subscription ends with the connection anyway
                log.debug("unsubscribe failed", error=repr(exc))

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[JobEvent]:
        return self

    async def __anext__(self) -> JobEvent:
        if not self._started:
            await self.start()
        while not self._buffer:
            if self.closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._buffer.popleft()

    def deliver(self, events: list[dict[str, Any]]) -> None:
        """Take a batch from the router (invariant 2: overflow becomes one ``lagged``)."""
        buffer = self._buffer
        for body in events:
            if len(buffer) >= self._max_buffer:
                dropped = sum(
                    (e.fields.get("dropped") or 0) if e.kind == EventKind.LAGGED else 1
                    for e in buffer
                )
                last = buffer[-1]
                buffer.clear()
                buffer.append(_gap(dropped, last.seq, last.time))
            buffer.append(JobEvent.from_wire(body, self._serializer))
        self._wakeup.set()

    def lost_connection(self) -> None:
        """The subscription ended with the connection: say so, unknown count."""
        self.sub = None
        last = self._buffer[-1] if self._buffer else None
        self._buffer.append(_gap(None, last.seq if last else 0, last.time if last else 0.0))
        self._wakeup.set()


class EventRouter:
    """Dispatches a connection's ``events`` messages to its streams; resubscribes them after a
    reconnect. One per connection (the ``Client`` makes it on first use).

    A subscription's first events may be read in the same chunk as the reply to ``subscribe``,
    before the coroutine that sent it has resumed and bound its id: batches for an id nobody has
    bound yet wait in ``_unclaimed`` (the last ``_MAX_UNCLAIMED``), and ``bind`` claims them.
    """

    _MAX_UNCLAIMED = 256

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._streams: dict[EventStream, None] = {}
        self._by_sub: dict[int, EventStream] = {}
        self._unclaimed: deque[EventBatch] = deque(maxlen=self._MAX_UNCLAIMED)
        self._tasks: set[asyncio.Task[None]] = set()
        self._lost = False
        connection.on_event(self._on_event)

    def add(self, stream: EventStream) -> None:
        self._streams[stream] = None

    def bind(self, stream: EventStream) -> None:
        if stream.sub is None or stream.closed:
            return
        self._by_sub[stream.sub] = stream
        early = [batch for batch in self._unclaimed if batch.sub == stream.sub]
        if early:
            kept = [batch for batch in self._unclaimed if batch.sub != stream.sub]
            self._unclaimed.clear()
            self._unclaimed.extend(kept)
            for batch in early:
                stream.deliver(batch.events)

    def remove(self, stream: EventStream) -> None:
        self._streams.pop(stream, None)
        if stream.sub is not None:
            self._by_sub.pop(stream.sub, None)

    def _on_event(self, name: str, body: dict[str, Any]) -> None:
        if name == EVENTS:
            batch = parse_events(body)
            stream = self._by_sub.get(batch.sub)
            if stream is not None:
                stream.deliver(batch.events)
            else:
                self._unclaimed.append(batch)
        elif name == "disconnected":
            self._by_sub.clear()
            self._unclaimed.clear()
            self._lost = True
            for stream in self._streams:
                if stream.sub is not None:
                    stream.lost_connection()
        elif name == "connected" and self._lost:
            self._lost = False
            for stream in list(self._streams):
                if stream.sub is None and not stream.closed:
                    task = asyncio.ensure_future(self._resubscribe(stream))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        elif name == "closed":
            for stream in list(self._streams):
                stream.closed = True
                stream._wakeup.set()

    async def _resubscribe(self, stream: EventStream) -> None:
        try:
            await stream._subscribe()
        except Exception as exc:
            log.warning("resubscribe failed", error=repr(exc))


Callback = Callable[[JobEvent], Any]


class QueueEvents:
    """BullMQ's ``QueueEvents``: callbacks per event kind for one queue (or every queue).

    ::

        events = QueueEvents(client, "emails")
        events.on("completed", lambda e: print(e.job_id, e.result))
        await events.start()      # runs in the background until ``close()``

    Callbacks run in the order events arrive; an async callback is awaited before the next
    event. A callback's exception is logged, never raised.
    """

    def __init__(self, client: Any, queue: str | None = None) -> None:
        self._client = client
        self.queue = queue
        self._callbacks: dict[str, list[Callback]] = {}
        self._stream: EventStream | None = None
        self._task: asyncio.Task[None] | None = None

    def on(self, kind: str, callback: Callback) -> Self:
        """Call ``callback(event)`` for each event of ``kind`` (``"lagged"`` included)."""
        self._callbacks.setdefault(str(EventKind(kind)), []).append(callback)
        return self

    async def start(self) -> Self:
        """Subscribe to the kinds that have callbacks and start dispatching."""
        kinds = [k for k in self._callbacks if k != EventKind.LAGGED] or None
        queues = None if self.queue is None else [self.queue]
        self._stream = await self._client.events(queues, kinds=kinds).start()
        self._task = asyncio.ensure_future(self._run(self._stream))
        return self

    async def _run(self, stream: EventStream) -> None:
        async for event in stream:
            for callback in self._callbacks.get(event.kind, ()):
                try:
                    result = callback(event)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("queue event callback failed", kind=event.kind)

    async def close(self) -> None:
        """Unsubscribe and stop (safe to call twice)."""
        if self._stream is not None:
            await self._stream.close()
        if self._task is not None:
            await self._task
            self._task = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
