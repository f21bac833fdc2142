"""Authentication against real ``jobwire serve`` processes: the three ways to set the token
(``--token``, ``JOBWIRE_TOKEN``, ``--token-file``), nothing secret in the log, and the exposure
warning.

The policy (``broker.auth``): ``tests/pure/test_auth.py``; over TCP against an in-process broker:
``tests/tcp/test_auth.py``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import BrokerProcess, jobwire_command
from tests.tools.wire import R_ID, R_TOKEN, WireClient, WireError, job_spec

SECRET = "s3cret-T0ken-for-tests"


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
