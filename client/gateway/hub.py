"""The gateway's event hub: one broker subscription fanned out to every Server-Sent Events stream.

Theory of operation
-------------------
The broker allows 16 subscriptions per connection (SPEC §8.21) and the gateway has one
connection, so SSE streams do not each subscribe. While at least one stream is open the hub holds
**one** subscription to every queue and every kind (``Client.events``) and hands each event to the
listeners whose filter (queues, kinds) matches it. When the last listener leaves, the hub
unsubscribes: an idle gateway costs the broker nothing (§10.1 guarantee 4).

Each listener has its own bounded buffer, the broker's policy again (§10.1 guarantee 3): when an
event would overflow it, every buffered event is dropped and replaced by one ``lagged`` event whose
``dropped`` counts them, so a browser tab that stops reading costs at most ``buffer`` events of
memory and the other streams are not held back. A ``lagged`` event of the hub's own subscription
(the gateway fell behind the broker, or its connection was lost: ``dropped`` ``None``) passes
through to every listener, whatever its filter: each of them may have missed events.

Invariants:

1. At most ``max_streams`` listeners; one more is refused with ``OVERLOADED`` (HTTP 429).
2. A listener's buffer holds at most ``buffer + 1`` events.
3. The hub holds a broker subscription exactly while it has listeners (the pump task owns it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from client.gateway.errors import GatewayError
from client.log import get_logger
from client.queue import Client
from client.serializers import RAW
from client.watch import EventStream, JobEvent
from protocol.errors import ErrorCode
from protocol.observing import EventKind

log = get_logger("jobwire.gateway")

DEFAULT_MAX_STREAMS: Final = 100
"""SSE streams one gateway serves at once (``--http-max-streams``); one more answers 429."""
DEFAULT_STREAM_BUFFER: Final = 1000
"""Events held for one slow SSE reader before they turn into one ``lagged`` event."""
HUB_BUFFER: Final = 10_000
"""Events the hub's own broker subscription holds while the pump fans them out."""

Encoder = Callable[[JobEvent], dict[str, Any]]


def sse_message(body: dict[str, Any]) -> str:
    """One Server-Sent Events message: ``id: SEQ``, ``event: KIND``, ``data: JSON``."""
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return f"id: {body['seq']}\nevent: {body['kind']}\ndata: {data}\n\n"


Message = tuple[dict[str, Any], str]
"""An event's JSON object and its SSE text, encoded once for every listener."""


class Listener:
    """One SSE stream's view of the hub: a filter and a bounded buffer of encoded events."""

    def __init__(self, queues: frozenset[str] | None, kinds: frozenset[str] | None,
                 buffer: int) -> None:
        self.queues = queues
        self.kinds = kinds
        self._max = buffer
        self._buffer: deque[Message] = deque()
        self._wakeup = asyncio.Event()
        self.closed = False

    def wants(self, event: JobEvent) -> bool:
        if event.kind == EventKind.LAGGED:
            return True
        if self.queues is not None and event.queue not in self.queues:
            return False
        return self.kinds is None or event.kind in self.kinds

    def put(self, message: Message) -> None:
        """Buffer one event (invariant 2: an overflow turns the buffer into one ``lagged``)."""
        buffer = self._buffer
        if len(buffer) >= self._max:
            dropped: int | None = 0
            for held, _ in buffer:
                count = held.get("dropped", 0) if held["kind"] == EventKind.LAGGED else 1
                dropped = None if dropped is None or count is None else dropped + count
            last = buffer[-1][0]
            buffer.clear()
            lagged = {"seq": last["seq"], "kind": EventKind.LAGGED.value, "time": last["time"],
                      "queue": None, "job_id": None, "name": None, "dropped": dropped}
            buffer.append((lagged, sse_message(lagged)))
        buffer.append(message)
        self._wakeup.set()

    async def get(self, wait_s: float) -> list[Message] | None:
        """The events buffered now (waits up to ``wait_s`` for one); ``[]`` when none came,
        ``None`` once closed."""
        if not self._buffer and not self.closed:
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), wait_s)
        if self._buffer:
            out = list(self._buffer)
            self._buffer.clear()
            return out
        return None if self.closed else []

    def close(self) -> None:
        self.closed = True
        self._wakeup.set()


class EventHub:
    """Fans the broker's job events out to SSE listeners (see the module's theory).

    Args:
        client: the gateway's broker client.
        encode: turns a ``JobEvent`` into the JSON object an SSE ``data:`` line carries.
        max_streams: listeners at most (invariant 1).
        buffer: events per listener before ``lagged``.
    """

    def __init__(self, client: Client, encode: Encoder, *,
                 max_streams: int = DEFAULT_MAX_STREAMS,
                 buffer: int = DEFAULT_STREAM_BUFFER) -> None:
        self.client = client
        self.encode = encode
        self.max_streams = max_streams
        self.buffer = buffer
        self.listeners: set[Listener] = set()
        self._pump: asyncio.Task[None] | None = None
        self._stream: EventStream | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        self._subscribing = asyncio.Lock()
        self.closed = False

    async def open(self, queues: frozenset[str] | None,
                   kinds: frozenset[str] | None) -> Listener:
        """A new listener, subscribed once this returns (events from then on reach it).

        Raises:
            GatewayError: ``OVERLOADED`` (429) past ``max_streams``; ``BROKER_UNAVAILABLE`` or a
                broker error when the hub cannot subscribe.
        """
        if self.closed:
            raise GatewayError(ErrorCode.DRAINING, "the gateway is shutting down")
        if len(self.listeners) >= self.max_streams:
            raise GatewayError(ErrorCode.OVERLOADED, f"this gateway already serves "
                               f"{self.max_streams} event streams (--http-max-streams); "
                               "close one or try again later")
        listener = Listener(queues, kinds, self.buffer)
        self.listeners.add(listener)
        try:
            await self._ensure_subscribed()
        except BaseException:
            self.leave(listener)
            raise
        return listener

    async def _ensure_subscribed(self) -> None:
        async with self._subscribing:  # concurrent opens share one subscribe
            if self._stream is None:
                await self._subscribe()

    async def _subscribe(self) -> None:
        stream = self.client.events(None, serializer=RAW, max_buffer=HUB_BUFFER)
        self._stream = stream
        try:
            await stream.start()
        except BaseException:
            self._stream = None
            await stream.close()
            raise
        self._pump = asyncio.create_task(self._run(stream), name="jobwire-gateway-events")

    async def _run(self, stream: EventStream) -> None:
        async for event in stream:
            message: Message | None = None
            for listener in tuple(self.listeners):
                if listener.wants(event):
                    if message is None:
                        body = self.encode(event)
                        message = (body, sse_message(body))
                    listener.put(message)
        # The client closed for good: tell the listeners their streams end.
        if self._stream is stream:
            self._stream = None
        for listener in tuple(self.listeners):
            listener.close()

    def leave(self, listener: Listener) -> None:
        """Forget ``listener``; the last one out ends the broker subscription (invariant 3)."""
        listener.close()
        self.listeners.discard(listener)
        if not self.listeners and self._stream is not None:
            stream, self._stream = self._stream, None
            pump, self._pump = self._pump, None
            task = asyncio.ensure_future(self._stop(stream, pump))
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    @staticmethod
    async def _stop(stream: EventStream, pump: asyncio.Task[None] | None) -> None:
        await stream.close()
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def close(self) -> None:
        """End every stream and the subscription (the gateway stops). Safe to call twice."""
        self.closed = True
        for listener in tuple(self.listeners):
            self.leave(listener)
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)
