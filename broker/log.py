"""Logging for the broker: structlog, JSON lines off a terminal, readable on one.

Every log line is an event name plus key/value pairs (``log.info("connection_closed",
conn=3, reason="peer closed")``). Events the broker emits: ``starting`` (the settings, token
redacted), ``recovered`` (jobs loaded, seconds), ``listening``, ``connection_opened``,
``connection_closed`` (with a reason), ``protocol_error``, ``journal_failure``, ``internal_error``,
``shutdown_started``, ``shutdown_complete``; at debug level ``checkpoint_started`` and
``checkpoint_complete``.

Two keys are never written, whatever a caller passes: ``token`` and ``payload`` (the
``_drop_secrets`` processor removes them), so a careless call cannot leak a secret or job data.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Final, TextIO, cast

import structlog
from structlog.typing import FilteringBoundLogger

_FORBIDDEN_KEYS: Final = ("token", "payload", "result")
_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _drop_secrets(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in _FORBIDDEN_KEYS:
        if key in event_dict:
            event_dict[key] = "<redacted>"
    return event_dict


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog for the whole process.

    Args:
        level: ``debug``, ``info``, ``warning`` or ``error``.
        fmt: ``json`` (one JSON object per line), ``console`` (readable, colour on a terminal) or
            ``auto`` (console when ``stream`` is a terminal, JSON otherwise).
        stream: where lines go; standard error by default.

    Raises:
        ValueError: an unknown level or format.
    """
    if level not in _LEVELS:
        raise ValueError(f"unknown log level {level!r}")
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"unknown log format {fmt!r}")
    out = stream if stream is not None else sys.stderr
    is_tty = out.isatty()
    if fmt == "auto":
        fmt = "console" if is_tty else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=is_tty)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # A companion on the broker's loop (serve --http's gateway) logs through the stdlib logger
    # ``jobwire`` (client/log.py): its lines go to the same stream in the same format.
    handler = logging.StreamHandler(out)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                           structlog.processors.TimeStamper(fmt="iso", utc=True),
                           structlog.stdlib.ExtraAdder(), _drop_secrets],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    ))
    library = logging.getLogger("jobwire")
    library.handlers = [h for h in library.handlers if isinstance(h, logging.NullHandler)]
    library.addHandler(handler)
    library.setLevel(_LEVELS[level])
    library.propagate = False


def get_logger(component: str) -> FilteringBoundLogger:
    """A logger whose lines carry ``component`` (``server``, ``session``, ...).

    Lazy: each line goes through the configuration in force when it is logged. A module makes
    its logger at import, which may come before ``configure_logging`` (a tool importing the
    journal, then configuring): a logger bound at once would keep structlog's defaults for
    good (every level, to standard output). Every broker log call is off the hot path
    (connections, checkpoints, failures), so assembling the logger per call costs nothing
    that shows.
    """
    return cast(FilteringBoundLogger, structlog.get_logger(component=component))
