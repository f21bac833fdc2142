"""Pure parts of the client: URLs, reconnect delays, job options, serializers, error reports."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from client.cli import parse_duration, table
from client.endpoint import parse_url, reconnect_delay
from client.errors import (
    BrokerError,
    NotFoundError,
    Retry,
    StaleLeaseError,
    UnrecoverableError,
    broker_error,
)
from client.job import Job, JobRecord
from client.options import build_spec, exponential, fixed, split_batches, to_backoff, to_retention
from client.outcomes import describe_exception
from client.serializers import JSON, MSGPACK, RAW, get_serializer
from protocol.checks import MAX_ERROR_LEN
from protocol.model import (
    KEEP_ALL,
    REMOVE_AT_ONCE,
    Backoff,
    BackoffKind,
    JobSpec,
    Retention,
    job_to_wire,
    parse_job,
)


def test_parse_url_forms() -> None:
    assert parse_url("jobwire://127.0.0.1:7401") == parse_url("127.0.0.1:7401")
    endpoint = parse_url("jobwire://s3cret@broker.internal:9000")
    assert (endpoint.host, endpoint.port, endpoint.token, endpoint.tls) == (
        "broker.internal", 9000, "s3cret", False)
    assert parse_url("jobwires://h").tls and parse_url("jobwires://h").port == 7400
    assert parse_url("jobwire://user:tok%40en@h:1").token == "tok@en"
    assert parse_url("jobwire://[::1]:7400").host == "::1"
    with pytest.raises(ValueError, match="scheme"):
        parse_url("redis://localhost:6379")


def test_reconnect_delay_doubles_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    for attempt in range(12):
        ceiling = min(5.0, 0.05 * 2**attempt)
        delays = [reconnect_delay(attempt, 0.05, 5.0, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1
    assert reconnect_delay(1000, 0.05, 5.0, rng) <= 5.0


def test_build_spec_converts_python_units() -> None:
    run_at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    spec = build_spec("send", b"p", {
        "priority": 3, "delay": timedelta(seconds=1.5), "run_at": run_at, "attempts": 5,
        "backoff": {"type": "fixed", "delay": 2000}, "job_id": "order-1", "lease": 60,
        "remove_on_complete": True, "remove_on_fail": {"count": 10, "age": 3600},
    })
    assert spec == JobSpec(
        "order-1", "send", b"p", 3, 1500, round(run_at.timestamp() * 1000), 5,
        Backoff(BackoffKind.FIXED, 2000, None, 0.0), 60_000, REMOVE_AT_ONCE,
        Retention(10, 3_600_000),
    )
    # what the client sends passes the broker's own validation unchanged
    assert parse_job(tuple(_tuples(job_to_wire(spec))), 0) == spec
    assert build_spec("n", b"", {}) == JobSpec(None, "n", b"")


def _tuples(value: object) -> object:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def test_bullmq_backoff_maps_are_in_milliseconds() -> None:
    """BullMQ's ``{type, delay}`` shape means BullMQ's unit (issue 16, item 9): 2000 is 2 s."""
    assert to_backoff({"type": "exponential", "delay": 2000}) == Backoff(
        BackoffKind.EXPONENTIAL, 2000, None, 0.0)
    assert to_backoff({"type": "fixed", "delay": 500, "jitter": 0.5}) == Backoff(
        BackoffKind.FIXED, 500, None, 0.5)
    with pytest.raises(ValueError, match="milliseconds"):
        to_backoff({"type": "fixed", "delay": 5, "max": 60})  # not BullMQ's: refused, not guessed
    with pytest.raises(ValueError, match="milliseconds"):
        to_backoff({"type": "fixed", "delay": "5s"})


def test_backoff_and_retention_helpers() -> None:
    assert exponential(0.5, max=60, jitter=0.2) == Backoff(
        BackoffKind.EXPONENTIAL, 500, 60_000, 0.2)
    assert fixed(3) == Backoff(BackoffKind.FIXED, 3000, None, 0.0)
    assert build_spec("n", b"", {"backoff": 2}).backoff == exponential(2)
    assert to_retention(False, "f") == KEEP_ALL
    assert to_retention(100, "f") == Retention(100, None)
    with pytest.raises(ValueError):
        exponential(1, jitter=2)
    with pytest.raises(ValueError):
        build_spec("n", b"", {"attempts": 0})
    with pytest.raises(ValueError):
        build_spec("n", b"", {"delay": -1})
    with pytest.raises(TypeError):
        to_retention("yes", "f")


def test_split_batches_respects_count_and_bytes_and_order() -> None:
    specs = [JobSpec(None, "n", bytes(100)) for _ in range(25)]
    batches = split_batches(specs, max_batch=10)
    assert [len(b) for b in batches] == [10, 10, 5]
    assert [s for b in batches for s in b] == specs
    by_bytes = split_batches(specs, max_batch=1000, max_bytes=700)
    assert all(len(b) <= 4 for b in by_bytes) and sum(map(len, by_bytes)) == 25
    huge = [JobSpec(None, "n", bytes(10_000))]
    assert split_batches(huge, max_bytes=100) == [huge]


@pytest.mark.parametrize("value", [{"a": [1, 2, {"b": None}]}, "text", 3.5, None, [1, "x"]])
def test_serializers_round_trip(value: object) -> None:
    for serializer in (MSGPACK, JSON):
        assert serializer.loads(serializer.dumps(value)) == value
    assert RAW.loads(RAW.dumps(b"\x00\x01")) == b"\x00\x01"
    with pytest.raises(TypeError):
        RAW.dumps("not bytes")


def test_get_serializer() -> None:
    assert get_serializer(None) is MSGPACK
    assert get_serializer("json") is JSON

    class Upper:
        def dumps(self, value: object) -> bytes:
            return str(value).upper().encode()

        def loads(self, data: bytes) -> object:
            return data.decode()

    custom = Upper()
    assert get_serializer(custom) is custom
    with pytest.raises(ValueError):
        get_serializer("yaml")
    with pytest.raises(TypeError):
        get_serializer(42)  # type: ignore[arg-type]


def test_broker_errors_map_to_classes() -> None:
    assert isinstance(broker_error("NOT_FOUND", "x"), NotFoundError)
    assert isinstance(broker_error("STALE_LEASE", "x"), StaleLeaseError)
    unknown = broker_error("SOMETHING_NEW", "later version")
    assert type(unknown) is BrokerError and unknown.code == "SOMETHING_NEW"


def test_describe_exception() -> None:
    try:
        raise ValueError("bad address")
    except ValueError as exc:
        text, retry, delay = describe_exception(exc)
    assert text.startswith("ValueError: bad address\n")
    assert "Traceback" in text and "test_describe_exception" in text
    assert (retry, delay) == (True, None)
    assert describe_exception(Retry(delay=2.5, reason="rate limited")) == (
        "Retry: rate limited", True, 2500)
    assert describe_exception(UnrecoverableError("gone"))[1] is False
    try:
        raise RuntimeError("x" * (MAX_ERROR_LEN * 2))
    except RuntimeError as exc:
        long_text = describe_exception(exc)[0]
    assert len(long_text) <= MAX_ERROR_LEN and long_text.startswith("RuntimeError: xxx")


def test_cli_helpers() -> None:
    assert parse_duration("90") == 90
    assert parse_duration("1h") == 3600
    assert parse_duration("250ms") == 0.25
    assert parse_duration("7d") == 7 * 86400
    with pytest.raises(Exception, match="duration"):
        parse_duration("soon")
    text = table(["NAME", "N"], [["a", 1], ["long name", 100]])
    assert text.splitlines() == ["NAME         N", "a            1", "long name  100"]


def test_a_new_job_handle_sets_every_field_of_a_job_record() -> None:
    # JobHandle.__init__ passes JobRecord.__init__ explicit keywords for speed: every slot is set.
    serializer = get_serializer("raw")
    record = JobRecord("7", "q", "n", serializer, payload=b"p", priority=3)
    job = Job(cast(Any, None), "7", "q", "n", serializer, payload=b"p", priority=3)
    for slot in JobRecord.__slots__:
        assert getattr(job, slot) == getattr(record, slot), slot
