"""The bench's own broker: a ``jobwire serve`` subprocess, and a sampler of its RSS and CPU time.

``BrokerProcess`` starts ``python -m broker`` (exactly ``jobwire serve``) on 127.0.0.1 with a
temporary data directory, logs to a file in that directory as JSON lines, and is ready when the
log says ``listening`` (the first start binds port 0 and reads the port from that line; restarts
reuse it). ``stop`` sends SIGTERM (graceful drain) or SIGKILL (a crash) and waits for the exit.

``ResourceSampler`` polls a process with psutil from a thread every 20 ms: the peak resident set
size while it runs, and the CPU time (user + system) spent between ``start`` and ``stop``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import psutil

_TREE: Final = Path(__file__).resolve().parent.parent
"""The source tree of this harness (the parent of ``bench/``)."""
_RUN_BROKER: Final = (
    f"import runpy, sys; sys.path.insert(0, {str(_TREE)!r}); "
    "runpy.run_module('broker', run_name='__main__', alter_sys=True)"
)

LOG_FILE: Final = "broker.log"
MIB: Final = 1024 * 1024


class BrokerStartError(RuntimeError):
    """The broker subprocess exited or did not start listening in time."""


class BrokerProcess:
    """A ``jobwire serve`` subprocess owned by the bench.

    Args:
        sync: the journal's sync mode (``full``, ``normal``, ``off``).
        data_parent: where the temporary data directory goes (default: the system temp dir;
            pick a directory on the disk you want to measure, since fsync cost depends on it).
        extra_args: more ``jobwire serve`` flags, passed through.
    """

    def __init__(
        self,
        *,
        sync: str = "full",
        data_parent: str | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.sync = sync
        self.host = "127.0.0.1"
        self.port = 0
        self.extra_args = list(extra_args or [])
        self.data_dir = Path(tempfile.mkdtemp(prefix="jobwire-bench-", dir=data_parent))
        self.log_path = self.data_dir / LOG_FILE
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int:
        """The running broker's process id.

        Raises:
            RuntimeError: the broker is not running.
        """
        if self._proc is None:
            raise RuntimeError("broker not started")
        return self._proc.pid

    @property
    def address(self) -> str:
        """``host:port`` of the running broker."""
        return f"{self.host}:{self.port}"

    def running(self) -> bool:
        """Whether the subprocess is alive."""
        return self._proc is not None and self._proc.poll() is None

    def spawn(self) -> None:
        """Start the subprocess without waiting for it to listen (see ``wait_listening``)."""
        if self.running():
            raise RuntimeError("broker already running")
        command = [
            # ``python -m broker``, from the tree this harness runs from whatever the current
            # directory (``-m`` would put it first): a before/after pair with PYTHONPATH at
            # another tree otherwise timed this directory's broker on both sides.
            sys.executable, "-c", _RUN_BROKER,
            "--host", self.host, "--port", str(self.port),
            "--data-dir", str(self.data_dir / "data"), "--sync", self.sync,
            "--log-format", "json", "--log-level", "info",
            *self.extra_args,
        ]
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )

    def wait_listening(self, timeout: float = 120.0) -> dict[str, Any]:
        """Wait for this start's ``listening`` log line.

        Returns:
            Every log event of this start seen so far, by event name (last one wins).

        Raises:
            BrokerStartError: the process exited, or ``timeout`` seconds passed.
        """
        deadline = time.monotonic() + timeout
        while True:
            events = self.log_events()
            listening = events.get("listening")
            if listening is not None:
                self.port = int(listening.get("port", self.port))
                return events
            if self._proc is None or self._proc.poll() is not None:
                raise BrokerStartError(f"broker exited while starting:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise BrokerStartError(f"broker not listening after {timeout} s:\n"
                                       f"{self.log_tail()}")
            time.sleep(0.01)

    def start(self, timeout: float = 120.0) -> None:
        """Spawn the broker and wait until it listens.

        Raises:
            BrokerStartError: it exited or did not listen within ``timeout`` seconds.
        """
        self.spawn()
        self.wait_listening(timeout)

    def log_events(self) -> dict[str, Any]:
        """The JSON log events written since the last ``spawn``, by event name."""
        events: dict[str, Any] = {}
        if not self.log_path.exists():
            return events
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            for line in log:
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict) and "event" in record:
                        events[str(record["event"])] = record
        return events

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the broker's log (for error messages)."""
        if not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int | None:
        """Signal the broker and wait for it to exit (SIGKILL if it outlives ``timeout``).

        Returns:
            Its exit code, or ``None`` if it was not running.
        """
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None
        return proc.returncode

    def close(self, *, keep_dir: bool = False) -> None:
        """Stop the broker (gracefully) and delete the data directory unless ``keep_dir``."""
        self.stop()
        if not keep_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> BrokerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class ResourceUsage:
    """What ``ResourceSampler`` saw: MiB and CPU seconds."""

    rss_mb_peak: float
    rss_mb_end: float
    cpu_s: float
    loop_cpu_s: float | None = None
    """The CPU seconds of the process's main thread alone (the broker's event loop, without
    the journal thread), if psutil could read it."""


class ResourceSampler:
    """Samples one process's RSS (peak) and CPU time from a background thread.

    Args:
        pid: the process to watch.
        interval: seconds between RSS samples.
    """

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak = 0
        self._cpu_start = 0.0
        self._loop_start: float | None = None

    def _rss(self) -> int:
        try:
            rss: int = self._process.memory_info().rss
        except psutil.Error:
            return 0
        return rss

    def _cpu(self) -> float:
        try:
            times = self._process.cpu_times()
        except psutil.Error:
            return self._cpu_start
        return float(times.user + times.system)

    def _loop_cpu(self) -> float | None:
        """The main thread's CPU seconds (its thread id is the pid on Linux), or ``None``."""
        try:
            for thread in self._process.threads():
                if thread.id == self._process.pid:
                    return float(thread.user_time + thread.system_time)
        except (psutil.Error, AttributeError, NotImplementedError):
            return None
        return None

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._peak = max(self._peak, self._rss())

    def start(self) -> None:
        """Begin sampling; CPU time counts from now."""
        self._cpu_start = self._cpu()
        self._loop_start = self._loop_cpu()
        self._peak = self._rss()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)
        self._thread.start()

    def stop(self) -> ResourceUsage:
        """Stop sampling.

        Returns:
            Peak and current RSS in MiB, and the CPU seconds used since ``start``.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        end = self._rss()
        peak = max(self._peak, end)
        loop = self._loop_cpu()
        return ResourceUsage(
            rss_mb_peak=round(peak / MIB, 1),
            rss_mb_end=round(end / MIB, 1),
            cpu_s=round(self._cpu() - self._cpu_start, 3),
            loop_cpu_s=None if loop is None or self._loop_start is None
            else round(loop - self._loop_start, 3),
        )
