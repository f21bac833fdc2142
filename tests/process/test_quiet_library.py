"""The client library is quiet: an embedded ``Client``/``Worker`` through a broker outage.

A real application process (tests/tools/embedded_app.py) keeps a Client and a Worker connected
to a real ``jobwire serve``; the broker is killed and restarted on the same port after an outage
long enough for several reconnect attempts. With logging unconfigured the application's stdout
and stderr stay empty. With logging configured, each connection reports the outage once at
WARNING (the later failed attempts only at DEBUG) and once at INFO when it is back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import BrokerProcess

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "tests" / "tools" / "embedded_app.py"
CONNECTIONS = 2  # the application's Client and the Worker's own connection


def run_through_outage(process: BrokerProcess, sync: Path, *level: str) -> tuple[str, str]:
    """Run the embedded app, kill the broker once it is running, restart it after 1.5 s."""
    sync.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    app = subprocess.Popen(
        [sys.executable, str(APP), f"jobwire://{process.host}:{process.port}", str(sync), *level],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while not (sync / "ready").exists():
            assert app.poll() is None, app.communicate()
            assert time.monotonic() < deadline, "the app never ran its first job"
            time.sleep(0.05)
        process.kill()
        time.sleep(1.5)  # an outage: at a 0.1 s reconnect cap, many failed attempts
        process.start()
        (sync / "restarted").touch()
        out, err = app.communicate(timeout=60)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    assert app.returncode == 0, err.decode()
    return out.decode(), err.decode()


def test_unconfigured_logging_prints_nothing(
    spawn_broker: Callable[..., BrokerProcess], tmp_path: Path,
) -> None:
    out, err = run_through_outage(spawn_broker(), tmp_path / "sync")
    assert (out, err) == ("", "")


@pytest.mark.parametrize("level", ["warning", "debug"])
def test_configured_logging_reports_an_outage_once(
    spawn_broker: Callable[..., BrokerProcess], tmp_path: Path, level: str,
) -> None:
    out, err = run_through_outage(spawn_broker(), tmp_path / "sync", level)
    assert out == ""
    lines = err.splitlines()
    warnings = [line for line in lines if not line.startswith(("DEBUG", "INFO"))]
    assert warnings == ["WARNING jobwire.client connection to broker lost"] * CONNECTIONS, err
    if level == "debug":
        # The outage did make several failed attempts, each at DEBUG only, and each connection
        # said once that it was back.
        retries = [line for line in lines if "broker unreachable, retrying" in line]
        assert len(retries) >= 2 * CONNECTIONS and all(r.startswith("DEBUG") for r in retries)
        back = [line for line in lines if "reconnected after" in line]
        assert len(back) == CONNECTIONS and all(b.startswith("INFO") for b in back), back
