"""Settings resolution (flag > environment > default), value parsing, the CLI's help, logging."""

from __future__ import annotations

import argparse
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from broker.cli import add_serve_parser
from broker.config import (
    OPTIONS,
    ConfigError,
    Settings,
    format_duration,
    load_settings,
    parse_duration,
    parse_size,
)
from broker.log import configure_logging, get_logger
from jobwire.cli import build_parser


def test_defaults() -> None:
    settings = load_settings({}, {})
    assert settings == Settings()
    assert (settings.host, settings.port, settings.sync) == ("127.0.0.1", 7400, "full")
    assert settings.journal_path == Path("./jobwire-data/jobwire.db")
    assert settings.max_frame == 8 << 20 and settings.max_payload == 1 << 20


def test_a_flag_wins_over_the_environment_which_wins_over_the_default() -> None:
    env = {"JOBWIRE_PORT": "8000", "JOBWIRE_SYNC": "normal", "JOBWIRE_MAX_FRAME": "4MiB"}
    settings = load_settings({"port": "9000"}, env)
    assert (settings.port, settings.sync, settings.max_frame) == (9000, "normal", 4 << 20)
    assert settings.host == "127.0.0.1"


def test_every_setting_has_a_flag_and_a_variable_in_the_help() -> None:
    assert {option.name for option in OPTIONS} == set(Settings.__dataclass_fields__)
    serve = add_serve_parser(argparse.ArgumentParser().add_subparsers())
    text = " ".join(serve.format_help().split())
    for option in OPTIONS:
        assert f"{option.flag} " in text
        assert f"[env {option.env}; default " in text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30.0), ("500ms", 0.5), ("1.5s", 1.5), ("5m", 300.0), ("2h", 7200.0), ("7d", 604800.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_duration_spelling_round_trips() -> None:
    for seconds in (0.0, 0.25, 1.0, 30.0, 90.0, 3600.0, 86_400.0, 7 * 86_400.0):
        assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [("1024", 1024), ("512k", 512 << 10), ("8MiB", 8 << 20), ("1GB", 1 << 30), ("3 m", 3 << 20)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"JOBWIRE_PORT": "70000"}, "JOBWIRE_PORT"),
        ({"JOBWIRE_SYNC": "sometimes"}, "JOBWIRE_SYNC"),
        ({"JOBWIRE_MAX_FRAME": "big"}, "JOBWIRE_MAX_FRAME"),
        ({"JOBWIRE_BACKOFF_JITTER": "2"}, "JOBWIRE_BACKOFF_JITTER"),
        ({"JOBWIRE_MAX_PAYLOAD": "16MiB"}, "max_payload"),
    ],
)
def test_bad_values_are_refused_naming_their_source(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_settings({}, env)


def test_limits_and_retention_accept_none() -> None:
    settings = load_settings({"max_queue_jobs": "0", "keep_completed_age": "none"},
                             {"JOBWIRE_MAX_TOTAL_JOBS": "5000", "JOBWIRE_KEEP_FAILED_COUNT": "0"})
    assert settings.max_queue_jobs is None and settings.max_total_jobs == 5000
    assert settings.keep_completed_age is None and settings.keep_failed_count == 0


def test_the_token_comes_from_a_file_and_is_never_shown(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("  hunter2-but-long\n")
    settings = load_settings({"token_file": str(token_file)}, {})
    assert settings.token == "hunter2-but-long"
    assert "hunter2" not in repr(settings)
    assert settings.redacted()["token"] == "<set>"
    with pytest.raises(ConfigError, match="not both"):
        load_settings({"token_file": str(token_file)}, {"JOBWIRE_TOKEN": "x"})
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings({"token_file": str(tmp_path / "missing")}, {})


def test_a_bad_token_value_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"token": ""}, {})
    assert "<redacted>" in str(info.value)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    library = logging.getLogger("jobwire")  # configure_logging routes the library there too
    library.handlers = [h for h in library.handlers if isinstance(h, logging.NullHandler)]
    library.setLevel(logging.NOTSET)
    library.propagate = True


@pytest.mark.usefixtures("restore_logging")
def test_json_logs_redact_secrets_and_payloads() -> None:
    stream = io.StringIO()
    configure_logging("info", "auto", stream)  # a StringIO is not a terminal: JSON lines
    log = get_logger("test")
    log.info("starting", token="hunter2", payload=b"secret", port=7400)
    log.debug("hidden")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 1
    line = lines[0]
    assert (line["event"], line["port"], line["component"], line["level"]) == (
        "starting", 7400, "test", "info")
    assert "hunter2" not in stream.getvalue() and "secret" not in stream.getvalue()
    configure_logging("info", "console", io.StringIO())


@pytest.mark.usefixtures("restore_logging")
def test_a_logger_made_before_logging_is_configured_follows_the_configuration() -> None:
    early = get_logger("early")  # as a module's logger is made when it is imported
    stream = io.StringIO()
    configure_logging("warning", "json", stream)
    early.debug("checkpoint_started")
    early.info("hidden too")
    early.warning("shown", n=1)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["event"], line["component"], line["n"]) for line in lines] == [
        ("shown", "early", 1)]


def test_serve_help_and_python_m_broker_parse() -> None:
    parser = build_parser()
    args = parser.parse_args(["serve", "--port", "0", "--sync", "off"])
    settings = load_settings(args, {})
    assert (settings.port, settings.sync) == (0, "off")


def test_the_readme_lists_every_setting() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start = readme.index("<!-- section: configuration -->")
    section = readme[start:readme.index("<!-- /section: configuration -->", start)]
    for option in OPTIONS:
        assert f"| `{option.flag}` | `{option.env}` |" in section, option.flag
