"""The worker's handler table: which function runs a job, and how it is started.

A worker gets one function for every job, or ``{job_name: function}``. ``async def`` functions
(and objects with an ``async def __call__``) are awaited on the event loop; plain ``def`` ones
run in the worker's thread pool, which the worker makes only when the table holds one.

``run_limited`` awaits a started handler within its time limits: the job's own ``timeout``
(from the reserve reply) and the worker's ``job_timeout``. At the limit an async handler is
cancelled; a plain ``def`` handler's thread cannot be stopped, so the worker stops waiting for
it and reports the failure at the limit while the thread runs on (holding its pool thread until
it returns; it may check ``ctx.timed_out`` to give up early).
"""

from __future__ import annotations

import asyncio
import inspect
import time
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


async def run_limited(call: Awaitable[Any], ctx: JobContext, job_timeout: float | None) -> Any:
    """Await a started handler (``HandlerTable.start``) within its time limits.

    Args:
        call: the handler's coroutine or thread future.
        ctx: the job; ``ctx.timeout_at`` is its own limit (the job's ``timeout``).
        job_timeout: the worker's limit in seconds from now, or ``None``.

    Returns:
        What the handler returned.

    Raises:
        TimeoutError: a limit ended the attempt (``"job timed out after ..."``; the handler was
            cancelled, and ``ctx.timed_out`` is set). Whatever the handler raised otherwise.
    """
    now = time.monotonic()
    limits: list[tuple[float, str]] = []
    if job_timeout is not None:
        limits.append((now + job_timeout, f"job timed out after {job_timeout:g}s"))
    if ctx.timeout_at is not None:
        limits.append((ctx.timeout_at, f"job timed out after {ctx.timeout:g}s (the job's timeout)"))
    if not limits:
        return await call
    until, message = min(limits)
    scope = asyncio.timeout(until - now)
    try:
        async with scope:
            return await call
    except TimeoutError as exc:
        if not scope.expired():
            raise  # the handler's own TimeoutError
        ctx.timed_out = True
        raise TimeoutError(message) from exc
