"""Hostile input over real TCP against a real ``jobwire serve`` process.

Random bytes, truncated frames, length prefixes of 0, cap+1 and 2^32-1, deep nesting, ext types,
non-string keys, a wrong type in every field of every op, and requests before the handshake. The
broker must answer each with a protocol error (never ``INTERNAL``, never a crash), keep serving a
control connection, and keep its memory per connection within about twice the frame cap.

The hypothesis tests share one broker process (module fixture); each example opens its own
connection, sends its bytes, half-closes and reads everything the broker answers.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.codec import FrameDecoder, encode_frame, encode_frames
from protocol.messages import (
    PROTOCOL_VERSION,
    ErrorReply,
    Reply,
    ServerEvent,
    parse_server_message,
    request_message,
)
from protocol.operations import OPERATIONS
from tests.conftest import BrokerProcess
from tests.tools.fuzz_decoder import close_target, fuzz_one
from tests.tools.strategies import any_msgpack, requests

MAX_FRAME = 64 * 1024
HELLO = encode_frame([0, 0, "hello", {"version": PROTOCOL_VERSION, "client": "hostile"}])
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
Message = Reply | ErrorReply | ServerEvent


@pytest.fixture(scope="module")
def hostile_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    directory = tmp_path_factory.mktemp("hostile") / "data"
    process = BrokerProcess(directory, ("--max-frame", str(MAX_FRAME), "--max-payload", "16KiB",
                                        "--log-level", "debug"), {})
    process.start()
    control = socket.create_connection((process.host, process.port), timeout=10)
    control.sendall(HELLO)  # a well-behaved client connected through all the hostile traffic
    yield process
    control.sendall(encode_frame([0, 99, "ping", {}]))
    decoder = FrameDecoder(1 << 20)
    deadline = time.monotonic() + 10
    answers: list[Message] = []
    while len(answers) < 2 and (chunk := _recv(control, deadline)):
        decoder.feed(chunk)
        answers += [parse_server_message(m) for m in decoder.messages()]
    control.close()
    alive = process.running
    process.kill()
    assert alive, "the broker died"
    assert all(isinstance(a, Reply) for a in answers) and len(answers) == 2, answers
    assert isinstance(answers[1], Reply) and answers[1].request_id == 99
    internal = [e for e in process.log_lines() if e.get("event") == "internal_error"]
    assert internal == [], internal[:3]


def exchange(broker: BrokerProcess, data: bytes, *, hello: bool = True,
             within: float = 10.0) -> list[Message]:
    """Send ``data`` on a fresh connection, half-close, and return everything the broker sent.

    Asserts the broker sent only well-formed messages and never an ``INTERNAL`` error.
    """
    with socket.create_connection((broker.host, broker.port), timeout=within) as sock:
        sock.sendall((HELLO if hello else b"") + data)
        sock.shutdown(socket.SHUT_WR)
        decoder = FrameDecoder(1 << 30)
        deadline = time.monotonic() + within
        while chunk := _recv(sock, deadline):
            decoder.feed(chunk)
    messages = [parse_server_message(m) for m in decoder.messages()]
    for message in messages:
        code = message.code if isinstance(message, ErrorReply) else (
            message.body.get("code") if isinstance(message, ServerEvent) else None)
        assert code != "INTERNAL", message
    return messages


def _recv(sock: socket.socket, deadline: float) -> bytes:
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        return sock.recv(1 << 16)
    except ConnectionResetError:
        return b""


def assert_serving(broker: BrokerProcess) -> None:
    """A fresh control connection gets its ping answered."""
    [hello, pong] = exchange(broker, encode_frame([0, 7, "ping", {}]))
    assert isinstance(hello, Reply) and isinstance(pong, Reply) and pong.request_id == 7


def error_event(messages: list[Message]) -> str:
    """The code of the one ``error`` event the broker sent before closing."""
    events = [m for m in messages if isinstance(m, ServerEvent)]
    assert [e.event for e in events] == ["error"], messages
    code: str = events[0].body["code"]
    return code


# --------------------------------------------------------------------------- framing


@FUZZ
@given(data=st.binary(max_size=3000), hello=st.booleans())
def test_random_bytes_never_crash_the_broker(hostile_broker: BrokerProcess, data: bytes,
                                             hello: bool) -> None:
    exchange(hostile_broker, data, hello=hello)


@FUZZ
@given(request=requests(), cut=st.floats(0, 1, exclude_max=True))
def test_truncated_frames_are_dropped_at_eof(hostile_broker: BrokerProcess, request: Any,
                                             cut: float) -> None:
    frame = encode_frame(request_message(1, request))
    messages = exchange(hostile_broker, frame[:int(len(frame) * cut)])
    assert all(m.request_id == 0 for m in messages if not isinstance(m, ServerEvent))


@pytest.mark.parametrize(("prefix", "code"), [
    (0, "BAD_FRAME"), (MAX_FRAME + 1, "FRAME_TOO_LARGE"), (2**32 - 1, "FRAME_TOO_LARGE"),
])
def test_bad_length_prefixes_close_the_connection(hostile_broker: BrokerProcess, prefix: int,
                                                  code: str) -> None:
    with socket.create_connection((hostile_broker.host, hostile_broker.port), timeout=10) as sock:
        sock.sendall(HELLO + prefix.to_bytes(4, "big"))  # no half-close: the broker must close
        decoder = FrameDecoder(1 << 30)
        deadline = time.monotonic() + 10
        while chunk := _recv(sock, deadline):
            decoder.feed(chunk)
    messages = [parse_server_message(m) for m in decoder.messages()]
    assert error_event(messages) == code
    assert_serving(hostile_broker)


def test_a_frame_at_the_cap_is_read_and_one_byte_more_is_not(
    hostile_broker: BrokerProcess,
) -> None:
    pad = MAX_FRAME - 40
    pad += MAX_FRAME - len(msgpack.packb([0, 5, "ping", {"pad": "x" * pad}]))
    at_cap = msgpack.packb([0, 5, "ping", {"pad": "x" * pad}])
    assert len(at_cap) == MAX_FRAME
    messages = exchange(hostile_broker, len(at_cap).to_bytes(4, "big") + at_cap)
    assert [m.request_id for m in messages if isinstance(m, Reply)] == [0, 5]
    over = at_cap[:-1] + b"xx"
    assert error_event(exchange(hostile_broker, (len(over)).to_bytes(4, "big") + over)) == (
        "FRAME_TOO_LARGE")


# --------------------------------------------------------------------------- msgpack features


def _frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


@pytest.mark.parametrize("depth", [1_100, 30_000])
def test_deep_nesting_is_bad_frame(hostile_broker: BrokerProcess, depth: int) -> None:
    nested = b"\x91" * depth + b"\xc0"  # [[[...[nil]...]]]
    body = b"\x94\x00\x01\xa4ping\x81\xa1x" + nested  # [0, 1, "ping", {"x": <nested>}]
    assert error_event(exchange(hostile_broker, _frame(body))) == "BAD_FRAME"
    assert_serving(hostile_broker)


def test_nesting_the_protocol_promises_is_accepted(hostile_broker: BrokerProcess) -> None:
    value: Any = None
    for _ in range(60):
        value = [value]
    messages = exchange(hostile_broker, encode_frame([0, 1, "ping", {"x": value}]))
    assert [m.request_id for m in messages if isinstance(m, Reply)] == [0, 1]


@pytest.mark.parametrize("ext", [
    b"\xd4\x01\x00",  # fixext 1
    b"\xd6\xff\x00\x00\x00\x00",  # timestamp 32
    b"\xc7\x03\x05abc",  # ext 8
    b"\xc8\x00\x02\x07ab",  # ext 16
])
def test_ext_types_are_bad_frame(hostile_broker: BrokerProcess, ext: bytes) -> None:
    body = b"\x94\x00\x01\xa4ping\x81\xa1x" + ext
    assert error_event(exchange(hostile_broker, _frame(body))) == "BAD_FRAME"


@pytest.mark.parametrize("args", [{1: 2}, {b"k": 1}, {None: 1}, {"ok": {(1, 2): 3}}, {True: 0}])
def test_non_string_keys_are_bad_frame(hostile_broker: BrokerProcess, args: Any) -> None:
    body = msgpack.packb([0, 1, "ping", args], use_bin_type=True)
    assert error_event(exchange(hostile_broker, _frame(body))) == "BAD_FRAME"


def test_repeated_keys_and_invalid_utf8_are_bad_frame(hostile_broker: BrokerProcess) -> None:
    repeated = b"\x94\x00\x01\xa4ping\x82\xa1a\x01\xa1a\x02"
    invalid = b"\x94\x00\x01\xa4ping\x81\xa1a\xa2\xff\xfe"
    for body in (repeated, invalid):
        assert error_event(exchange(hostile_broker, _frame(body))) == "BAD_FRAME"


# --------------------------------------------------------------------------- fields


WRONG_VALUES: list[Any] = [None, True, -1, 2**64 - 1, -(2**63), 1.5, "", "s" * 300, b"bin",
                           [], [None], {}, {"k": [1, {"z": b""}]}]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every position inside a request's args (map keys and array indexes), depth first."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key)
            yield from _paths(item, (*path, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield (*path, index)
            yield from _paths(item, (*path, index))


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    items = list(value)
    items[head] = _replace(items[head], rest, new)
    return items


def _example_args() -> dict[str, dict[str, Any]]:
    job = ["id-1", "name", b"payload", 0, 10, None, 3, ["exponential", 100, 1000, 0.5], 500,
           [10, 1000], True]
    return {
        **{name: {} for name, op in OPERATIONS.items() if not op.fields},  # nothing to vary
        "hello": {"version": 1, "client": "c", "token": "t"},
        "ping": {},
        "enqueue": {"queue": "q", "jobs": [job]},
        "reserve": {"queues": ["q"], "max": 2, "wait_ms": 0, "lease_ms": 1000},
        "ack": {"items": [["id-1", 1, b"r"]]},
        "fail": {"items": [["id-1", 1, "boom", True, 5]]},
        "extend": {"items": [["id-1", 1, 1000]]},
        "release": {"items": [["id-1", 1, 5]]},
        "progress": {"id": "id-1", "token": 1, "progress": {"done": [1, 2]}},
        "get": {"id": "id-1", "queue": "q"},
        "wait": {"id": "id-1", "timeout_ms": 0, "queue": "q"},
        "cancel": {"id": "nope", "queue": "q"},
        "stats": {"queue": "q"},
        "pause": {"queue": "paused-q"},
        "resume": {"queue": "paused-q"},
        "clean": {"queue": "q", "state": "completed", "older_than_ms": 0, "limit": 10},
        "list_failed": {"queue": "q", "limit": 10, "offset": 0},
        "list_jobs": {"queue": "q", "states": ["waiting", "failed"], "limit": 10},
        "retry_failed": {"queue": "q", "ids": ["id-1"], "limit": 10},
        "subscribe": {"queues": ["q"], "kinds": ["completed"]},
        "unsubscribe": {"sub": 1},
        "metrics": {"queues": ["q"], "after": "p", "limit": 10, "buckets": True},
        "workers": {"all": True, "limit": 10, "offset": 0},
        "limit": {"queue": "limited-q", "rate": [10, 1000], "concurrency": 3},
        "obliterate": {"queue": "doomed-q", "force": True},
        "schedule_upsert": {"queue": "sched-q", "key": "k", "job": [None, "n", b"p"],
                            "every_ms": 60_000},
        "schedule_remove": {"queue": "sched-q", "key": "k"},
        "schedule_list": {"queue": "sched-q", "limit": 10},
    }


def test_every_op_is_covered() -> None:
    assert set(_example_args()) == set(OPERATIONS)


def test_a_wrong_type_in_every_field_is_an_error_reply_not_a_crash(
    hostile_broker: BrokerProcess,
) -> None:
    messages: list[Any] = []
    for op, args in _example_args().items():
        messages.append([0, len(messages) + 1, op, {"unknown-key": 1, **args}])
        for path in _paths(args):
            for wrong in WRONG_VALUES:
                messages.append([0, len(messages) + 1, op, _replace(args, path, wrong)])
        messages.append([0, len(messages) + 1, op, []])  # args not a map
        messages.append([0, len(messages) + 1, op, None])
    for start in range(0, len(messages), 400):  # a few frames' worth per connection
        chunk = messages[start:start + 400]
        answers = exchange(hostile_broker, encode_frames(chunk), within=30)
        by_id = {m.request_id: m for m in answers if not isinstance(m, ServerEvent)}
        for message in chunk:  # every request answered: a reply or a clean error, connection kept
            answer = by_id.get(message[1])
            if answer is None:  # writes answer after their commit, long-polls later: EOF
                assert message[2] in ("enqueue", "ack", "fail", "extend", "release", "progress",
                                      "cancel", "pause", "resume", "clean", "retry_failed", "limit",
                                      "get", "wait", "reserve", "obliterate", "schedule_upsert",
                                      "schedule_remove", "schedule_list"), message
                continue
            if isinstance(answer, ErrorReply):
                assert answer.code in ("BAD_ARGUMENT", "NOT_FOUND", "STALE_LEASE", "CONFLICT",
                                       "HANDSHAKE_REQUIRED", "PAYLOAD_TOO_LARGE"), (message, answer)
        assert not [m for m in answers if isinstance(m, ServerEvent)], answers[-3:]
    assert_serving(hostile_broker)


def _mutations(draw: st.DrawFn) -> list[Any]:
    request = draw(requests())
    message = request_message(draw(st.integers(1, 2**32 - 1)), request)
    paths = list(_paths(message[3]))
    for _ in range(draw(st.integers(1, 3))):
        inside: bool = draw(st.booleans())
        if paths and inside:
            path = draw(st.sampled_from(paths))
            message[3] = _replace(message[3], path, draw(any_msgpack(max_leaves=6)))
        else:
            message[draw(st.integers(0, 3))] = draw(any_msgpack(max_leaves=4))
        paths = list(_paths(message[3]))
    return message


mutated_requests = st.composite(_mutations)


@FUZZ
@given(message=mutated_requests(), hello=st.booleans())
def test_mutated_requests_never_crash_the_broker(hostile_broker: BrokerProcess, message: Any,
                                                 hello: bool) -> None:
    try:
        body = msgpack.packb(message, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return  # not encodable by msgpack at all
    exchange(hostile_broker, _frame(body), hello=hello)


@pytest.fixture(scope="module", autouse=True)
def _close_fuzz_target() -> Iterator[None]:
    yield
    close_target()


@FUZZ
@given(control=st.integers(0, 255), stream=st.one_of(
    st.binary(max_size=2000),
    st.lists(mutated_requests(), max_size=5).map(
        lambda ms: b"".join(_frame(b) for b in map(_pack, ms) if b is not None)),
))
def test_fuzz_target_without_atheris(control: int, stream: bytes) -> None:
    """The atheris target (``tests/tools/fuzz_decoder.py``: decoder + session dispatcher) in CI."""
    fuzz_one(bytes([control]) + stream)


def _pack(message: Any) -> bytes | None:
    try:
        return bytes(msgpack.packb(message, use_bin_type=True))
    except (OverflowError, ValueError, TypeError):
        return None


# --------------------------------------------------------------------------- handshake


def test_every_request_before_the_handshake_gets_handshake_required(
    hostile_broker: BrokerProcess,
) -> None:
    ops = [op for op in _example_args() if op != "hello"]
    frames = encode_frames([[0, i + 1, op, _example_args()[op]] for i, op in enumerate(ops)])
    frames += encode_frame([0, 100, "hello", {"version": PROTOCOL_VERSION}])
    frames += encode_frame([0, 101, "ping", {}])
    messages = exchange(hostile_broker, frames, hello=False)
    by_id = {m.request_id: m for m in messages if not isinstance(m, ServerEvent)}
    for i in range(len(ops)):
        answer = by_id[i + 1]
        assert isinstance(answer, ErrorReply) and answer.code == "HANDSHAKE_REQUIRED"
    assert isinstance(by_id[100], Reply) and isinstance(by_id[101], Reply)  # it stayed open


def test_garbage_before_the_handshake_gets_an_error_event(hostile_broker: BrokerProcess) -> None:
    messages = exchange(hostile_broker, encode_frame({"not": "a request"}), hello=False)
    assert error_event(messages) == "BAD_FRAME"


# --------------------------------------------------------------------------- memory


def test_memory_per_connection_stays_within_twice_the_frame_cap(tmp_path: Path) -> None:
    cap = 1 << 20
    process = BrokerProcess(tmp_path / "data", ("--max-frame", str(cap), "--max-payload", "64KiB"),
                            {})
    process.start()
    assert process.proc is not None
    rss = psutil.Process(process.proc.pid).memory_info
    connections: list[socket.socket] = []
    try:
        assert_serving(process)
        before = rss().rss
        for _ in range(16):  # each holds one frame short of its last byte: all of it buffered
            sock = socket.create_connection((process.host, process.port), timeout=10)
            connections.append(sock)
            sock.sendall(HELLO + cap.to_bytes(4, "big") + b"\x91" * (cap - 1))
        deadline = time.monotonic() + 30
        growth = 0
        while growth < 0.9 * len(connections) * cap and time.monotonic() < deadline:
            time.sleep(0.05)  # wait until the broker has read (and so buffered) all of it
            growth = rss().rss - before
        assert growth >= 0.9 * len(connections) * cap, "the broker never buffered the frames"
        assert growth / len(connections) <= 2 * cap, f"{growth / len(connections) / cap:.2f} x cap"
        for sock in connections:  # the last byte completes each frame: deep nesting, BAD_FRAME
            sock.sendall(b"\xc0")
        assert_serving(process)
    finally:
        for sock in connections:
            sock.close()
        process.kill()
