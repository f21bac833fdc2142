"""SIGTERM and SIGINT as a graceful stop, for the worker and its process supervisor."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from functools import partial


def install_stop_signals(
    on_signal: Callable[[signal.Signals], object],
) -> list[Callable[[], object]]:
    """Make SIGTERM and SIGINT call ``on_signal(sig)`` on the running loop.

    Returns:
        One callable per installed handler that removes it. Empty outside the main thread, and
        for a signal the loop cannot handle (another platform or loop).
    """
    if threading.current_thread() is not threading.main_thread():
        return []
    loop = asyncio.get_running_loop()
    removers: list[Callable[[], object]] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError):  # not supported on this loop/platform
            continue
        removers.append(partial(loop.remove_signal_handler, sig))
    return removers
