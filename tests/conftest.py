"""Shared fixtures: a broker in this process, a broker as a real ``jobwire serve`` process.

In-process (fast; the broker shares the test's event loop, so tests can inspect it):

* ``start_broker``: an async factory ``await start_broker(**settings_overrides)`` returning a
  ``RunningBroker`` (``.host``, ``.port``, ``.server``, ``.settings``, ``.data_dir``) listening on
  127.0.0.1, port 0, with its journal in a fresh temporary directory (pass ``data_dir=`` to reuse
  one). ``await broker.stop()`` shuts it down gracefully; every broker still running at the end of
  the test is stopped for you.
* ``broker``: one such broker with the default settings.
* ``wire``: an async factory ``await wire(broker, hello=True, token=None)`` returning a connected
  ``tests.tools.wire.WireClient`` (raw protocol, no ``client/``); closed at the end of the test.

Real process (for kill -9, signals and exit codes):

* ``spawn_broker``: a factory ``spawn_broker(*extra_args, data_dir=None, env=None)`` returning a
  started ``BrokerProcess`` on a free port; it has returned only once the broker accepts TCP
  connections. ``.kill()`` (SIGKILL), ``.terminate()`` (SIGTERM, returns the exit code),
  ``.restart()`` (same port and data directory), ``.log_lines()`` (the JSON log events).
  Every process still running at the end of the test is killed.
* ``broker_process``: one such process with the default settings.

Tiers: every test lives in ``tests/pure/``, ``tests/tcp/`` or ``tests/process/`` and is marked
with its folder's name (``pytest -m pure``). The promise of the two lower tiers is checked, not
just stated: in ``pure/`` opening a network connection, binding, listening, starting a thread
or a subprocess raises ``TierError``; in ``tcp/`` starting a subprocess does. A test that needs
more than its tier allows belongs one folder up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from broker.config import Settings
from tests.tools.wire import WireClient

if TYPE_CHECKING:
    from broker.server import Server
    from client import Client

HOST = "127.0.0.1"


# --------------------------------------------------------------------------- tiers

TIERS = ("pure", "tcp", "process")


class TierError(AssertionError):
    """A test used more than its tier's folder allows (see the module docstring)."""


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = item.path.parent.name
        if tier in TIERS:
            item.add_marker(tier)


def _refuse(what: str, tier: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise TierError(f"{what} in a tests/{tier}/ test: move the test one tier up")
    return refuse


@pytest.fixture(autouse=True)
def tier_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    tier = request.node.path.parent.name
    if tier not in ("pure", "tcp"):
        return
    # subprocess.run/call/check_output and asyncio's subprocesses all go through Popen.
    monkeypatch.setattr(subprocess, "Popen", _refuse("a subprocess", tier))
    if tier == "pure":
        # An event loop's own socketpair is allowed; reaching for the network is not.
        for method in ("connect", "connect_ex", "bind", "listen"):
            monkeypatch.setattr(socket.socket, method, _refuse(f"socket.{method}", tier))
        monkeypatch.setattr(threading.Thread, "start", _refuse("a thread", tier))


# --------------------------------------------------------------------------- in-process broker


class RunningBroker:
    """A broker running as a task on the test's event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host = settings.host
        self.port = 0
        self.server: Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    async def start(self) -> RunningBroker:
        from broker.server import run_broker  # imported here so collecting tests never needs it

        loop = asyncio.get_running_loop()
        ready: asyncio.Future[Server] = loop.create_future()

        def on_ready(server: Server) -> None:
            if not ready.done():
                ready.set_result(server)

        self._task = loop.create_task(
            run_broker(self.settings, on_ready=on_ready, handle_signals=False)
        )
        waitables: set[asyncio.Future[Any]] = {self._task, ready}
        done, _ = await asyncio.wait(waitables, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:  # it failed before accepting: raise its error
            await self._task
            raise RuntimeError("the broker stopped before it accepted connections")
        self.server = ready.result()
        self.port = self.server.port
        return self

    async def stop(self) -> None:
        """Graceful shutdown (the same sequence SIGTERM runs); waits until it is complete."""
        if self._task is None:
            return
        if self.server is not None:
            self.server.request_shutdown()
        task, self._task = self._task, None
        await task

    async def connect(self, **kwargs: Any) -> WireClient:
        return await WireClient.connect(self.host, self.port, **kwargs)


@pytest.fixture
async def start_broker(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[RunningBroker]]]:
    started: list[RunningBroker] = []
    counter = 0

    async def start(**overrides: Any) -> RunningBroker:
        nonlocal counter
        counter += 1
        overrides.setdefault("data_dir", tmp_path / f"broker-{counter}")
        overrides.setdefault("port", 0)
        overrides.setdefault("host", HOST)
        overrides.setdefault("shutdown_grace", 0.2)
        broker = RunningBroker(Settings(**overrides))
        started.append(broker)
        return await broker.start()

    yield start
    for broker in started:
        await broker.stop()


@pytest.fixture
async def broker(start_broker: Callable[..., Awaitable[RunningBroker]]) -> RunningBroker:
    return await start_broker()


@pytest.fixture
def url(broker: RunningBroker) -> str:
    """The ``broker`` fixture's URL, for the client library."""
    return f"jobwire://{broker.host}:{broker.port}"


@pytest.fixture
async def client(url: str) -> AsyncIterator[Client]:
    """A ``client.Client`` connected to the ``broker`` fixture, closed after the test."""
    from client import Client

    async with Client(url) as connected:
        yield connected


@pytest.fixture
async def wire() -> AsyncIterator[Callable[..., Awaitable[WireClient]]]:
    clients: list[WireClient] = []

    async def connect(broker: RunningBroker | BrokerProcess, **kwargs: Any) -> WireClient:
        client = await WireClient.connect(broker.host, broker.port, **kwargs)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.close()


# --------------------------------------------------------------------------- real process


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def jobwire_command() -> list[str]:
    """The ``jobwire`` console script of this environment (``python -m jobwire`` if missing)."""
    script = Path(sys.executable).with_name("jobwire")
    return [str(script)] if script.exists() else [sys.executable, "-m", "jobwire"]


class BrokerProcess:
    """``jobwire serve`` as a child process, logging JSON lines to ``log_path``."""

    def __init__(self, data_dir: Path, extra_args: tuple[str, ...], env: dict[str, str]) -> None:
        self.host = HOST
        self.port = free_port()
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.extra_args = extra_args
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 30.0) -> BrokerProcess:
        """Start the broker and return once it accepts connections.

        Raises:
            RuntimeError: it exited or did not accept within ``timeout`` (the log tail is
                in the message).
        """
        command = [*jobwire_command(), "serve", "--host", self.host, "--port", str(self.port),
                   "--data-dir", str(self.data_dir), "--log-format", "json", *self.extra_args]
        env = {**os.environ, **self.env}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, env=env)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jobwire serve exited with {self.proc.returncode}:\n"
                                   + self._log_tail())
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError("jobwire serve did not accept in time:\n"
                                       + self._log_tail()) from None
                time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the broker and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM the broker and return its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def restart(self, timeout: float = 30.0) -> BrokerProcess:
        """Kill the broker if it runs, then start it again on the same port and data dir."""
        self.kill()
        return self.start(timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_lines(self) -> list[dict[str, Any]]:
        """Every JSON log event written so far (lines that are not JSON are skipped)."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    out.append(event)
        return out

    def _log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@pytest.fixture
def spawn_broker(tmp_path: Path) -> Iterator[Callable[..., BrokerProcess]]:
    spawned: list[BrokerProcess] = []

    def spawn(*extra_args: str, data_dir: Path | None = None,
              env: dict[str, str] | None = None) -> BrokerProcess:
        directory = data_dir if data_dir is not None else tmp_path / f"proc-{len(spawned) + 1}"
        process = BrokerProcess(directory, extra_args, env or {})
        spawned.append(process)
        return process.start()

    yield spawn
    for process in spawned:
        process.kill()


@pytest.fixture
def broker_process(spawn_broker: Callable[..., BrokerProcess]) -> BrokerProcess:
    return spawn_broker()
