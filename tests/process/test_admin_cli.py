"""``jobwire stats|job|pause|resume|clean|failed`` against a real broker.

Most tests call ``client.cli.main`` in a thread (it runs its own event loop, the broker runs on
the test's); one runs the real ``jobwire`` console script with ``JOBWIRE_URL``.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess

import pytest

from client import Client
from client.cli import main
from protocol.model import FailItem
from protocol.operations import Fail, Progress, Reserve
from protocol.replies import parse_reserved
from tests.conftest import BrokerProcess, free_port, jobwire_command


async def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(main, list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def fail_all(client: Client, queue: str, count: int) -> None:
    body = await client.connection.request(Reserve((queue,), count, 1000, None))
    for job in parse_reserved(body):
        await client.connection.request(
            Fail((FailItem(job.job_id, job.token, f"SMTPError: mailbox {job.job_id} full\n"
                           "Traceback ...", False),)))


async def test_stats_table_and_json(
    url: str, client: Client
) -> None:
    await client.queue("emails").add_bulk([("send", i) for i in range(3)])
    await client.queue("reports").add("build", delay=60)
    code, out, _ = await cli("stats", "--url", url)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["QUEUE", "WAITING", "DELAYED"]
    emails = next(line.split() for line in lines if line.startswith("emails"))
    assert emails[1:3] == ["3", "0"]
    code, out, _ = await cli("stats", "--url", url, "--json")
    data = json.loads(out)
    assert data["emails"]["waiting"] == 3 and data["reports"]["delayed"] == 1
    code, out, _ = await cli("stats", "--url", url, "--queue", "nothing", "--json")
    nothing = json.loads(out)["nothing"]
    assert nothing.pop("metrics")["added"] == {"total": 0, "last_minute": 0}
    assert nothing == {
        "waiting": 0, "delayed": 0, "active": 0, "completed": 0, "failed": 0, "paused": False,
        "oldest_waiting_ms": None, "total_completed": 0, "total_failed": 0}


async def test_job_shows_one_job(
    url: str, client: Client
) -> None:
    job = await client.queue("emails").add("send", {"to": "ada@example.com"}, priority=4)
    code, out, _ = await cli("job", job.id, "--url", url)
    assert code == 0
    fields = dict(line.split(None, 1) for line in out.splitlines() if line.strip())
    assert fields["state"] == "waiting" and fields["priority"] == "4"
    assert json.loads(fields["data"]) == {"to": "ada@example.com"}
    code, out, _ = await cli("job", job.id, "--url", url, "--json")
    data = json.loads(out)
    assert data["id"] == job.id and data["queue"] == "emails" and data["attempts"] == 0


async def test_job_json_stays_valid_with_nan_and_infinite_progress(
    url: str, client: Client
) -> None:
    job = await client.queue("emails").add("send", {"to": "ada@example.com"})
    (reserved,) = parse_reserved(await client.connection.request(Reserve(("emails",), 1)))
    progress = {"rate": float("nan"), "eta": float("inf"), "low": float("-inf"), "done": 0.5}
    await client.connection.request(Progress(job.id, reserved.token, progress))

    code, out, _ = await cli("job", job.id, "--url", url, "--json")

    assert code == 0
    data = json.loads(out, parse_constant=lambda word: pytest.fail(f"{word} is not JSON"))
    assert data["progress"] == {"rate": "NaN", "eta": "Infinity", "low": "-Infinity",
                                "done": 0.5}


async def test_errors_exit_non_zero_with_one_clear_line(
    url: str
) -> None:
    code, out, err = await cli("job", "no-such-job", "--url", url)
    assert code == 1 and out == ""
    assert err.startswith("jobwire: error: ") and "no-such-job" in err and err.count("\n") == 1
    code, _, err = await cli("stats", "--url", f"jobwire://127.0.0.1:{free_port()}")
    assert code == 1 and err.startswith("jobwire: error: ")
    with pytest.raises(SystemExit) as exit_info:
        await cli("clean", "q", "--state", "active", "--url", url)
    assert exit_info.value.code == 2


async def test_pause_and_resume(
    url: str, client: Client
) -> None:
    code, out, _ = await cli("pause", "emails", "--url", url)
    assert (code, out.strip()) == (0, "paused emails")
    assert (await client.queue("emails").stats()).paused
    code, out, _ = await cli("resume", "emails", "--url", url, "--json")
    assert code == 0 and json.loads(out) == {"queue": "emails", "paused": False}
    assert not (await client.queue("emails").stats()).paused
    code, out, _ = await cli("pause", "emails", "--for", "5m", "--url", url)
    assert (code, out.strip()) == (0, "paused emails for 300s (not now)")
    limits = await client.queue("emails").limits()
    assert limits.paused_until is not None and not (await client.queue("emails").stats()).paused


async def test_clean_older_than(
    url: str, client: Client
) -> None:
    await client.queue("c").add_bulk([("n", i) for i in range(4)])
    code, out, _ = await cli("clean", "c", "--state", "waiting", "--older-than", "1h",
                             "--url", url)
    assert (code, out.strip()) == (0, "removed 0 waiting job(s) from c")
    code, out, _ = await cli("clean", "c", "--state", "waiting", "--limit", "3",
                             "--url", url, "--json")
    assert json.loads(out)["removed"] == 3
    assert (await client.queue("c").stats()).waiting == 1


async def test_failed_lists_and_retries(
    url: str, client: Client
) -> None:
    code, out, _ = await cli("failed", "mail", "--url", url)
    assert (code, out.strip()) == (0, "no failed jobs in mail")
    await client.queue("mail").add_bulk([("send", i) for i in range(3)])
    await fail_all(client, "mail", 3)
    code, out, _ = await cli("failed", "mail", "--url", url, "--limit", "2")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["ID", "NAME", "ATTEMPTS", "FAILED", "AT", "ERROR"]
    assert len(lines) == 4 and "SMTPError: mailbox" in lines[1] and "Traceback" not in out
    assert lines[-1] == "(2 of 3 shown; --limit to see more)"
    code, out, _ = await cli("failed", "mail", "--url", url, "--json")
    data = json.loads(out)
    assert data["total"] == 3 and data["jobs"][0]["state"] == "failed"
    first = data["jobs"][0]["id"]
    code, out, _ = await cli("failed", "mail", "--retry", "--id", first, "--url", url)
    assert (code, out.strip()) == (0, "retried 1 failed job(s) in mail")
    code, out, _ = await cli("failed", "mail", "--retry", "--url", url)
    assert out.strip() == "retried 2 failed job(s) in mail"
    assert (await client.queue("mail").stats()).waiting == 3


def test_console_script_uses_jobwire_url(broker_process: BrokerProcess) -> None:
    env = {**os.environ, "JOBWIRE_URL": f"jobwire://{broker_process.host}:{broker_process.port}"}
    done = subprocess.run([*jobwire_command(), "stats", "--json"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {}
    done = subprocess.run([*jobwire_command(), "stats"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "no queues yet"


async def test_no_broker_says_what_it_means() -> None:
    """Issue 16, item 5: not a bare ``[Errno 111] Connect call failed``."""
    port = free_port()
    code, _, err = await cli("stats", "--url", f"jobwire://127.0.0.1:{port}")
    assert code == 1
    assert f"no broker at 127.0.0.1:{port}: is `jobwire serve` running there?" in err
    assert "Errno" not in err


async def test_retrying_a_pruned_job_says_it_no_longer_exists(
    url: str, client: Client
) -> None:
    """Issue 16, item 6: the queue is named and a job that is gone is said to be gone."""
    await client.queue("pruned").add("send", {})
    await fail_all(client, "pruned", 1)
    [job] = await client.queue("pruned").failed()
    await client.queue("pruned").remove(job.id)
    code, out, _ = await cli("failed", "pruned", "--retry", "--id", job.id, "--url", url)
    assert code == 1
    assert f"job {job.id} not retried: it no longer exists" in out
    await client.queue("other").add("x", job_id="elsewhere")
    code, out, _ = await cli("failed", "pruned", "--retry", "--id", "elsewhere", "--url", url)
    assert "it is in queue other, not pruned" in out


async def test_obliterate_needs_yes_off_a_terminal_and_force_for_active_jobs(
    url: str, client: Client
) -> None:
    doomed = client.queue("doomed")
    await doomed.add_bulk([("send", i) for i in range(3)])
    await client.queue("kept").add("send", 1)

    code, _, err = await cli("obliterate", "doomed", "--url", url)  # stdin is not a terminal
    assert code == 1 and "pass --yes" in err
    await client.connection.request(Reserve(("doomed",), 1, 60_000, None))
    code, _, err = await cli("obliterate", "doomed", "--yes", "--url", url)
    assert code == 1 and "1 active" in err and "force" in err
    assert (await doomed.stats()).waiting == 2

    code, out, _ = await cli("obliterate", "doomed", "--yes", "--force", "--json", "--url", url)
    assert code == 0 and json.loads(out) == {"queue": "doomed", "removed": 3}
    code, out, _ = await cli("stats", "--json", "--url", url)
    assert set(json.loads(out)) == {"kept"}
