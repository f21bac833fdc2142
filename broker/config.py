"""The broker's settings: a frozen dataclass filled from flags, ``JOBWIRE_*`` variables, defaults.

Precedence is flag > environment variable > default, per setting. Every setting is described once,
in ``OPTIONS``: the CLI builds its flags (and their ``--help`` text, naming the variable and the
default) from that table, and ``load_settings`` resolves values from it, so the two cannot drift.

Units on the command line and in the environment:

* durations take a suffix ``ms``, ``s``, ``m``, ``h`` or ``d`` (``500ms``, ``30s``, ``1h``); a plain
  number means seconds. ``Settings`` holds them as float seconds.
* sizes take ``B``, ``KiB``, ``MiB``, ``GiB`` (also ``k``, ``m``, ``g``, ``KB``, ``MB``, ``GB``, all
  powers of 1024); a plain number means bytes.
* limits that may be off (``max_queue_jobs``, retention) accept ``none`` (or ``0`` for the job
  limits) for "no limit".
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final

from broker.replysize import min_max_frame
from protocol.checks import MAX_AUTH_TOKEN_LEN

SYNC_MODES: Final = ("full", "normal", "off")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("auto", "json", "console")
BACKOFF_KINDS: Final = ("exponential", "fixed")
ENV_PREFIX: Final = "JOBWIRE_"
JOURNAL_FILE: Final = "jobwire.db"


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the flag and variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Every broker setting, with its default. Durations are seconds, sizes bytes.

    ``token`` is excluded from ``repr`` so it never reaches a log line by accident; use
    ``redacted()`` to describe the settings.
    """

    host: str = "127.0.0.1"
    port: int = 7400
    data_dir: Path = Path("./jobwire-data")
    sync: str = "full"
    max_frame: int = 8 * 1024 * 1024
    max_payload: int = 1024 * 1024
    checkpoint_bytes: int = 16 * 1024 * 1024
    max_connections: int = 1000
    max_inflight: int = 4096
    max_parked: int = 10_000
    max_parked_per_connection: int = 256
    handshake_timeout: float = 10.0
    idle_timeout: float = 0.0
    max_queue_jobs: int | None = None
    max_total_jobs: int | None = None
    default_lease: float = 30.0
    default_attempts: int = 3
    default_backoff: str = "exponential"
    backoff_base: float = 1.0
    backoff_max: float = 3600.0
    backoff_jitter: float = 0.0
    keep_completed_count: int | None = 1000
    keep_completed_age: float | None = 86_400.0
    keep_failed_count: int | None = 10_000
    keep_failed_age: float | None = 7 * 86_400.0
    shutdown_grace: float = 5.0
    max_subscriptions: int = 1000
    subscription_buffer_events: int = 10_000
    subscription_buffer_bytes: int = 1024 * 1024
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    log_level: str = "info"
    log_format: str = "auto"
    accept_journal_loss: bool = False

    @property
    def journal_path(self) -> Path:
        """The SQLite journal: ``<data_dir>/jobwire.db``."""
        return self.data_dir / JOURNAL_FILE

    def redacted(self) -> dict[str, Any]:
        """The settings as plain values for a log line, with the token replaced by ``"<set>"``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "token":
                value = None if value is None else "<set>"
            elif isinstance(value, Path):
                value = str(value)
            out[f.name] = value
        return out


# --------------------------------------------------------------------------- value parsers

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_DURATION_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}
_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS: Final = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_NONE_WORDS: Final = frozenset({"none", "off", "unlimited"})


def parse_duration(text: str) -> float:
    """``"500ms"``, ``"30s"``, ``"5m"``, ``"1h"``, ``"7d"`` or a plain number of seconds → seconds.

    Raises:
        ValueError: not a non-negative duration.
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration (e.g. 500ms, 30s, 5m, 1h, 7d)")
    unit = (match.group(2) or "s").lower()
    return float(match.group(1)) * _DURATION_UNITS[unit]


def parse_size(text: str) -> int:
    """``"8MiB"``, ``"512k"``, ``"1GB"`` or a plain number of bytes → bytes (powers of 1024).

    Raises:
        ValueError: not a non-negative size.
    """
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size (e.g. 1048576, 512KiB, 8MiB)")
    unit = (match.group(2) or "").lower().rstrip("b").rstrip("i")
    return int(match.group(1)) * _SIZE_UNITS[unit]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"{text!r} is not an integer >= 1")
    return value


def _checkpoint_size(text: str) -> int:
    value = parse_size(text)
    if value < 64 * 1024:
        raise ValueError(f"{text!r} is below 64KiB (a checkpoint after nearly every commit)")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65_535:
        raise ValueError(f"{text!r} is not a port number (0..65535; 0 picks a free one)")
    return value


def _job_limit(text: str) -> int | None:
    """A job-count limit: a positive integer, or ``0``/``none`` for no limit."""
    if text.strip().lower() in _NONE_WORDS:
        return None
    value = int(text)
    if value < 0:
        raise ValueError(f"{text!r} is not a count >= 0")
    return value or None


def _retention_count(text: str) -> int | None:
    """How many finished jobs to keep: an integer >= 0 (0 removes at once), or ``none``."""
    if text.strip().lower() in _NONE_WORDS:
        return None
    value = int(text)
    if value < 0:
        raise ValueError(f"{text!r} is not a count >= 0")
    return value


def _retention_age(text: str) -> float | None:
    if text.strip().lower() in _NONE_WORDS:
        return None
    return parse_duration(text)


def _jitter(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{text!r} is not a fraction in 0..1")
    return value


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return value

    return parse


def _yes_no(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("yes", "no", "true", "false", "1", "0"):
        raise ValueError(f"{text!r} is not yes or no")
    return value in ("yes", "true", "1")


def _token(text: str) -> str:
    if not text:
        raise ValueError("the token is empty")
    return text


# --------------------------------------------------------------------------- the option table


@dataclass(frozen=True, slots=True)
class Option:
    """One setting as the CLI and the environment see it."""

    name: str
    parse: Callable[[str], Any]
    help: str
    metavar: str
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration: ``30s``, ``1h``, ``7d``, ``500ms``."""
    for unit, size in (("d", 86_400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    if seconds == 0:
        return "0"
    return f"{seconds * 1000:g}ms"


def _describe_default(name: str, value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and name != "backoff_jitter":  # the other floats are durations
        return format_duration(value)
    if isinstance(value, int) and value >= 1 << 20 and value % (1 << 20) == 0:
        return f"{value >> 20}MiB"
    return str(value)


OPTIONS: Final[tuple[Option, ...]] = (
    Option("host", str, "address to listen on", "ADDR"),
    Option("port", _port, "TCP port to listen on (0 picks a free one)", "PORT"),
    Option("data_dir", Path, "directory of the journal (created if missing)", "DIR"),
    Option("sync", _choice(SYNC_MODES), "durability: full survives power loss, normal a broker "
           "crash, off promises nothing", "MODE", SYNC_MODES),
    Option("max_frame", parse_size, "largest frame accepted (at least 2 x max-payload + 2540)",
           "SIZE"),
    Option("max_payload", parse_size, "largest job payload, result or progress value", "SIZE"),
    Option("checkpoint_bytes", _checkpoint_size, "WAL size past which a commit is followed by "
           "a checkpoint (copying the WAL into the database file)", "SIZE"),
    Option("max_connections", _positive_int, "open connections; more are refused with "
           "OVERLOADED", "N"),
    Option("max_inflight", _positive_int, "unanswered requests per connection; reading pauses "
           "there and requests already read beyond it get OVERLOADED", "N"),
    Option("max_parked", _positive_int, "long-poll reserve and wait requests parked in the "
           "broker at once; more get OVERLOADED", "N"),
    Option("max_parked_per_connection", _positive_int, "parked requests per connection; more "
           "get OVERLOADED", "N"),
    Option("handshake_timeout", parse_duration, "time a new connection has to send hello", "DUR"),
    Option("idle_timeout", parse_duration, "close connections silent this long with nothing "
           "pending (0 = never)", "DUR"),
    Option("max_queue_jobs", _job_limit, "unfinished jobs per queue; more get QUEUE_FULL "
           "(0 or none = no limit)", "N"),
    Option("max_total_jobs", _job_limit, "unfinished jobs in the broker; more get QUEUE_FULL "
           "(0 or none = no limit)", "N"),
    Option("default_lease", parse_duration, "lease of a reserved job when neither the job nor "
           "the reserve names one", "DUR"),
    Option("default_attempts", _positive_int, "attempts of a job that names none", "N"),
    Option("default_backoff", _choice(BACKOFF_KINDS), "backoff of a job that names none",
           "KIND", BACKOFF_KINDS),
    Option("backoff_base", parse_duration, "default backoff: delay after the first failure",
           "DUR"),
    Option("backoff_max", parse_duration, "default backoff: longest delay", "DUR"),
    Option("backoff_jitter", _jitter, "default backoff: random fraction taken off each delay",
           "FRACTION"),
    Option("keep_completed_count", _retention_count, "completed jobs kept per queue (none = "
           "all)", "N"),
    Option("keep_completed_age", _retention_age, "completed jobs kept at most this long "
           "(none = forever)", "DUR"),
    Option("keep_failed_count", _retention_count, "failed jobs kept per queue (none = all)", "N"),
    Option("keep_failed_age", _retention_age, "failed jobs kept at most this long (none = "
           "forever)", "DUR"),
    Option("shutdown_grace", parse_duration, "on SIGTERM/SIGINT, time workers get to ack (or "
           "release) the jobs they hold; leases still held then fail one attempt", "DUR"),
    Option("max_subscriptions", _positive_int, "event subscriptions in the broker (16 per "
           "connection); more get OVERLOADED", "N"),
    Option("subscription_buffer_events", _positive_int, "events buffered per subscription for "
           "a slow reader; past it (or the bytes) it gets one lagged event with the count lost",
           "N"),
    Option("subscription_buffer_bytes", parse_size, "encoded event bytes buffered per "
           "subscription (see subscription-buffer-events)", "SIZE"),
    Option("token", _token, "shared secret clients must send in hello (prefer --token-file or "
           "the variable: flags show in ps)", "TOKEN"),
    Option("token_file", Path, "file holding the token (surrounding whitespace ignored)", "FILE"),
    Option("tls_cert", Path, "PEM certificate chain: serve TLS (clients use jobwires://)",
           "FILE"),
    Option("tls_key", Path, "PEM private key of the TLS certificate", "FILE"),
    Option("tls_client_ca", Path, "PEM CA certificates: require client certificates they "
           "signed (mutual TLS)", "FILE"),
    Option("log_level", _choice(LOG_LEVELS), "least severe log level written", "LEVEL",
           LOG_LEVELS),
    Option("log_format", _choice(LOG_FORMATS), "auto = readable on a terminal, JSON lines "
           "otherwise", "FORMAT", LOG_FORMATS),
    Option("accept_journal_loss", _yes_no, "start on a damaged journal, without what SQLite "
           "cannot recover (a copy of the files is set aside first); for one start, after "
           "looking", "yes|no"),
)

_DEFAULTS: Final = Settings()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting to ``parser``; ``--help`` names its variable and default.

    Flags default to ``None`` so ``load_settings`` can tell "not given" from "given".
    """
    for option in OPTIONS:
        default = "<unset>" if option.name == "token" else _describe_default(
            option.name, getattr(_DEFAULTS, option.name)
        )
        switch = option.parse is _yes_no  # a bare --flag means yes
        parser.add_argument(
            option.flag,
            dest=option.name,
            metavar=option.metavar if option.choices is None else None,
            choices=option.choices,
            default=None,
            nargs="?" if switch else None,
            const="yes" if switch else None,
            help=f"{option.help} [env {option.env}; default {default}]",
        )


def load_settings(
    flags: Mapping[str, str | None] | argparse.Namespace,
    environ: Mapping[str, str],
) -> Settings:
    """Resolve every setting: a flag wins over ``JOBWIRE_<NAME>``, which wins over the default.

    Args:
        flags: raw flag strings by setting name (``None`` = not given), e.g. an argparse namespace
            from a parser built with ``add_arguments``.
        environ: the environment (``os.environ``).

    Returns:
        The settings, with ``token`` read from ``token_file`` when that is the source given.

    Raises:
        ConfigError: a value does not parse, both a token and a token file are set, or the token
            file cannot be read.
    """
    raw = vars(flags) if isinstance(flags, argparse.Namespace) else flags
    values: dict[str, Any] = {}
    for option in OPTIONS:
        text = raw.get(option.name)
        source = option.flag
        if text is None:
            text = environ.get(option.env)
            source = option.env
        if text is None:
            continue
        try:
            values[option.name] = option.parse(text)
        except ValueError as exc:
            shown = "<redacted>" if option.name == "token" else repr(text)
            raise ConfigError(f"{source}={shown}: {exc}") from None
    settings = replace(_DEFAULTS, **values)
    if settings.token is not None and settings.token_file is not None:
        raise ConfigError("set either a token or a token file, not both")
    if settings.token_file is not None:
        try:
            token = settings.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {settings.token_file}: {exc}") from None
        if not token:
            raise ConfigError(f"the token file {settings.token_file} is empty")
        settings = replace(settings, token=token)
    if settings.token is not None and len(settings.token) > MAX_AUTH_TOKEN_LEN:
        raise ConfigError(f"the token has {len(settings.token)} characters; a hello can carry at "
                          f"most {MAX_AUTH_TOKEN_LEN}, so no client could authenticate")
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigError("set both a TLS certificate and its key (--tls-cert, --tls-key)")
    if settings.tls_client_ca is not None and settings.tls_cert is None:
        raise ConfigError("a TLS client CA needs a TLS certificate and key as well")
    if settings.max_frame < min_max_frame(settings.max_payload):
        raise ConfigError(
            f"max_frame must be at least {min_max_frame(settings.max_payload)} bytes with "
            f"max_payload {settings.max_payload}: a reserved job (a payload and a progress value "
            "of max_payload bytes each) must fit in one frame"
        )
    return settings
