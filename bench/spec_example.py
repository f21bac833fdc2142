"""Generate the example exchange of ``protocol/SPEC.md`` from the real encoder.

The hex dump in the spec is produced here, from ``protocol``'s own message builders and
``encode_frame``, so it shows exactly the bytes jobwire puts on the wire.
``tests/pure/test_spec.py`` checks that the block in ``SPEC.md`` equals ``render()``, so the spec
cannot drift from the code.

Usage::

    .venv/bin/python -m bench.spec_example            # print the block
    .venv/bin/python -m bench.spec_example --write    # rewrite the block inside protocol/SPEC.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Final, NamedTuple

from protocol.codec import encode_frame
from protocol.messages import PROTOCOL_VERSION, reply_message, request_message
from protocol.model import AckItem, JobSpec
from protocol.operations import Ack, Enqueue, Hello, Reserve
from protocol.replies import Outcome, ReservedJob

SPEC_PATH: Final = Path(__file__).resolve().parent.parent / "protocol" / "SPEC.md"
BEGIN: Final = "<!-- BEGIN GENERATED EXCHANGE (python -m bench.spec_example --write) -->"
END: Final = "<!-- END GENERATED EXCHANGE -->"

NOW: Final = 1_767_225_600_000
"""2026-01-01T00:00:00Z in ms: the broker's clock in the example."""
TOKEN: Final = 0x1F2E3D4C5B6A7901
"""A lease token as a broker makes them (a random 62-bit base plus a counter)."""


class Step(NamedTuple):
    direction: str
    """``"C->B"`` (client to broker) or ``"B->C"``."""
    title: str
    message: Any


def exchange() -> list[Step]:
    """The example: hello, enqueue one job, reserve it, ack it; each request with its reply."""
    job = ReservedJob(
        job_id="1", queue="emails", name="send", payload=b"hello", attempt=1, max_attempts=3,
        token=TOKEN, lease_ms=30_000, lease_deadline_ms=NOW + 30_000, created_at_ms=NOW,
        progress=None,
    )
    return [
        Step("C->B", "hello (request id 1)",
             request_message(1, Hello(PROTOCOL_VERSION, "example", "s3cret"))),
        Step("B->C", "reply to 1", reply_message(1, {
            "version": PROTOCOL_VERSION, "server": "jobwire/0.1.0", "now": NOW,
            "max_frame": 8 * 1024 * 1024, "max_payload": 1024 * 1024, "max_batch": 10_000,
            "max_inflight": 4096,
        })),
        Step("C->B", "enqueue one job (request id 2)",
             request_message(2, Enqueue("emails", (JobSpec(None, "send", b"hello"),)))),
        Step("B->C", "reply to 2 (after the commit)",
             reply_message(2, {"ids": ["1"], "duplicates": []})),
        Step("C->B", "reserve up to 10 jobs, long-poll 5 s (request id 3)",
             request_message(3, Reserve(("emails",), 10, 5_000, None))),
        Step("B->C", "reply to 3", reply_message(3, {"jobs": [job]})),
        Step("C->B", "ack with a result (request id 4)",
             request_message(4, Ack((AckItem("1", TOKEN, b"ok"),)))),
        Step("B->C", "reply to 4 (after the commit)",
             reply_message(4, {"results": [Outcome("OK", "completed")]})),
    ]


def notation(value: Any) -> str:
    """A readable rendering of a message: msgpack types spelled out, bin as ``bin(hex)``."""
    if value is None:
        return "nil"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, bytes):
        return f"bin({value.hex()})"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{notation(k)}: {notation(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(notation(v) for v in value) + "]"
    raise TypeError(f"cannot render {type(value).__name__}")


def hexdump(data: bytes) -> str:
    """``xxd``-style lines: offset, 16 bytes in hex (two groups of 8), then printable ASCII."""
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        left = " ".join(f"{b:02x}" for b in chunk[:8])
        right = " ".join(f"{b:02x}" for b in chunk[8:])
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{offset:08x}  {left:<23}  {right:<23}  |{text}|")
    return "\n".join(lines)


def render() -> str:
    """The Markdown block that sits between ``BEGIN`` and ``END`` in ``SPEC.md``."""
    parts: list[str] = []
    for step in exchange():
        frame = encode_frame(step.message)
        parts.append(
            f"{step.direction}  {step.title}: {len(frame)} bytes "
            f"(prefix {frame[:4].hex(' ')}, body {len(frame) - 4} bytes)\n"
            f"    {notation(step.message)}\n"
            f"{hexdump(frame)}\n"
        )
    return "```text\n" + "\n".join(parts) + "```"


def current_block(text: str) -> str:
    """The block now between the markers in ``text``.

    Raises:
        ValueError: the markers are missing.
    """
    start = text.index(BEGIN) + len(BEGIN)
    end = text.index(END, start)
    return text[start:end].strip("\n")


def write(path: Path = SPEC_PATH) -> bool:
    """Rewrite the block in ``path``; returns whether anything changed."""
    text = path.read_text(encoding="utf-8")
    start = text.index(BEGIN) + len(BEGIN)
    end = text.index(END, start)
    new = text[:start] + "\n" + render() + "\n" + text[end:]
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--write", action="store_true", help=f"rewrite the block in {SPEC_PATH}")
    args = parser.parse_args(argv)
    if args.write:
        print("updated" if write() else "already up to date", SPEC_PATH)
    else:
        print(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
