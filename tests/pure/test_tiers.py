"""The tier guard of tests/conftest.py: a pure test that reaches for the network, a thread or a
subprocess fails, so the folder a test sits in says what it needs."""

from __future__ import annotations

import socket
import subprocess
import threading

import pytest

from tests.conftest import TierError


def test_a_pure_test_cannot_bind_or_connect() -> None:
    with socket.socket() as sock:
        with pytest.raises(TierError, match=r"socket\.bind"):
            sock.bind(("127.0.0.1", 0))
        with pytest.raises(TierError, match=r"socket\.connect"):
            sock.connect(("127.0.0.1", 9))


def test_a_pure_test_cannot_start_a_thread() -> None:
    with pytest.raises(TierError, match="a thread"):
        threading.Thread(target=lambda: None).start()


def test_a_pure_test_cannot_start_a_subprocess() -> None:
    with pytest.raises(TierError, match="a subprocess"):
        subprocess.run(["true"], check=False)
