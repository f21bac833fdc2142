"""Framing and decoding: any split decodes alike, limits hold, bad input is only ProtocolError."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.codec import (
    DEFAULT_MAX_FRAME,
    MAPS_BASE,
    MAPS_PER_BYTE,
    MAX_ARRAY_ITEMS,
    MAX_MAP_ITEMS,
    FrameDecoder,
    FrameEncoder,
    decode_body,
    encode_frame,
    encode_frames,
)
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import parse_request, reply_message, request_message
from protocol.operations import Request
from tests.tools import strategies as s


def frame(body: bytes) -> bytes:
    """A frame around raw body bytes (bypassing the encoder)."""
    return struct.pack(">I", len(body)) + body


def decode_all(data: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> list[Any]:
    decoder = FrameDecoder(max_frame)
    decoder.feed(data)
    return decoder.messages()


def refused(data: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> ProtocolError:
    """Feed ``data`` and take messages; return the ProtocolError this must raise."""
    decoder = FrameDecoder(max_frame)
    with pytest.raises(ProtocolError) as caught:
        decoder.feed(data)
        decoder.messages()
    return caught.value


def _messages() -> st.SearchStrategy[Any]:
    requests = st.tuples(s.request_ids, s.requests()).map(lambda t: request_message(*t))
    replies = st.tuples(s.request_ids, s.reply_bodies()).map(
        lambda t: reply_message(t[0], t[1][1])
    )
    return st.one_of(requests, replies)


# --------------------------------------------------------------------------- splits


@given(st.lists(_messages(), min_size=1, max_size=6), st.data())
def test_any_split_decodes_identically(messages: list[Any], data: st.DataObject) -> None:
    stream = encode_frames(messages)
    whole = decode_all(stream)
    assert len(whole) == len(messages)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=20), label="cuts"))
    decoder = FrameDecoder()
    got: list[Any] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        decoder.feed(stream[start:cut])
        got.extend(decoder.messages())
        start = cut
    assert got == whole
    assert decoder.buffered == 0


@given(st.lists(_messages(), min_size=1, max_size=3))
def test_one_byte_at_a_time(messages: list[Any]) -> None:
    stream = encode_frames(messages)
    decoder = FrameDecoder()
    got: list[Any] = []
    for i in range(len(stream)):
        decoder.feed(stream[i : i + 1])
        got.extend(decoder.messages())
        if i < len(stream) - 1:
            assert len(got) < len(messages)
    assert got == decode_all(stream)


@given(st.lists(_messages(), max_size=5))
def test_encode_frames_is_concatenated_encode_frame(messages: list[Any]) -> None:
    assert encode_frames(messages) == b"".join(encode_frame(m) for m in messages)


@given(st.lists(_messages(), max_size=5))
def test_a_reused_frame_encoder_matches_encode_frame(messages: list[Any]) -> None:
    encoder = FrameEncoder()
    with contextlib.suppress(TypeError):
        encoder.frame(object())  # a failed pack must not leave bytes behind in the packer
    assert [encoder.frame(m) for m in messages] == [encode_frame(m) for m in messages]
    assert encoder.frames(messages) == encode_frames(messages)


def test_many_frames_in_one_feed_are_each_checked() -> None:
    good = encode_frame([0, 1, "ping", {}])
    decoder = FrameDecoder(max_frame=64)
    decoder.feed(good * 50 + good[:2])  # 50 frames and half a prefix
    assert decoder.messages() == [(0, 1, "ping", {})] * 50
    # The feed that completes the bad prefix drops it and all after it at once...
    decoder.feed(good[2:] + struct.pack(">I", 65) + b"x" * 10)
    assert decoder.buffered == len(good)
    assert decoder.next_message() == (0, 1, "ping", {})  # ...the frame before it is still handled
    with pytest.raises(ProtocolError) as caught:
        decoder.next_message()
    assert caught.value.code is ErrorCode.FRAME_TOO_LARGE
    assert decoder.buffered == 0


def test_lenient_decoding_keeps_every_other_rule() -> None:
    body = b"\x92\x82\xa1k\x01\xa1k\x02\x01"  # [{"k": 1, "k": 2}, 1]
    with pytest.raises(ProtocolError):
        decode_body(body)
    assert decode_body(body, strict=False) == ({"k": 2}, 1)
    for bad in (b"\xc1", b"\x91\xd4\x01\x00", b"\x92\x01"):  # never used, ext, short array
        with pytest.raises(ProtocolError):
            decode_body(bad, strict=False)


@given(s.request_ids, s.requests())
def test_request_survives_byte_at_a_time_feeding(request_id: int, request: Request) -> None:
    decoder = FrameDecoder()
    for byte in encode_frame(request_message(request_id, request)):
        assert decoder.next_message() is None
        decoder.feed(bytes([byte]))
    message = decoder.next_message()
    assert parse_request(message)[2] == request
    assert decoder.next_message() is None


def test_feed_accepts_bytearray_and_memoryview() -> None:
    data = encode_frames([[0, 1, "ping", {}], [0, 2, "ping", {}]])
    decoder = FrameDecoder()
    decoder.feed(bytearray(data[:7]))
    decoder.feed(memoryview(data)[7:])
    assert decoder.messages() == [(0, 1, "ping", {}), (0, 2, "ping", {})]


def test_incomplete_frame_waits_for_more() -> None:
    data = encode_frame([0, 1, "ping", {}])
    decoder = FrameDecoder()
    decoder.feed(data[:-1])
    assert decoder.messages() == []
    assert decoder.buffered == len(data) - 1
    decoder.feed(data[-1:])
    assert decoder.messages() == [(0, 1, "ping", {})]


# --------------------------------------------------------------------------- the length prefix


@pytest.mark.parametrize("length", [17, 18, 1 << 20, 2**31, 2**32 - 1])
def test_oversize_prefix_is_refused_at_the_prefix(length: int) -> None:
    decoder = FrameDecoder(max_frame=16)
    prefix = struct.pack(">I", length)
    decoder.feed(prefix[:3])  # not yet a whole prefix: nothing to judge
    decoder.feed(prefix[3:])  # the fourth byte completes it: refused before any body byte
    assert decoder.buffered == 0
    with pytest.raises(ProtocolError) as caught:
        decoder.next_message()
    assert caught.value.code is ErrorCode.FRAME_TOO_LARGE
    for later in (b"", b"x" * 10):  # poisoned: the stream cannot be resynchronised
        with pytest.raises(ProtocolError) as again:
            decoder.feed(later)
        assert again.value.code is ErrorCode.FRAME_TOO_LARGE
    with pytest.raises(ProtocolError):
        decoder.next_message()


def test_default_cap_plus_one_is_refused() -> None:
    error = refused(struct.pack(">I", DEFAULT_MAX_FRAME + 1))
    assert error.code is ErrorCode.FRAME_TOO_LARGE
    assert str(DEFAULT_MAX_FRAME) in error.message


def test_oversize_prefix_after_good_frames_still_yields_them_first() -> None:
    good = encode_frame([0, 1, "ping", {}])
    decoder = FrameDecoder(max_frame=64)
    decoder.feed(good)
    decoder.feed(good + struct.pack(">I", 65))
    assert decoder.next_message() == decoder.next_message() == (0, 1, "ping", {})
    with pytest.raises(ProtocolError) as caught:
        decoder.next_message()
    assert caught.value.code is ErrorCode.FRAME_TOO_LARGE


def test_frame_of_exactly_the_cap_is_accepted() -> None:
    body = msgpack.packb([b"x" * 12])  # fixarray 1 + bin 8: 3 header bytes + 12
    assert len(body) == 15
    assert decode_all(frame(body), max_frame=15) == [(b"x" * 12,)]
    assert refused(frame(body), max_frame=14).code is ErrorCode.FRAME_TOO_LARGE


def test_prefix_zero_is_bad_frame() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\x00\x00\x00\x00")
    with pytest.raises(ProtocolError) as caught:
        decoder.next_message()
    assert caught.value.code is ErrorCode.BAD_FRAME


@pytest.mark.parametrize("max_frame", [0, -1, 2**32])
def test_max_frame_must_fit_the_prefix(max_frame: int) -> None:
    with pytest.raises(ValueError):
        FrameDecoder(max_frame)


# --------------------------------------------------------------------------- bad bodies

NESTED_TOO_DEEP = b"\x91" * 5000 + b"\xc0"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"\xc1", "never-used byte"),
        (b"\x93\x01\x02", "truncated array"),
        (b"\xa5abc", "truncated str"),
        (b"\xc4\x05ab", "truncated bin"),
        (b"\xcd\x01", "truncated uint16"),
        (b"\x01\x02", "two messages in one frame"),
        (b"\xc0\xc0\xc0", "trailing bytes"),
        (NESTED_TOO_DEEP, "nested 5000 deep"),
        (b"\xd4\x05\x00", "fixext 1"),
        (b"\xc7\x03\x07abc", "ext 8"),
        (msgpack.packb(msgpack.ExtType(1, b"data")), "ext type 1"),
        (msgpack.packb(msgpack.Timestamp(1, 0)), "timestamp ext"),
        (b"\xd6\xff\x00\x00\x00\x01", "timestamp 32"),
        (b"\x81\x01\x02", "int key"),
        (b"\x81\xc4\x01k\x01", "bin key"),
        (b"\x81\xc0\x01", "nil key"),
        (b"\x81\xc3\x01", "bool key"),
        (b"\x81\xcb" + b"\x00" * 8 + b"\x01", "float key"),
        (b"\x81\x91\x01\x01", "array key"),
        (b"\x81\x80\x01", "map key"),
        (b"\x82\xa1a\x01\xa1a\x02", "repeated key"),
        (b"\x91\x81\x01\x02", "int key, nested"),
        (b"\xa2\xc3\x28", "invalid UTF-8"),
        (b"\xa3\xed\xa0\x80", "UTF-8 surrogate"),
        (b"\x81\xa2\xff\xfe\x01", "invalid UTF-8 key"),
        (b"\xdd\xff\xff\xff\xff", "array claims 2**32-1 items"),
        (b"\xdf\xff\xff\xff\xff", "map claims 2**32-1 pairs"),
        (b"\xdb\xff\xff\xff\xff", "str claims 4 GiB"),
        (b"\xc6\xff\xff\xff\xff", "bin claims 4 GiB"),
        (b"\xdc\x00\x10" + b"\x00" * 3, "array claims more items than bytes"),
    ],
)
def test_bad_body_is_bad_frame(body: bytes, why: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_body(body)
    assert caught.value.code is ErrorCode.BAD_FRAME, why
    error = refused(frame(body))
    assert error.code is ErrorCode.BAD_FRAME


@pytest.mark.parametrize("value", [None, 0, "ping", b"", {}, 1.5, True])
def test_a_message_must_be_an_array(value: Any) -> None:
    assert refused(frame(msgpack.packb(value))).code is ErrorCode.BAD_FRAME


def test_nil_frame_does_not_hide_the_frames_after_it() -> None:
    decoder = FrameDecoder()
    decoder.feed(frame(b"\xc0") + encode_frame([0, 1, "ping", {}]))
    with pytest.raises(ProtocolError) as caught:
        decoder.next_message()
    assert caught.value.code is ErrorCode.BAD_FRAME


def test_bad_frame_poisons_the_decoder() -> None:
    decoder = FrameDecoder()
    decoder.feed(frame(b"\xc1") + encode_frame([0, 1, "ping", {}]))
    for _ in range(2):
        with pytest.raises(ProtocolError) as caught:
            decoder.next_message()
        assert caught.value.code is ErrorCode.BAD_FRAME
    with pytest.raises(ProtocolError):
        decoder.feed(b"more")


def test_frames_before_a_bad_one_are_delivered() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame([0, 1, "ping", {}]) + frame(b"\xc1"))
    assert decoder.next_message() == (0, 1, "ping", {})
    with pytest.raises(ProtocolError):
        decoder.next_message()


def test_deep_but_allowed_nesting_decodes() -> None:
    assert decode_body(b"\x91" * 64 + b"\xc0") is not None


def test_container_limits_are_capped() -> None:
    big = msgpack.packb([[None] * (MAX_ARRAY_ITEMS + 1)])
    assert refused(frame(big)).code is ErrorCode.BAD_FRAME
    wide = msgpack.packb([{f"k{i}": None for i in range(MAX_MAP_ITEMS + 1)}])
    assert refused(frame(wide)).code is ErrorCode.BAD_FRAME
    assert len(decode_body(msgpack.packb([None] * MAX_ARRAY_ITEMS))) == MAX_ARRAY_ITEMS


def test_a_frame_of_tiny_maps_is_refused() -> None:
    body = b"\xdc\x27\x10" + b"\x80" * 10_000  # an array of 10,000 empty maps
    assert refused(frame(body)).code is ErrorCode.BAD_FRAME
    def maps(n: int) -> bytes:  # array16 of n empty maps: 3 + n bytes
        return b"\xdc" + n.to_bytes(2, "big") + b"\x80" * n

    most = max(n for n in range(1_000) if n <= MAPS_BASE + (3 + n) // MAPS_PER_BYTE)
    assert len(decode_body(maps(most))) == most
    with pytest.raises(ProtocolError):
        decode_body(maps(most + 1))


def test_a_full_list_failed_reply_decodes() -> None:
    info = {key: 1 for key in ("id", "queue", "name", "state", "priority", "attempts",
                               "max_attempts", "payload", "progress", "result", "error",
                               "created_at", "run_at", "started_at", "finished_at",
                               "lease_deadline")}
    info["progress"] = {"step": {"a": 1}}
    message = [1, 7, {"jobs": [info] * 1_000, "total": 1_000}]
    assert decode_all(encode_frame(message))[0][2]["total"] == 1_000


def test_decoded_types() -> None:
    value = decode_body(msgpack.packb({"a": [1, b"b", "c", None, True, 1.5, {"d": []}]}))
    assert value == {"a": (1, b"b", "c", None, True, 1.5, {"d": ()})}
    assert decode_body(msgpack.packb(2**64 - 1)) == 2**64 - 1
    assert decode_body(msgpack.packb(-(2**63))) == -(2**63)
    assert decode_body(b"\xca\x3f\xc0\x00\x00") == 1.5  # float 32


# --------------------------------------------------------------------------- fuzz


@given(st.binary(max_size=300), st.integers(1, 64))
def test_arbitrary_bytes_raise_only_protocol_error(data: bytes, chunk: int) -> None:
    decoder = FrameDecoder(max_frame=1024)
    try:
        for i in range(0, len(data), chunk):
            decoder.feed(data[i : i + chunk])
            for message in decoder.messages():
                with contextlib.suppress(ProtocolError):
                    parse_request(message)
    except ProtocolError as exc:
        assert exc.code in (ErrorCode.BAD_FRAME, ErrorCode.FRAME_TOO_LARGE)


@given(st.binary(min_size=1, max_size=200))
def test_arbitrary_bodies_raise_only_protocol_error(body: bytes) -> None:
    try:
        message = decode_body(body)
    except ProtocolError as exc:
        assert exc.code is ErrorCode.BAD_FRAME
        return
    with contextlib.suppress(ProtocolError):
        parse_request(message)


@given(s.any_msgpack())
def test_arbitrary_msgpack_values_raise_only_protocol_error(value: Any) -> None:
    try:
        (message,) = decode_all(frame(msgpack.packb(value)))
    except ProtocolError as exc:
        assert exc.code is ErrorCode.BAD_FRAME
        return
    for candidate in (message, (0, 1, "enqueue", message), (0, 1, "reserve", message)):
        with contextlib.suppress(ProtocolError):
            parse_request(candidate)


@given(st.sampled_from(sorted(s.requests_by_op)), s.any_msgpack(), s.request_ids)
def test_arbitrary_args_raise_only_protocol_error(op: str, args: Any, request_id: int) -> None:
    try:
        message = decode_all(encode_frame([0, request_id, op, args]))[0]
    except ProtocolError as exc:
        assert exc.code is ErrorCode.BAD_FRAME
        return
    try:
        assert parse_request(message)[:2] == (request_id, op)
    except ProtocolError as exc:
        assert exc.code is ErrorCode.BAD_ARGUMENT


@given(s.requests(), s.request_ids, st.data())
def test_mutated_requests_raise_only_protocol_error(
    request: Request, request_id: int, data: st.DataObject
) -> None:
    wire = bytearray(encode_frame(request_message(request_id, request)))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(4, len(wire) - 1))
        wire[index] = data.draw(st.integers(0, 255))
    try:
        for message in decode_all(bytes(wire)):
            parse_request(message)
    except ProtocolError:
        pass
