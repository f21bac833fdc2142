"""``SyncClient`` after ``fork()``: the child opens its own connection (issue 18, item 2).

A child that reused its parent's socket would interleave frames with the parent on one TCP
stream. The broker's own log tells: the child's first call must open a new connection, and the
parent's connection must keep working. The child always exits, whatever its call raises.
"""

from __future__ import annotations

import os
import time

import pytest

from client import SyncClient
from tests.conftest import BrokerProcess


def opened(process: BrokerProcess) -> int:
    return sum(1 for line in process.log_lines() if line.get("event") == "connection_opened")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_uses_its_own_connection(broker_process: BrokerProcess) -> None:
    jobs = SyncClient(f"jobwire://{broker_process.host}:{broker_process.port}")
    assert jobs.ping() > 0
    before = opened(broker_process)
    pid = os.fork()
    if pid == 0:  # the child: exit whatever happens, never go on running pytest
        code = 1
        try:
            code = 0 if jobs.ping() > 0 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for _ in range(100):  # the log line is written by the broker process
        if opened(broker_process) > before:
            break
        time.sleep(0.05)
    assert opened(broker_process) == before + 1, "the child did not open a connection of its own"
    assert jobs.ping() > 0  # the parent's connection is intact
    jobs.close()
