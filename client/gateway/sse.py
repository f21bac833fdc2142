"""``GET /api/events``: job events as Server-Sent Events, through the gateway's ``EventHub``.

Each SSE message is ``id: SEQ``, ``event: KIND`` and one ``data:`` line of JSON: the broker's
event (SPEC §9.8) with times in Unix milliseconds and a ``completed`` job's ``result`` decoded as
``GET /api/jobs/{id}`` decodes it. A comment line (``: keep-alive``) every 15 s keeps proxies from
closing a quiet stream. ``lagged`` (``dropped``: events lost, ``null`` when unknown) means the
reader fell behind or the gateway lost the broker for a while: re-read what you follow.

Query: ``queue`` (repeat it for several; none: every queue) and ``kind`` (repeat it; none: every
kind). ``Last-Event-ID`` is not honoured: the broker keeps no history of events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from client.gateway.errors import bad_argument
from client.gateway.hub import EventHub, Listener
from client.gateway.present import decode, jsonable
from client.gateway.state import Gateway, gateway_of
from client.watch import JobEvent
from protocol.checks import MAX_NAME_LEN
from protocol.observing import EventKind

KEEPALIVE_S: Final = 15.0
MAX_FILTER: Final = 100
KINDS: Final = tuple(kind.value for kind in EventKind if kind != EventKind.LAGGED)


def event_encoder(gateway: Gateway) -> Any:
    """The hub's encoder: a ``JobEvent`` as the JSON object of one SSE message."""
    def encode(event: JobEvent) -> dict[str, Any]:
        body: dict[str, Any] = {
            "seq": event.seq, "kind": event.kind, "time": round(event.time * 1000),
            "queue": event.queue, "job_id": event.job_id, "name": event.name,
        }
        for key, value in event.fields.items():
            if key == "result":
                raw = value if isinstance(value, bytes) else None
                body["result"], body["result_encoding"] = decode(
                    raw, gateway.serializer_name, gateway.serializer)
            else:
                body[key] = jsonable(value)
        return body
    return encode


def hub_of(request: Request) -> EventHub:
    hub: EventHub = request.app.state.events
    return hub


def filters(request: Request) -> tuple[frozenset[str] | None, frozenset[str] | None]:
    """The ``queue`` and ``kind`` query filters (``None``: all)."""
    queues = request.query_params.getlist("queue")
    if len(queues) > MAX_FILTER or any(not 0 < len(q) <= MAX_NAME_LEN for q in queues):
        raise bad_argument("queue", f"1..{MAX_FILTER} queue names of 1..{MAX_NAME_LEN} characters")
    kinds = request.query_params.getlist("kind")
    for kind in kinds:
        if kind not in KINDS:
            raise bad_argument("kind", f"one of {', '.join(KINDS)}")
    return (frozenset(queues) or None), (frozenset(kinds) or None)


async def events(request: Request) -> Response:
    """``GET /api/events?queue=&kind=``: job events as they are committed (SSE)."""
    queues, kinds = filters(request)
    await gateway_of(request).ready()
    hub = hub_of(request)
    listener = await hub.open(queues, kinds)
    return StreamingResponse(
        stream(hub, listener), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def stream(hub: EventHub, listener: Listener) -> AsyncIterator[str]:
    """The SSE body: a hello comment, then batches of events and keep-alives until the client
    goes (the response is cancelled) or the hub closes."""
    try:
        yield ": jobwire events\nretry: 2000\n\n"
        while True:
            batch = await listener.get(KEEPALIVE_S)
            if batch is None:
                return
            if not batch:
                yield ": keep-alive\n\n"
                continue
            yield "".join(text for _, text in batch)
    finally:
        hub.leave(listener)
