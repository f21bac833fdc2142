"""Atheris fuzz target: the frame decoder, request validation and the session's dispatcher.

Run it (coverage-guided, until stopped or for a number of runs)::

    .venv/bin/python -m tests.tools.fuzz_decoder -atheris_runs=200000 [corpus_dir]

Each input drives one broker ``Session`` (the real class, with a real ``Server`` and ``Core``)
through a byte-collecting transport: the first byte chooses whether a valid ``hello`` goes first
and how the rest is split into ``data_received`` calls; the rest is the byte stream. Invariants
checked for every input (a violation raises, which atheris reports as a crash):

1. no exception escapes ``data_received``: the session turns everything into protocol errors;
2. every byte the session writes decodes as REPLY, ERROR or EVENT messages;
3. no answer carries ``INTERNAL`` (a bug in the broker).

``fuzz_one`` is also called by ``tests/process/test_hostile.py`` on hypothesis inputs, so the
target is exercised in CI without atheris. The journal is opened but never written: the
committer's task is not running, so the target stays fast and touches no disk per input.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from broker.config import Settings
from broker.core import Core
from broker.core_config import core_config
from broker.journal import Journal
from broker.log import configure_logging
from broker.server import Server
from protocol.codec import FrameDecoder, encode_frame
from protocol.messages import PROTOCOL_VERSION, ErrorReply, ServerEvent, parse_server_message

SETTINGS = Settings(max_frame=64 * 1024, max_payload=16 * 1024, max_inflight=64)
HELLO = encode_frame([0, 0, "hello", {"version": PROTOCOL_VERSION, "client": "fuzz"}])


class CollectingTransport(asyncio.Transport):
    """The transport side of one fuzzed connection: keeps what the session writes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0  # every write is taken at once (the output budget asks)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Target:
    """One opened journal (never written) and the code that runs one input."""

    def __init__(self) -> None:
        self._directory = tempfile.TemporaryDirectory(prefix="jobwire-fuzz-")
        self.loop = asyncio.new_event_loop()
        path = Path(self._directory.name) / "jobwire.db"
        self.journal = self.loop.run_until_complete(Journal.open(path))

    def run(self, data: bytes) -> None:
        self.loop.run_until_complete(self._one(data))
        for handle in list(getattr(self.loop, "_scheduled", ())):  # parked timers of this input
            handle.cancel()

    async def _one(self, data: bytes) -> None:
        if not data:
            return
        control, stream = data[0], data[1:]
        if control & 1:
            stream = HELLO + stream
        core = Core(core_config(SETTINGS), rng=random.Random(0), token_base=1 << 40)
        server = Server(SETTINGS, core, self.journal, clock=lambda: 1_700_000_000_000)
        session = server.new_session()
        transport = CollectingTransport()
        session.connection_made(transport)
        step = 1 + (control >> 1) * 4  # chunk sizes 1..509: any split decodes the same
        for start in range(0, len(stream), step):
            session.data_received(stream[start:start + step])
        await asyncio.sleep(0)  # let call_soon flushes run
        session.connection_lost(None)
        check_output(bytes(transport.written))


def check_output(written: bytes) -> None:
    """Every written byte is a valid server message, and none is an ``INTERNAL`` error."""
    decoder = FrameDecoder(1 << 30)
    decoder.feed(written)
    for raw in decoder.messages():
        message = parse_server_message(raw)
        code: Any
        if isinstance(message, ErrorReply):
            code = message.code
        elif isinstance(message, ServerEvent):
            code = message.body.get("code")
        else:
            code = None
        if code == "INTERNAL":
            raise AssertionError(f"INTERNAL error: {message}")
    if decoder.buffered:
        raise AssertionError(f"{decoder.buffered} bytes written that are not a whole frame")


_target: Target | None = None


def fuzz_one(data: bytes) -> None:
    """Run one fuzz input (the atheris entry point; also used by the hypothesis tests)."""
    global _target
    if _target is None:
        _target = Target()
    _target.run(data)


def close_target() -> None:
    """Close the shared target's journal and loop (an open SQLite thread blocks exit)."""
    global _target
    if _target is not None:
        target, _target = _target, None
        target.loop.run_until_complete(target.journal.close())
        target.loop.close()
        target._directory.cleanup()


def main() -> None:
    """Start atheris on ``fuzz_one`` with the command line's libFuzzer options."""
    import atheris  # type: ignore[import-untyped,unused-ignore]  # optional: pip install atheris

    configure_logging("error")  # one line per input would drown the fuzzer's own output

    atheris.instrument_all()  # coverage feedback from every module imported above
    atheris.Setup(sys.argv, fuzz_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
