"""``--processes``: its values, how a child's exit is described, and a child's command line (the
same worker flags, parsed back to the same values, minus ``--processes``)."""

from __future__ import annotations

import argparse
import signal
import sys

import pytest

from client.processes import available_cpus, describe_exit, parse_processes
from client.worker_cli import child_command
from jobwire.cli import build_parser


def test_processes_is_a_count_or_auto() -> None:
    assert parse_processes("3") == 3
    assert parse_processes("auto") == parse_processes(" AUTO ") == available_cpus() >= 1
    for bad in ("0", "-2", "two", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_processes(bad)


def test_the_parser_refuses_a_bad_count(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["worker", "m:f", "--processes", "0"])
    assert info.value.code == 2
    assert "--processes: must be at least 1" in capsys.readouterr().err


def test_exits_are_described_by_status_or_signal() -> None:
    assert describe_exit(0) == "exit status 0"
    assert describe_exit(3) == "exit status 3"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(-200) == "killed by signal 200"


def test_a_child_gets_the_same_worker_flags_without_processes() -> None:
    given = build_parser().parse_args([
        "worker", "tasks:handlers", "-q", "a", "--queue", "b", "-c", "3", "--prefetch", "5",
        "--lease", "1.5",
        "--timeout", "20", "--grace", "2", "--serializer", "json", "--url",
        "jobwire://tok@127.0.0.1:7401", "--log-level", "debug", "--processes", "4",
    ])
    command = child_command(given)
    assert command[:4] == [sys.executable, "-m", "client.worker_cli", "worker"]
    child = build_parser().parse_args([*command[3:], "--supervisor-fd", "7"])
    for name in ("target", "queues", "concurrency", "prefetch", "lease", "timeout", "grace",
                 "serializer", "url", "log_level"):
        assert getattr(child, name) == getattr(given, name), name
    assert (given.processes, child.processes, child.supervisor_fd) == (4, 1, 7)


def test_flags_not_given_stay_unset_in_the_child() -> None:
    given = build_parser().parse_args(["worker", "tasks:worker", "--processes", "2"])
    assert child_command(given)[4:] == ["tasks:worker", "--log-level", "info"]
