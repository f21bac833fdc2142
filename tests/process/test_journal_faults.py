"""Journal faults: a full disk, a locked database (SQLITE_BUSY), I/O errors, an unusable journal.

What the README's "Guarantees and failure modes" promises, checked here:

* a write whose transaction failed is answered ``JOURNAL_FAILURE``, never acknowledged, and is
  not on disk while the fault lasts (the test reads the journal file itself);
* meanwhile the broker keeps answering reads (``ping``, ``stats``; ``get`` says the state is not
  durable yet) and keeps every connection;
* once the fault clears, the committer's retry writes what was held back and new writes are
  acknowledged again, with no restart;
* everything acknowledged is on disk and survives a restart (after ``kill -9`` for I/O errors);
* a journal the broker cannot open stops it at start, with one ``fatal`` log line, exit code 1
  (on a full disk that line says "disk full", not SQLite's "disk I/O error").

The faults are real: ``PRAGMA max_page_count`` (SQLite's own "database or disk is full"), a
second SQLite connection holding the write lock, and ``RLIMIT_FSIZE`` lowered on the running
broker process (every write past the limit fails with ``EFBIG``, an I/O error to SQLite).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.records import decode_record
from broker.schema import APPLICATION_ID, SCHEMA_VERSION, STATES
from protocol.messages import ErrorReply, Reply
from tests.conftest import HOST, RunningBroker, free_port, jobwire_command
from tests.tools.wire import R_ID, R_TOKEN, WireClient, job_spec

StartBroker = Callable[..., Awaitable[RunningBroker]]
Wire = Callable[..., Awaitable[WireClient]]
BIG = b"x" * 200_000  # overflow pages: one job of these needs ~50 new database pages


def on_disk(data_dir: Path) -> dict[str, str]:
    """Job id -> state as committed in the journal file (read-only, beside the running broker)."""
    db = sqlite3.connect(f"file:{data_dir / 'jobwire.db'}?mode=ro", uri=True)
    try:
        fields = [decode_record(record) for (record,) in db.execute("SELECT record FROM jobs")]
        return {job["id"]: STATES[job["state"]].value for job in fields}
    finally:
        db.close()


async def until_acknowledged(client: WireClient, op: str, args: dict[str, Any]) -> Reply:
    """Retry a write until the broker acknowledges it (as a client would after the fault)."""
    for _ in range(400):
        answer = await client.call(op, args)
        if isinstance(answer, Reply):
            return answer
        assert answer.code == "JOURNAL_FAILURE", answer
        await asyncio.sleep(0.05)
    raise AssertionError(f"{op} never acknowledged after the fault cleared")


async def assert_reads_served(client: WireClient, job_id: str) -> None:
    assert (await client.ok("ping", {}))["now"] > 0
    assert "faults" in (await client.ok("stats", {"queue": "faults"}))["queues"]


async def assert_get_not_durable(client: WireClient, job_id: str) -> None:
    """``get`` answers only with committed state: while the held-back batch cannot be written it
    says so (tests/test_durable_reads.py), and the connection stays."""
    error = await client.error("get", {"id": job_id})
    assert error.code == "JOURNAL_FAILURE" and "not durable yet" in error.message


# --------------------------------------------------------------------------- full disk


async def test_full_disk_fails_writes_serves_reads_and_recovers(
    start_broker: StartBroker, wire: Wire
) -> None:
    broker = await start_broker()
    assert broker.server is not None
    journal = broker.server.journal
    client = await wire(broker)
    await client.enqueue("faults", job_spec("before-1"), job_spec("before-2"))
    [job] = await client.reserve("faults")

    await journal.set_size_limit(0)  # no room to grow beyond the pages the file has now
    error = await client.error("enqueue", {"queue": "faults", "jobs": [
        job_spec("during", payload=BIG)]})
    assert error.code == "JOURNAL_FAILURE" and "not acknowledged" in error.message
    ack = await client.error("ack", {"items": [[job[R_ID], job[R_TOKEN]]]})
    assert ack.code == "JOURNAL_FAILURE"  # a later write fails too: the held-back batch is first
    await assert_reads_served(client, "before-1")
    await assert_get_not_durable(client, "before-1")
    disk = on_disk(broker.data_dir)
    assert "during" not in disk  # what failed is not on disk...
    assert {"before-1", "before-2"} <= disk.keys()  # ...and what was acknowledged is
    held_back: bool = broker.server.committer.pending_failure
    assert held_back

    await journal.set_size_limit(None)  # space again: the committer's retry writes the backlog
    after = await until_acknowledged(client, "enqueue", {"queue": "faults", "jobs": [
        job_spec("after", payload=BIG)]})
    assert after.body["ids"] == ("after",)
    disk = on_disk(broker.data_dir)
    assert {"before-1", "before-2", "during", "after"} <= disk.keys()
    assert disk[job[R_ID]] == "completed"  # the ack answered JOURNAL_FAILURE took effect later
    assert not broker.server.committer.pending_failure

    await broker.stop()  # and it all survives a restart
    again = await start_broker(data_dir=broker.data_dir)
    client = await wire(again)
    assert (await client.get("after"))["state"] == "waiting"
    assert (await client.get(job[R_ID]))["state"] == "completed"


# --------------------------------------------------------------------------- SQLITE_BUSY


async def test_a_short_lock_is_waited_out(start_broker: StartBroker, wire: Wire) -> None:
    broker = await start_broker()
    client = await wire(broker)
    await client.enqueue("faults", job_spec("first"))
    locker = sqlite3.connect(broker.data_dir / "jobwire.db", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    request_id = client.send("enqueue", {"queue": "faults", "jobs": [job_spec("waited")]})
    await assert_reads_served(client, "first")  # reads answer while the write waits
    await asyncio.sleep(0.3)
    assert not client.answered(request_id)
    locker.execute("ROLLBACK")
    locker.close()
    answer = await client.answer(request_id)
    assert isinstance(answer, Reply) and answer.body["ids"] == ("waited",)


async def test_a_lock_held_past_the_busy_timeout_fails_then_recovers(
    start_broker: StartBroker, wire: Wire
) -> None:
    broker = await start_broker()
    client = await wire(broker)
    await client.enqueue("faults", job_spec("first"))
    locker = sqlite3.connect(broker.data_dir / "jobwire.db", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        error = await client.error("enqueue", {"queue": "faults", "jobs": [job_spec("busy")]})
        assert error.code == "JOURNAL_FAILURE"  # after the journal's busy timeout
        await assert_reads_served(client, "first")
        assert "busy" not in on_disk(broker.data_dir)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    await until_acknowledged(client, "enqueue", {"queue": "faults", "jobs": [job_spec("next")]})
    assert {"first", "busy", "next"} <= on_disk(broker.data_dir).keys()


# --------------------------------------------------------------------------- I/O errors


class Daemon:
    """``jobwire serve`` with its log on a pipe (so a file-size limit cannot touch the log)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.lines: list[dict[str, Any]] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [*jobwire_command(), "serve", "--host", HOST, "--port", str(self.port),
                   "--data-dir", str(self.data_dir), "--log-format", "json"]
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        seen = len(self.lines)
        for _ in range(3000):
            if any(line.get("event") == "listening" for line in self.lines[seen:]):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited: {self.lines[-5:]}")
            threading.Event().wait(0.01)
        raise RuntimeError("broker did not start")

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            try:
                self.lines.append(json.loads(raw))
            except ValueError:
                self.lines.append({"event": "text", "text": raw.decode(errors="replace")})

    def limit_file_size(self, max_bytes: int) -> None:
        assert self.proc is not None
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.prlimit(self.proc.pid, resource.RLIMIT_FSIZE, (max_bytes, hard))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    process = Daemon(tmp_path / "data")
    yield process
    process.kill()


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs prlimit (Linux)")
async def test_io_errors_fail_writes_and_writes_resume_when_they_stop(daemon: Daemon) -> None:
    await asyncio.to_thread(daemon.start)
    client = await WireClient.connect(HOST, daemon.port)
    acknowledged = {"ok-0", "ok-1"}
    await client.enqueue("faults", *(job_spec(j) for j in sorted(acknowledged)))

    daemon.limit_file_size(4096)  # every write past 4 KiB of any file: EFBIG
    failed = []
    for i in range(3):
        answer = await client.call("enqueue", {"queue": "faults", "jobs": [
            job_spec(f"io-{i}", payload=b"y" * 20_000)]})
        assert isinstance(answer, ErrorReply) and answer.code == "JOURNAL_FAILURE", answer
        failed.append(f"io-{i}")
    await assert_reads_served(client, "ok-0")
    await assert_get_not_durable(client, "ok-0")
    for _ in range(500):  # the log arrives through a pipe and a thread
        errors = [line for line in daemon.lines if line.get("event") == "journal_failure"]
        if errors:
            break
        await asyncio.sleep(0.01)
    assert errors and all("I/O" in line["error"] or "full" in line["error"] for line in errors)

    daemon.limit_file_size(resource.RLIM_INFINITY)
    await until_acknowledged(client, "enqueue", {"queue": "faults", "jobs": [job_spec("ok-2")]})
    acknowledged.add("ok-2")
    await client.close()

    daemon.kill()  # kill -9 right after recovering: everything acknowledged must be there
    await asyncio.to_thread(daemon.start)
    client = await WireClient.connect(HOST, daemon.port)
    for job_id in sorted(acknowledged):
        assert (await client.get(job_id))["state"] == "waiting"
    for job_id in failed:  # held back, then written by the retry before ok-2's acknowledgement:
        # the held-back batch is merged under the next one, so ok-2 acknowledged means these are
        # committed too ("may or may not take effect" is about the reply, not about this order)
        answer = await client.call("get", {"id": job_id})
        assert isinstance(answer, Reply), answer
    await client.close()


# --------------------------------------------------------------------------- cannot go on


@pytest.mark.parametrize(("damage", "cause"), [
    ("not_a_database", ""), ("data_dir_is_a_file", ""),
    ("newer_jobwire", "written by a newer jobwire"),
    ("unreadable", ""),  # the journal's path is a directory: no user (root either) can read it
])
def test_an_unusable_journal_stops_the_broker_with_one_fatal_line(tmp_path: Path,
                                                                 damage: str, cause: str) -> None:
    data_dir = tmp_path / "data"
    if damage == "data_dir_is_a_file":
        data_dir.write_text("a file where the data directory should be")
    else:
        data_dir.mkdir()
    if damage == "not_a_database":
        (data_dir / "jobwire.db").write_bytes(b"this is not sqlite" * 100)
    elif damage == "newer_jobwire":
        with contextlib.closing(sqlite3.connect(data_dir / "jobwire.db")) as db:
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
            db.execute("CREATE TABLE future (x)")
            db.commit()
    elif damage == "unreadable":
        (data_dir / "jobwire.db").mkdir()
    command = [*jobwire_command(), "serve", "--port", "0", "--data-dir", str(data_dir),
               "--log-format", "json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    fatal = [e for e in events if e["event"] == "fatal"]
    assert len(fatal) == 1, done.stderr
    assert str(data_dir) in json.dumps(fatal[0]), fatal[0]
    assert cause in json.dumps(fatal[0]), fatal[0]
    assert not any(e["event"] == "listening" for e in events)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB file system of its own (tmpfs): filling it is a real full disk (ENOSPC)."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"a real full disk needs a tmpfs mount (root): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


async def test_starting_on_a_full_disk_says_disk_full(small_disk: Path,
                                                      spawn_broker: Callable[..., Any]) -> None:
    data_dir = small_disk / "data"
    process = spawn_broker(data_dir=data_dir)
    client = await WireClient.connect(process.host, process.port)
    await client.enqueue("q", *(job_spec(f"j{i}", payload=b"x" * 1_000) for i in range(50)))
    await client.close()
    assert process.terminate() == 0
    with (small_disk / "filler").open("wb") as filler:  # take every free block
        try:
            while True:
                filler.write(b"\0" * 65_536)
                filler.flush()
        except OSError:
            pass

    status, fatal = serve_until_exit(data_dir)

    assert status == 1
    assert len(fatal) == 1, fatal
    assert "disk full" in fatal[0]["error"], fatal[0]  # SQLite itself says "disk I/O error"


def serve_until_exit(data_dir: Path) -> tuple[int, list[dict[str, Any]]]:
    """Run ``jobwire serve`` on ``data_dir`` until it exits; its status and ``fatal`` events."""
    command = [*jobwire_command(), "serve", "--port", "0", "--data-dir", str(data_dir),
               "--log-format", "json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    return done.returncode, [event for event in events if event["event"] == "fatal"]


def test_python_ignores_sigxfsz() -> None:
    """The I/O-error test relies on it: a write past RLIMIT_FSIZE fails instead of killing."""
    code = "import signal; print(signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True).stdout.strip() == "True"
