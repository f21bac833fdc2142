"""``jobwire worker`` with a configured ``Worker`` target refuses the flags it would ignore
(issue 16, item 7), and a handler target gets the documented defaults."""

from __future__ import annotations

import pytest

from client import JobContext, Worker
from client.worker_cli import build_worker
from jobwire.cli import build_parser


async def double(job: JobContext) -> int:
    return int(job.data) * 2


CONFIGURED = Worker("jobwire://127.0.0.1:7400", ["configured"], double, concurrency=4,
                    handle_signals=False)

FLAGS = [["--queue", "q"], ["-q", "q"], ["--concurrency", "3"], ["-c", "3"], ["--lease", "5"],
         ["--prefetch", "4"], ["--prefetch", "auto"],
         ["--timeout", "5"], ["--grace", "1"], ["--serializer", "json"],
         ["--url", "jobwire://127.0.0.1:7401"]]


@pytest.mark.parametrize("flag", FLAGS, ids=[" ".join(f) for f in FLAGS])
def test_a_worker_instance_refuses_each_worker_flag(flag: list[str]) -> None:
    args = build_parser().parse_args(["worker", "mod:worker", *flag])
    long_name = {"-q": "--queue", "-c": "--concurrency"}.get(flag[0], flag[0])
    with pytest.raises(ValueError, match=f"configured Worker: drop {long_name} ") as info:
        build_worker(args, CONFIGURED)
    assert "queues configured, concurrency 4" in str(info.value)


def test_a_worker_instance_names_every_flag_given() -> None:
    args = build_parser().parse_args(["worker", "mod:worker", "-c", "3", "--grace", "2"])
    with pytest.raises(ValueError, match="drop --concurrency, --grace "):
        build_worker(args, CONFIGURED)


def test_a_worker_instance_runs_as_configured_with_log_level_only() -> None:
    args = build_parser().parse_args(["worker", "mod:worker", "--log-level", "debug"])
    assert build_worker(args, CONFIGURED) is CONFIGURED


def test_a_handler_gets_the_flags_or_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBWIRE_URL", raising=False)
    worker = build_worker(build_parser().parse_args(["worker", "mod:double"]), double)
    assert (worker.queues, worker.concurrency, worker.grace) == (("default",), 10, 30.0)
    args = build_parser().parse_args(["worker", "mod:double", "-q", "a", "-c", "3", "--grace",
                                      "2"])
    worker = build_worker(args, double)
    assert (worker.queues, worker.concurrency, worker.grace) == (("a",), 3, 2.0)


def test_prefetch_is_auto_by_default_or_the_number_given() -> None:
    worker = build_worker(build_parser().parse_args(["worker", "mod:double"]), double)
    assert worker.prefetch.cap == 10 and worker.prefetch.allowance == 0  # auto: earned
    auto = build_parser().parse_args(["worker", "mod:double", "--prefetch", "auto", "-c", "4"])
    assert build_worker(auto, double).prefetch.cap == 4
    fixed = build_worker(build_parser().parse_args(["worker", "mod:double", "--prefetch", "7"]),
                         double)
    assert fixed.prefetch.cap == fixed.prefetch.allowance == 7


@pytest.mark.parametrize("bad", ["-1", "some", "1.5", ""])
def test_a_bad_prefetch_is_refused(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "mod:double", "--prefetch", bad])
    assert "expected a number >= 0 or auto" in capsys.readouterr().err
