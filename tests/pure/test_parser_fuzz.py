"""Fuzz that reaches the request parser (issue 18, item 5). Pure: no socket, no thread.

The byte-level fuzz tests mostly die at the length prefix or in msgpack, so the parser behind
them was rarely reached. Here every example is a well-framed msgpack request with a valid
envelope ``[0, id, op, args]`` whose body is mutated: wrong field types, extra and missing keys,
huge ints, deep nesting, unknown ops. Each goes through the broker's own path (the strict
``FrameDecoder``, then ``parse_request``), which must either accept it or refuse it with a
protocol error code, never raise anything else. A counter shows most examples reach the parser.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgpack
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from protocol.codec import FrameDecoder, encode_frame
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import parse_request
from tests.process.test_hostile import _example_args

EXAMPLES = _example_args()
ALLOWED = {ErrorCode.BAD_ARGUMENT, ErrorCode.UNKNOWN_OP, ErrorCode.PAYLOAD_TOO_LARGE}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=True),
    st.text(max_size=20), st.binary(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


def deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def mutated_requests(draw: st.DrawFn) -> tuple[list[Any], str]:
    op = draw(st.sampled_from(sorted(EXAMPLES)) | st.text(max_size=12))
    args = dict(EXAMPLES.get(op, {}))
    mutation = draw(st.sampled_from(["none", "drop", "extra", "replace", "huge", "deep"]))
    keys = sorted(args)
    if mutation == "drop" and keys:
        args.pop(draw(st.sampled_from(keys)))
    elif mutation == "extra":
        args[draw(st.text(min_size=1, max_size=10))] = draw(values)
    elif mutation in ("replace", "huge", "deep") and keys:
        key = draw(st.sampled_from(keys))
        if mutation == "replace":
            args[key] = draw(values)
        elif mutation == "huge":
            args[key] = draw(st.sampled_from([2**64 - 1, -(2**63), 2**53 + 1, 2**31]))
        else:
            args[key] = deep(draw(st.integers(30, 200)))
    request_id = draw(st.integers(0, 2**32 - 1))
    return [0, request_id, op, args], mutation


def test_most_mutated_requests_reach_the_parser() -> None:
    outcomes: Counter[str] = Counter()

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(mutated_requests())
    def run(case: tuple[list[Any], str]) -> None:
        message, mutation = case
        try:
            frame = encode_frame(message)
        except (OverflowError, ValueError, TypeError):  # msgpack cannot hold it: not a frame
            outcomes["unencodable"] += 1
            return
        decoder = FrameDecoder(max_frame=1 << 20)
        decoder.feed(frame)
        try:
            decoded = decoder.next_message()
        except ProtocolError as exc:  # e.g. nesting beyond the decoder's depth
            assert exc.code is ErrorCode.BAD_FRAME, exc
            outcomes["decoder"] += 1
            return
        assert decoded is not None
        outcomes["parser"] += 1
        event(f"reached the parser ({mutation})")
        try:
            parse_request(decoded)
        except ProtocolError as exc:
            assert exc.code in ALLOWED, (message, exc)
            outcomes["refused"] += 1
        else:
            outcomes["accepted"] += 1

    run()
    total = sum(outcomes[k] for k in ("unencodable", "decoder", "parser"))
    assert outcomes["parser"] >= 0.8 * total, outcomes
    assert outcomes["refused"] > 0 and outcomes["accepted"] > 0, outcomes


def test_a_body_that_is_valid_msgpack_but_not_a_request_is_a_bad_frame() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame([0, 1, "ping"]))  # three items, not four
    message = decoder.next_message()
    try:
        parse_request(message)
    except ProtocolError as exc:
        assert exc.code is ErrorCode.BAD_FRAME
    else:
        raise AssertionError("accepted a request without args")
    assert msgpack.unpackb(encode_frame([1])[4:]) == [1]
