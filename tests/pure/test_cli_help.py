"""Every ``jobwire`` command has its ``--help``, from one parser built above the layers."""

from __future__ import annotations

import pytest

from jobwire.cli import build_parser, main

COMMANDS = ["serve", "worker", "stats", "job", "pause", "resume", "clean", "failed", "limit",
            "bench"]
BENCH_SCENARIOS = ["enqueue", "drain", "latency", "mixed", "recovery", "suite"]


def test_the_command_list_is_the_layers_commands() -> None:
    help_text = build_parser().format_help()
    for command in COMMANDS:
        assert f"    {command} " in help_text


@pytest.mark.parametrize(
    "args", [[command] for command in COMMANDS] + [["bench", s] for s in BENCH_SCENARIOS],
)
def test_every_command_has_its_help(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--help"])
    out, err = capsys.readouterr()
    assert (exit_info.value.code, err) == (0, "")
    assert out.startswith(f"usage: jobwire {' '.join(args)} ")


def test_no_command_prints_the_usage_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert capsys.readouterr().err.startswith("usage: jobwire ")


def test_bench_alone_lists_its_scenarios_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: jobwire bench ")
    assert all(scenario in err for scenario in BENCH_SCENARIOS)
