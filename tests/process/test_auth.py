"""Authentication: token sources, UNAUTHORIZED then close, slowed retries, nothing secret logged.

The policy (``broker.auth``) is tested pure; the behaviour over real TCP against an in-process
broker; the three ways to set the token (``--token``, ``JOBWIRE_TOKEN``, ``--token-file``), the
log contents and the exposure warning against real ``jobwire serve`` processes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from broker.auth import FailureThrottle, exposure_warning, is_loopback, token_matches
from tests.conftest import BrokerProcess, RunningBroker, jobwire_command
from tests.tools.wire import R_ID, R_TOKEN, WireClient, WireError, job_spec

StartBroker = Callable[..., Awaitable[RunningBroker]]
Wire = Callable[..., Awaitable[WireClient]]
SECRET = "s3cret-T0ken-for-tests"


# --------------------------------------------------------------------------- policy


def test_token_matches() -> None:
    assert token_matches(None, None) and token_matches(None, "anything")
    assert token_matches("abc", "abc")
    assert not token_matches("abc", None)
    assert not token_matches("abc", "")
    assert not token_matches("abc", "abd")
    assert not token_matches("abc", "abcd")
    assert token_matches("tøken", "tøken")


def test_throttle_delay_doubles_per_failure_up_to_the_cap() -> None:
    throttle = FailureThrottle(base=0.1, cap=1.0)
    assert [throttle.delay(n) for n in range(6)] == [0.0, 0.1, 0.2, 0.4, 0.8, 1.0]
    assert throttle.delay(10_000) == 1.0


def test_throttle_schedules_one_handshake_per_delay_per_host() -> None:
    throttle = FailureThrottle(base=1.0, cap=8.0)
    assert throttle.admit("10.0.0.1", 100.0) == 0.0  # no failures: no wait
    throttle.record_failure("10.0.0.1", 100.0)
    throttle.record_failure("10.0.0.1", 100.0)  # 2 failures: 2 s between handshakes
    assert throttle.failures("10.0.0.1") == 2
    assert throttle.admit("10.0.0.1", 100.0) == 2.0
    assert throttle.admit("10.0.0.1", 100.0) == 4.0  # parallel connections queue up
    assert throttle.admit("10.0.0.1", 103.0) == 3.0
    assert throttle.admit("10.0.0.2", 100.0) == 0.0  # other hosts are not affected
    throttle.record_success("10.0.0.1")
    assert throttle.admit("10.0.0.1", 103.0) == 0.0


def test_throttle_forgets_quiet_hosts_refuses_long_backlogs_and_stays_bounded() -> None:
    throttle = FailureThrottle(base=1.0, cap=4.0, forget_after=60.0, max_backlog=10.0,
                               max_peers=3)
    throttle.record_failure("a", 0.0)
    assert throttle.admit("a", 61.0) == 0.0 and throttle.failures("a") == 0
    for _ in range(3):
        throttle.record_failure("b", 0.0)
    waits = [throttle.admit("b", 0.0) for _ in range(4)]
    assert waits == [4.0, 8.0, None, None]  # beyond 10 s of backlog: refused at once
    for host in ("c", "d", "e", "f"):
        throttle.record_failure(host, 1.0)
    assert throttle.failures("b") == 0  # the least recently failing host was dropped
    assert throttle.failures("f") == 1


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.9.9.9", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("10.1.2.3", False), ("example.com", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert (exposure_warning(host, None) is None) is loopback
    assert exposure_warning(host, SECRET) is None


# --------------------------------------------------------------------------- over TCP


async def test_missing_or_wrong_token_gets_unauthorized_then_close(
    start_broker: StartBroker, wire: Wire
) -> None:
    broker = await start_broker(token=SECRET)
    for token in (None, "", "wrong", SECRET + "x", SECRET[:-1]):
        client = await wire(broker, hello=False)
        error = await client.error("hello", {"version": 1, "token": token})
        assert (error.code, error.message) == ("UNAUTHORIZED", "missing or wrong token")
        assert SECRET not in error.message
        await client.wait_closed()
        assert broker.server is not None
        broker.server.auth_failures.record_success("127.0.0.1")  # keep this test fast
    client = await wire(broker, token=SECRET)
    assert (await client.ok("ping", {}))["now"] > 0


async def test_requests_before_an_authenticated_hello_are_refused(
    start_broker: StartBroker, wire: Wire
) -> None:
    broker = await start_broker(token=SECRET)
    client = await wire(broker, hello=False)
    error = await client.error("enqueue", {"queue": "q", "jobs": [job_spec("x")]})
    assert error.code == "HANDSHAKE_REQUIRED"
    assert (await client.error("get", {"id": "x"})).code == "HANDSHAKE_REQUIRED"


async def test_repeated_failures_from_one_host_slow_its_next_handshakes(
    start_broker: StartBroker, wire: Wire
) -> None:
    broker = await start_broker(token=SECRET)
    assert broker.server is not None
    throttle = broker.server.auth_failures = FailureThrottle(base=0.2, cap=1.0)
    loop = asyncio.get_running_loop()
    for attempt in range(3):
        client = await wire(broker, hello=False)
        started = loop.time()
        assert (await client.error("hello", {"version": 1, "token": "guess"})).code == (
            "UNAUTHORIZED")
        # the n-th attempt waited for the slot the n-1 failures before it imposed
        assert loop.time() - started >= throttle.delay(attempt) - 0.02
        await client.wait_closed()
    assert throttle.failures("127.0.0.1") == 3

    started = loop.time()
    client = await wire(broker, token=SECRET)  # even the right token waits for the slot
    assert loop.time() - started >= throttle.delay(3) - 0.02
    assert throttle.failures("127.0.0.1") == 0  # a success forgives
    assert (await client.ok("ping", {}))["now"] > 0


# --------------------------------------------------------------------------- real processes


@pytest.mark.parametrize("source", ["flag", "env", "file"])
def test_token_from_flag_variable_or_file(
    spawn_broker: Callable[..., BrokerProcess], tmp_path: Path, source: str
) -> None:
    if source == "flag":
        process = spawn_broker("--token", SECRET)
    elif source == "env":
        process = spawn_broker(env={"JOBWIRE_TOKEN": SECRET})
    else:
        token_file = tmp_path / "token"
        token_file.write_text(f"  {SECRET}\n")
        process = spawn_broker("--token-file", str(token_file))

    async def check() -> None:
        refused = await WireClient.connect(process.host, process.port, hello=False)
        assert (await refused.error("hello", {"version": 1, "token": "nope"})).code == (
            "UNAUTHORIZED")
        await refused.wait_closed()
        await refused.close()
        with pytest.raises(WireError):
            await WireClient.connect(process.host, process.port)  # after a delay: no token
        client = await WireClient.connect(process.host, process.port, token=SECRET)
        assert (await client.ok("ping", {}))["now"] > 0
        await client.close()

    asyncio.run(check())


def test_tokens_and_payloads_never_reach_the_log(
    spawn_broker: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(SECRET)
    process = spawn_broker("--token-file", str(token_file), "--log-level", "debug")
    payload, result, wrong = b"PAYLOAD-MARKER-7f3a", b"RESULT-MARKER-9c1d", "WRONG-TOKEN-4b2e"

    async def traffic() -> None:
        refused = await WireClient.connect(process.host, process.port, hello=False)
        await refused.error("hello", {"version": 1, "token": wrong, "client": "bad"})
        await refused.close()
        client = await WireClient.connect(process.host, process.port, token=SECRET)
        await client.enqueue("secret", job_spec("j1", payload=payload), job_spec("j2",
                                                                                payload=payload))
        jobs = await client.reserve("secret", max_jobs=2)
        await client.ack([jobs[0][R_ID], jobs[0][R_TOKEN], result])
        await client.ok("fail", {"items": [[jobs[1][R_ID], jobs[1][R_TOKEN], "boom"]]})
        await client.close()

    asyncio.run(traffic())
    assert process.terminate() == 0
    text = process.log_path.read_text()
    events = [json.loads(line)["event"] for line in text.splitlines() if line.startswith("{")]
    assert "connection_opened" in events and "shutdown_complete" in events  # it did log
    for secret in (SECRET, wrong, payload.decode(), result.decode()):
        assert secret not in text, f"{secret} was logged"


def test_listening_beyond_loopback_without_a_token_logs_a_warning(tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is not an address of this machine: the bind fails after the
    # warning, so nothing is ever exposed by this test.
    command = [*jobwire_command(), "serve", "--host", "192.0.2.1", "--port", "0",
               "--data-dir", str(tmp_path / "data"), "--log-format", "json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    lines = [json.loads(line) for line in (done.stdout + done.stderr).splitlines()
             if line.startswith("{")]
    warnings = [e for e in lines if e.get("event") == "no_token"]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning", lines
    assert "without a token" in warnings[0]["message"]
    assert done.returncode == 1

    with_token = subprocess.run([*command, "--token", SECRET], capture_output=True, text=True,
                                timeout=60)
    assert "no_token" not in with_token.stdout + with_token.stderr
