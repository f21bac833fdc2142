"""Authentication policy (``broker.auth``): token comparison, the failure throttle, loopback.

Over TCP: ``tests/tcp/test_auth.py``; against real ``jobwire serve`` processes:
``tests/process/test_auth.py``.
"""

from __future__ import annotations

import pytest

from broker.auth import FailureThrottle, exposure_warning, is_loopback, token_matches

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
