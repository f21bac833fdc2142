"""protocol/SPEC.md stays true: its example bytes come from the encoder, and it names everything."""

from __future__ import annotations

import re

from bench import spec_example
from protocol.codec import FrameDecoder
from protocol.errors import ErrorCode
from protocol.messages import (
    ErrorReply,
    Event,
    Reply,
    ServerEvent,
    parse_request,
    parse_server_message,
)
from protocol.operations import OPERATIONS
from protocol.replies import JOB_INFO_FIELDS, JOB_INFO_OPTIONAL, QUEUE_STATS_FIELDS

SPEC = spec_example.SPEC_PATH.read_text(encoding="utf-8")


def test_example_exchange_matches_the_encoder() -> None:
    assert spec_example.current_block(SPEC) == spec_example.render(), (
        "protocol/SPEC.md is out of date: run `.venv/bin/python -m bench.spec_example --write`"
    )


def _hex_frames(block: str) -> list[bytes]:
    """Parse the hex dump back into frames (one per blank-line-separated step)."""
    frames = []
    for step in block.split("\n\n"):
        data = bytearray()
        for line in step.splitlines():
            if re.match(r"^[0-9a-f]{8}  ", line):  # offset, then 16 bytes in columns 10..57
                data += bytes.fromhex(line[10:58].replace(" ", ""))
        frames.append(bytes(data))
    return frames


def test_example_hex_decodes_to_the_stated_exchange() -> None:
    frames = _hex_frames(spec_example.current_block(SPEC))
    steps = spec_example.exchange()
    assert len(frames) == len(steps)
    for frame, step in zip(frames, steps, strict=True):
        decoder = FrameDecoder()
        decoder.feed(frame)
        (message,) = decoder.messages()
        if step.direction == "C->B":
            request_id, op, _ = parse_request(message)
            assert (request_id, op) == (step.message[1], step.message[2])
        else:
            assert isinstance(parse_server_message(message), Reply)


def test_spec_names_every_op_code_event_and_field() -> None:
    for op in OPERATIONS:
        assert f"`{op}`" in SPEC, op
    for code in ErrorCode:
        assert f"`{code.value}`" in SPEC, code
    for event in Event:
        assert f"`{event.value}`" in SPEC, event
    for key in (*JOB_INFO_FIELDS, *JOB_INFO_OPTIONAL, *QUEUE_STATS_FIELDS):
        assert f"`{key}`" in SPEC, key


def test_the_summary_of_operations_matches_their_declarations() -> None:
    """SPEC §8's table says of each op what its declaration says: same ops, same durability."""
    summary = SPEC[SPEC.index("## 8. Operations"):SPEC.index("### 8.1")]
    waits = {}
    for line in summary.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            waits[cells[0].strip("`")] = cells[3].startswith("yes")
    assert waits == {name: op.after_commit for name, op in OPERATIONS.items()}


def test_error_and_event_shapes_in_spec_parse() -> None:
    assert parse_server_message((2, 7, "NOT_FOUND", "no job '1'")) == ErrorReply(
        7, "NOT_FOUND", "no job '1'"
    )
    assert parse_server_message((3, "draining", {})) == ServerEvent("draining", {})


def test_limits_section_states_the_code_constants() -> None:
    from protocol import checks, codec

    limits = SPEC[SPEC.index("## 12. Limits"):SPEC.index("## 13.")]
    for value in (
        checks.MAX_BATCH, checks.MAX_RESERVE_QUEUES, checks.MAX_RESERVE_JOBS,
        checks.MAX_WAIT_MS, checks.MIN_LEASE_MS, checks.MAX_LEASE_MS,
        checks.MAX_DELAY_MS, checks.MAX_ATTEMPTS, checks.MAX_ERROR_LEN,
        checks.MAX_LIST_LIMIT, checks.MAX_VALUE_DEPTH, checks.MAX_NAME_LEN,
        codec.MAX_ARRAY_ITEMS, codec.MAX_MAP_ITEMS,
    ):
        assert f"{value:,}" in limits, value
    assert f"{codec.DEFAULT_MAX_FRAME:,}" in SPEC
    assert f"{codec.MAX_DEPTH:,}" in SPEC
