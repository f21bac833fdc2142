"""The client library's logging: quiet unless the application configures ``logging``.

A library embedded in an application must not write to its stdout. Every client module logs
through a named standard-library logger under ``jobwire`` (``jobwire.client``,
``jobwire.worker``, ``jobwire.gateway``), and ``jobwire`` carries a ``logging.NullHandler``: with
logging unconfigured nothing is printed; ``logging.basicConfig(level=logging.WARNING)`` (or a
handler on ``jobwire``) shows the library's warnings.

Calls keep structlog's shape (``log.warning("reserve failed", error=..., retry_in=...)``). The
processors here are the library's own, not structlog's global configuration (an application
may configure structlog for itself, or the broker may run in the same process): the level is
checked first (``filter_by_level``, so a disabled debug line costs one ``isEnabledFor``), and the
key/value pairs travel to ``logging`` as ``extra`` (``render_to_log_kwargs``), where a handler
can format them (``structlog.stdlib.ProcessorFormatter`` with ``ExtraAdder``, as
``configure_cli_output`` does for the command-line tools).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Final, TextIO

import structlog

ROOT: Final = "jobwire"

logging.getLogger(ROOT).addHandler(logging.NullHandler())

# Keys a LogRecord already has: logging refuses them in ``extra`` (KeyError from a log call).
_RESERVED: Final = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _rename_reserved(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in [key for key in event_dict if key in _RESERVED and key != "exc_info"]:
        event_dict[f"{key}_"] = event_dict.pop(key)
    return event_dict


_PROCESSORS: Final = [
    structlog.stdlib.filter_by_level,
    _rename_reserved,
    structlog.stdlib.render_to_log_kwargs,
]


def get_logger(name: str) -> Any:
    """A structlog logger over the standard-library logger ``name`` (under ``jobwire``)."""
    return structlog.wrap_logger(
        logging.getLogger(name), processors=_PROCESSORS,
        wrapper_class=structlog.stdlib.BoundLogger, cache_logger_on_first_use=True,
    )


def configure_cli_output(level: str = "info", stream: TextIO | None = None,
                         fmt: str = "auto") -> None:
    """Show the library's lines at ``level`` and above (for the ``jobwire`` commands).

    Args:
        level: ``debug``, ``info``, ``warning`` or ``error``.
        stream: where lines go (standard output by default, as the commands always wrote).
        fmt: ``console`` (readable), ``json`` (one object per line) or ``auto`` (console on a
            terminal, JSON otherwise).
    """
    out = stream if stream is not None else sys.stdout
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    renderer: Any = (structlog.processors.JSONRenderer() if fmt == "json"
                     else structlog.dev.ConsoleRenderer(colors=out.isatty()))
    handler = logging.StreamHandler(out)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.stdlib.ExtraAdder(),
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    ))
    root = logging.getLogger(ROOT)
    for old in [h for h in root.handlers if getattr(h, "jobwire_cli", False)]:
        root.removeHandler(old)
    handler.jobwire_cli = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.getLevelNamesMapping()[level.upper()])
    root.propagate = False  # this handler shows them; a root handler would print them twice
