"""One SQLite connection on a thread of its own: the journal's way to run SQL off the event loop.

Theory of operation: ``sqlite3`` calls block, so the journal makes them on one thread that opens
the connection and is the only one to use it for its whole life (``sqlite3``'s
``check_same_thread`` stays on and holds). A call is a plain function of the connection, queued
with ``SimpleQueue.put`` and answered with ``call_soon_threadsafe`` on the caller's loop: one
hand-off each way, whatever the function does. A whole transaction (``BEGIN`` ... ``COMMIT``, its
rollback on failure included) is one function, so it costs one round trip; a hop per statement
costs a thread hand-off and a loop wake-up per statement.

This is what aiosqlite does inside. The journal used to reach it through aiosqlite's private
``_execute``/``_conn`` (pinned to the versions that had them); owning the thread, in these few
lines, removes both the private calls and the pin, and nothing else needs aiosqlite.

Invariants:

1. Calls run one at a time, in the order they were queued, each to its end even if the task
   awaiting it was cancelled (its result is then dropped).
2. ``close`` is queued like a call: every earlier call runs first; later calls are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from queue import SimpleQueue
from typing import Any, TypeVar

_T = TypeVar("_T")
_Call = tuple["asyncio.Future[Any]", Callable[..., Any] | None, tuple[Any, ...]]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the awaiting task was cancelled
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def _answer(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to answer
        future.get_loop().call_soon_threadsafe(_settle, future, result, error)


def _serve(path: Path, calls: SimpleQueue[_Call]) -> None:
    """The thread: connect, then run calls until ``close``'s (a ``None`` function) arrives."""
    opened, _, _ = calls.get()
    try:
        conn = sqlite3.connect(path, isolation_level=None)
    except BaseException as exc:  # reported to ``connect``; the thread ends
        _answer(opened, None, exc)
        return
    _answer(opened, None, None)
    while True:
        future, function, args = calls.get()
        if function is None:
            error: BaseException | None = None
            try:
                conn.close()
            except BaseException as exc:
                error = exc
            _answer(future, None, error)
            return
        try:
            result = function(conn, *args)
        except BaseException as exc:
            _answer(future, None, exc)
        else:
            _answer(future, result, None)


class SQLiteThread:
    """A ``sqlite3`` connection (autocommit: ``isolation_level=None``) owned by one thread.

    Create with ``await SQLiteThread.connect(path)``; end with ``await close()``.
    """

    __slots__ = ("_calls", "_open", "_thread")

    def __init__(self, path: Path) -> None:
        self._calls: SimpleQueue[_Call] = SimpleQueue()
        self._thread = threading.Thread(
            target=_serve, args=(path, self._calls), name=f"sqlite {path.name}"
        )
        self._open = True

    @classmethod
    async def connect(cls, path: Path) -> SQLiteThread:
        """Start the thread and open ``path`` in it.

        Raises:
            sqlite3.Error: the file cannot be opened (the thread has ended).
        """
        db = cls(path)
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        db._thread.start()
        db._calls.put((opened, None, ()))
        try:
            await opened
        except BaseException:
            db._open = False
            raise
        return db

    async def run(self, function: Callable[..., _T], *args: Any) -> _T:
        """``function(connection, *args)`` in the thread; its result, or its exception raised.

        Raises:
            sqlite3.ProgrammingError: the connection was closed.
        """
        if not self._open:
            raise sqlite3.ProgrammingError("the connection is closed")
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._calls.put((future, function, args))
        return await future

    async def close(self) -> None:
        """Run every call queued so far, close the connection, end the thread. Safe twice.

        Raises:
            sqlite3.Error: closing the connection failed (the thread has ended all the same).
        """
        if not self._open:
            return
        self._open = False
        closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._calls.put((closed, None, ()))
        await closed
        self._thread.join()  # the thread returns right after answering
