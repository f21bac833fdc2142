"""A raw protocol connection for tests: speaks ``protocol/`` directly, independent of ``client/``.

``WireClient`` writes request frames and reads every broker message into one ordered list
(``received``), resolving a future per request id, so a test can pipeline requests, look at the
order replies came back in, and collect server events. It does no reconnecting, retrying or
validation of its own: what the broker sends is what the test sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

from protocol.codec import FrameDecoder, encode_frame, encode_frames
from protocol.messages import PROTOCOL_VERSION, ErrorReply, Reply, ServerEvent, parse_server_message

Answer = Reply | ErrorReply


class WireError(AssertionError):
    """The broker answered a request with an ERROR message when the test expected a reply."""

    def __init__(self, error: ErrorReply) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.code = error.code
        self.message = error.message


class WireClient:
    """One TCP connection speaking jobwire frames.

    Use ``await WireClient.connect(host, port)`` (sends ``hello`` unless ``hello=False``) and
    ``await client.close()``.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.received: list[Reply | ErrorReply | ServerEvent] = []
        self.events: asyncio.Queue[ServerEvent] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.hello: dict[str, Any] = {}
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Answer]] = {}
        self._decoder = FrameDecoder(1 << 30)
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop())

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        hello: bool = True,
        token: str | None = None,
        version: int = PROTOCOL_VERSION,
    ) -> WireClient:
        reader, writer = await asyncio.open_connection(host, port)
        client = cls(reader, writer)
        if hello:
            client.hello = await client.ok(
                "hello", {"version": version, "client": "tests", "token": token}
            )
        return client

    async def _read_loop(self) -> None:
        try:
            while data := await self.reader.read(1 << 16):
                self._decoder.feed(data)
                for message in self._decoder.messages():
                    self._dispatch(parse_server_message(message))
        except ConnectionError:
            pass
        finally:
            self.closed.set()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("connection closed"))
                    future.exception()  # retrieved: a test that never asks is not an error

    def _dispatch(self, message: Reply | ErrorReply | ServerEvent) -> None:
        self.received.append(message)
        if isinstance(message, ServerEvent):
            self.events.put_nowait(message)
            return
        future = self._pending.get(message.request_id)
        if future is not None and not future.done():
            future.set_result(message)

    # ------------------------------------------------------------------ sending

    def send(self, op: str, args: dict[str, Any], request_id: int | None = None) -> int:
        """Write one request frame without waiting; returns its request id."""
        rid = next(self._ids) if request_id is None else request_id
        self._pending[rid] = future = asyncio.get_running_loop().create_future()
        if self.closed.is_set():  # the read loop ended: nothing would ever resolve the future
            future.set_exception(ConnectionError("connection closed"))
            future.exception()  # retrieved: a test that never asks is not an error
        self.writer.write(encode_frame([0, rid, op, args]))
        return rid

    def send_many(self, requests: list[tuple[str, dict[str, Any]]]) -> list[int]:
        """Write many request frames in one write; returns their request ids."""
        loop = asyncio.get_running_loop()
        ids = []
        messages = []
        for op, args in requests:
            rid = next(self._ids)
            self._pending[rid] = future = loop.create_future()
            if self.closed.is_set():
                future.set_exception(ConnectionError("connection closed"))
                future.exception()
            ids.append(rid)
            messages.append([0, rid, op, args])
        self.writer.write(encode_frames(messages))
        return ids

    def send_raw(self, data: bytes) -> None:
        """Write arbitrary bytes (malformed frames, partial frames)."""
        self.writer.write(data)

    def answered(self, request_id: int) -> bool:
        """Whether the answer to a request has arrived (and was not taken yet)."""
        future = self._pending.get(request_id)
        return future is not None and future.done()

    async def answer(self, request_id: int, within: float = 30.0) -> Answer:
        """Take the reply or error for a request sent earlier (each answer can be taken once)."""
        future = self._pending[request_id]
        if not future.done():
            await asyncio.wait_for(asyncio.shield(future), within)
        del self._pending[request_id]
        return future.result()

    async def call(self, op: str, args: dict[str, Any], within: float = 30.0) -> Answer:
        """Send one request and wait for its answer (reply or error)."""
        return await self.answer(self.send(op, args), within)

    async def ok(self, op: str, args: dict[str, Any], within: float = 30.0) -> dict[str, Any]:
        """Send one request and return its reply body.

        Raises:
            WireError: the broker answered with an ERROR message.
        """
        answer = await self.call(op, args, within)
        if isinstance(answer, ErrorReply):
            raise WireError(answer)
        return answer.body

    async def error(self, op: str, args: dict[str, Any], within: float = 30.0) -> ErrorReply:
        """Send one request that must fail; return the error."""
        answer = await self.call(op, args, within)
        assert isinstance(answer, ErrorReply), f"expected an error, got {answer!r}"
        return answer

    async def next_event(self, within: float = 30.0) -> ServerEvent:
        return await asyncio.wait_for(self.events.get(), within)

    async def wait_closed(self, within: float = 30.0) -> None:
        """Wait until the broker closed the connection."""
        await asyncio.wait_for(self.closed.wait(), within)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader_task

    # ------------------------------------------------------------------ shortcuts

    async def enqueue(self, queue: str, *jobs: list[Any]) -> dict[str, Any]:
        """Enqueue wire-form jobs (``[id, name, payload, ...]``)."""
        return await self.ok("enqueue", {"queue": queue, "jobs": list(jobs)})

    async def reserve(self, *queues: str, max_jobs: int = 1, wait_ms: int = 0,
                      lease_ms: int | None = None, within: float = 30.0) -> list[tuple[Any, ...]]:
        """Reserve; returns the raw job arrays (see ``protocol.ReservedJob`` for the order)."""
        body = await self.ok("reserve", {"queues": list(queues), "max": max_jobs,
                                         "wait_ms": wait_ms, "lease_ms": lease_ms}, within)
        return list(body["jobs"])

    async def ack(self, *items: list[Any]) -> list[tuple[str, Any]]:
        body = await self.ok("ack", {"items": list(items)})
        return list(body["results"])

    async def get(self, job_id: str) -> dict[str, Any]:
        body = await self.ok("get", {"id": job_id})
        job: dict[str, Any] = body["job"]
        return job


JOB_OPTION_FIELDS = ("priority", "delay_ms", "run_at_ms", "max_attempts", "backoff", "lease_ms",
                     "keep_completed", "keep_failed", "timeout_ms")
"""The optional items of a wire job, in order (see ``protocol.JobSpec``)."""

# Indexes into a reserved job array (``protocol.ReservedJob``).
R_ID, R_QUEUE, R_NAME, R_PAYLOAD, R_ATTEMPT, R_MAX_ATTEMPTS, R_TOKEN = range(7)


def job_spec(job_id: str | None = None, name: str = "task", payload: bytes = b"p",
             **options: Any) -> list[Any]:
    """One enqueue item in wire form: ``[id, name, payload, priority?, delay_ms?, ...]``."""
    unknown = set(options) - set(JOB_OPTION_FIELDS)
    assert not unknown, f"unknown job options {unknown}"
    wire: list[Any] = [job_id, name, payload, *(options.get(f) for f in JOB_OPTION_FIELDS)]
    while len(wire) > 3 and wire[-1] is None:
        wire.pop()
    return wire
