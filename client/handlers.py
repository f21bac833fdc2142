"""The worker's handler table: which function runs a job, and how it is started.

A worker gets one function for every job, or ``{job_name: function}``. ``async def`` functions
(and objects with an ``async def __call__``) are awaited on the event loop; plain ``def`` ones
run in the worker's thread pool, which the worker makes only when the table holds one.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from typing import Any

from client.context import JobContext

Handler = Callable[[JobContext], Any]


class HandlerTable:
    """The handlers of a worker, by job name.

    Args:
        handler: one function for every job, or ``{job_name: function}``.

    Raises:
        TypeError: ``handler`` is ``None``.
    """

    __slots__ = ("_by_name", "_default", "_is_async", "needs_threads")

    def __init__(self, handler: Handler | Mapping[str, Handler] | None) -> None:
        if handler is None:
            raise TypeError("Worker needs a handler function or a {name: handler} mapping")
        if isinstance(handler, Mapping):
            self._by_name: dict[str, Handler] = dict(handler)
            self._default: Handler | None = None
        else:
            self._by_name, self._default = {}, handler
        self._is_async = {h: _is_async(h) for h in (*self._by_name.values(), self._default) if h}
        self.needs_threads = not all(self._is_async.values())
        """True when a plain ``def`` handler needs the thread pool."""

    def find(self, name: str) -> Handler | None:
        """The handler for jobs named ``name`` (``None``: this worker has none)."""
        return self._by_name.get(name, self._default)

    def start(self, handler: Handler, ctx: JobContext, executor: Executor | None) -> Awaitable[Any]:
        """Start ``handler`` on ``ctx``: the coroutine of an async handler, or the future of a
        plain one running in ``executor``."""
        if self._is_async[handler]:
            call: Awaitable[Any] = handler(ctx)
            return call
        return asyncio.get_running_loop().run_in_executor(executor, handler, ctx)


def _is_async(handler: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - an object with an async __call__
    )
