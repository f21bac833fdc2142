"""The ``jobwire`` and ``python -m broker`` commands as processes, above all as a plain install.

A plain install has the runtime dependencies only, no bench extras. The interpreter runs with
``-S`` (no site-packages) and a ``PYTHONPATH`` of the repository plus a directory of symlinks to
exactly the distributions ``pip install jobwire`` brings (the dependencies of ``pyproject.toml``
without extras, followed transitively). ``bench/`` is there, as it is in the installed package;
rich, psutil, hdrhistogram and matplotlib are not, so the import of ``bench.cli`` fails for real.
The first test checks that the environment is that.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def _top_level_entries(distribution: importlib.metadata.Distribution) -> set[str]:
    names = set()
    for file in distribution.files or ():
        first = file.parts[0]
        if first not in ("..", "__pycache__") and not first.endswith((".dist-info", ".pth")):
            names.add(first)
    return names


@pytest.fixture(scope="module")
def plain_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment variables that run ``python -S`` as a plain install of jobwire."""
    site = tmp_path_factory.mktemp("plain-site")
    todo = [
        Requirement(text) for text in importlib.metadata.requires("jobwire") or ()
    ]
    seen: set[str] = set()
    while todo:
        requirement = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        if requirement.name.lower() in seen:
            continue
        seen.add(requirement.name.lower())
        distribution = importlib.metadata.distribution(requirement.name)
        for entry in _top_level_entries(distribution):
            (site / entry).symlink_to(Path(str(distribution.locate_file(entry))))
        todo.extend(Requirement(text) for text in distribution.requires or ())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "JOBWIRE_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(site)])
    return env


def jobwire(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-S", "-m", "jobwire", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_plain_environment_has_the_runtime_dependencies_and_no_bench_extras(
    plain_env: dict[str, str],
) -> None:
    probe = ("import importlib.util as u; print(' '.join(str(u.find_spec(m) is not None) for m in "
             "('uvloop', 'msgpack', 'structlog', 'bench', 'psutil', 'rich', 'hdrh', "
             "'matplotlib', 'pytest')))")
    done = subprocess.run([sys.executable, "-S", "-c", probe], env=plain_env, capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.split() == ["True"] * 4 + ["False"] * 5


@pytest.mark.parametrize("command", [[], ["serve"], ["worker"], ["stats"], ["failed"]])
def test_help_prints_the_help_and_nothing_else(plain_env: dict[str, str],
                                               command: list[str]) -> None:
    done = jobwire(plain_env, *command, "--help")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith(f"usage: {' '.join(['jobwire', *command])} ")


def test_the_command_list_names_bench_without_importing_it(plain_env: dict[str, str]) -> None:
    assert "bench     measure a broker" in jobwire(plain_env, "--help").stdout


@pytest.mark.parametrize("args",
                         [["bench"], ["bench", "--help"], ["bench", "enqueue", "--jobs", "1"]])
def test_bench_without_the_extras_says_how_to_install_them_in_one_line(
    plain_env: dict[str, str], args: list[str],
) -> None:
    done = jobwire(plain_env, *args)
    assert (done.returncode, done.stdout) == (2, "")
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("jobwire: error: `jobwire bench` needs the bench extras")
    assert "pip install 'jobwire[bench]'" in lines[0]


def test_the_broker_imports_neither_client_nor_bench(plain_env: dict[str, str]) -> None:
    probe = ("import sys, broker.cli, broker.server, broker.__main__; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('client', 'bench')))")
    done = subprocess.run([sys.executable, "-S", "-c", probe], env=plain_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_serve_writes_only_its_own_log_lines(plain_env: dict[str, str], tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-S", "-m", "jobwire", "serve", "--port", "0", "--data-dir",
         str(tmp_path / "data"), "--log-format", "json"],
        env=plain_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        lines = []
        for line in process.stderr:  # up to the line that says the broker is listening
            lines.append(line)
            if "listening" in line:
                break
        process.send_signal(signal.SIGTERM)
        stdout, rest = process.communicate(timeout=60)
    finally:
        process.kill()
    lines.extend(rest.splitlines())
    assert process.returncode == 0
    assert stdout == ""
    events = [json.loads(line)["event"] for line in lines if line.strip()]
    assert "listening" in " ".join(events)


def test_python_m_broker_and_bad_settings_exit_2() -> None:
    help_run = subprocess.run([sys.executable, "-m", "broker", "--help"], capture_output=True,
                              text=True, timeout=60, check=False)
    assert help_run.returncode == 0 and "--data-dir" in help_run.stdout
    bad = subprocess.run([sys.executable, "-m", "broker"], capture_output=True, text=True,
                         timeout=60, check=False, env={**os.environ, "JOBWIRE_SYNC": "maybe"})
    assert bad.returncode == 2 and "JOBWIRE_SYNC" in bad.stderr
