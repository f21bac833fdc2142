"""``jobwire worker --processes N``: N worker processes under one supervisor.

Theory of operation
-------------------
The supervisor (``ProcessSupervisor.run``) is a small asyncio program that runs no job. It keeps
one *slot* per process; a slot's task starts a child, waits for it to exit and, unless the
supervisor is stopping, starts another one after a delay. A child is the same command run again
with one more flag: ``python -m client.worker_cli worker TARGET <the same flags>
--supervisor-fd FD``, an ordinary one-process worker with its own event loop and broker
connection that imports the handlers itself (nothing is pickled; it inherits only the
environment, the working directory, standard output and error, and the descriptor ``FD``).

* **Restarts.** A child that exits while the supervisor is not stopping (killed, crashed, or
  even exit status 0) is logged at WARNING with its exit status or signal and started again
  after ``endpoint.reconnect_delay``: doubling from ``restart_base`` (0.5 s) to ``restart_cap``
  (30 s), each delay drawn from its upper half, so a child that dies at start does not spin and
  several do not restart in lockstep. A child that ran ``stable_after`` (30 s) or longer resets
  its slot's doubling. Exit status 2 (bad target or flag: a restart cannot fix it) stops every
  child, and the supervisor exits 2.
* **Stop.** The first SIGTERM or SIGINT forwards SIGTERM to every child: a graceful worker stop
  (running handlers get the grace period, unfinished jobs are handed back without an attempt
  counted). A second signal forwards a second SIGTERM (the children skip the rest of their
  grace). A child whose worker stopped does not wait for ``def`` handlers still running in
  their threads (``leave_stuck_handlers``: their jobs were handed back). A child still running
  ``grace + kill_margin`` seconds after the first signal (the margin is for the hand-back after
  the grace) is SIGKILLed; the broker then gives its jobs back as for any dead worker. The
  supervisor exits 0 once every child is gone.
* **Process groups.** Children run in their own process group, so a terminal's Ctrl-C reaches
  the supervisor alone, which forwards one SIGTERM. (In the terminal's group each child would get
  the SIGINT and then the forwarded SIGTERM: a second signal, which skips the grace.) Under
  systemd, use ``KillMode=mixed`` for the same reason.
* **No orphans.** Every child inherits the read end of one pipe whose write end only the
  supervisor holds. However the supervisor ends (SIGKILL, the OOM killer included), the kernel
  closes the write end; each child's event loop sees end-of-file and stops its worker as SIGTERM
  would (grace, hand-back, exit). Chosen over Linux's ``PR_SET_PDEATHSIG``: it works on every
  POSIX system, it has no start-up race (a child whose supervisor died before it began to watch
  finds the end-of-file waiting, where ``PDEATHSIG`` would need a ``getppid`` check), and it
  follows the supervisor process, where ``PDEATHSIG`` follows the thread that forked.

Invariants:
1. A slot has at most one live child, and starts none once stopping began.
2. Every child started is waited for (no zombies); a child is signalled only until it is reaped
   (its pid cannot have been reused).
3. ``run`` returns only after every child has exited.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Final

from client.endpoint import reconnect_delay
from client.log import ROOT, get_logger
from client.signals import install_stop_signals
from client.worker import Worker

log = get_logger("jobwire.processes")

SUPERVISOR_FD_FLAG: Final = "--supervisor-fd"
"""The hidden flag that makes ``jobwire worker`` a supervised child watching that descriptor."""

USAGE_ERROR: Final = 2
"""A child's exit status for a bad target or flag: not restarted; the supervisor exits with it."""


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the system has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - macOS has no affinity mask
        return os.cpu_count() or 1


def parse_processes(text: str) -> int:
    """The ``--processes`` value: a count of at least 1, or ``auto`` for ``available_cpus()``.

    Raises:
        argparse.ArgumentTypeError: neither.
    """
    if text.strip().lower() == "auto":
        return available_cpus()
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of processes or 'auto', got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (or auto), got {count}")
    return count


def describe_exit(returncode: int) -> str:
    """``exit status 1`` or ``killed by SIGKILL`` for a child's return code."""
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


class ProcessSupervisor:
    """Keeps ``processes`` children of ``command`` running until SIGTERM/SIGINT or ``stop()``.

    Args:
        command: a child's command line; the supervisor appends ``--supervisor-fd FD``.
        processes: how many children run at once.
        grace: seconds the children's handlers get on a stop; the supervisor SIGKILLs a child
            still running ``grace + kill_margin`` seconds after the stop began.
        kill_margin: seconds past ``grace`` for a child to hand back its jobs and exit.
        restart_base: the first restart delay of a slot, seconds (doubling from there).
        restart_cap: the longest restart delay, seconds.
        stable_after: a child that ran this long resets its slot's doubling, seconds.
        handle_signals: stop on SIGTERM/SIGINT while ``run()`` runs (main thread only).
        rng: random source for the jitter.
    """

    def __init__(
        self,
        command: Sequence[str],
        processes: int,
        grace: float,
        *,
        kill_margin: float = 5.0,
        restart_base: float = 0.5,
        restart_cap: float = 30.0,
        stable_after: float = 30.0,
        handle_signals: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        if processes < 1:
            raise ValueError("processes must be >= 1")
        self.command = list(command)
        self.processes = processes
        self.grace = grace
        self.kill_margin = kill_margin
        self.restart_base = restart_base
        self.restart_cap = restart_cap
        self.stable_after = stable_after
        self.handle_signals = handle_signals
        self._rng = rng or random.Random()
        self._children: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self._stops = 0
        self._ran = False
        self.exit_code = 0
        self.restarts = 0
        """Children started again after an exit (the first start of each slot not counted)."""

    @property
    def pids(self) -> list[int]:
        """The pids of the live children, by slot."""
        return [proc.pid for _, proc in sorted(self._children.items())]

    def stop(self) -> None:
        """Forward SIGTERM to every child and start no more; again: forward it again."""
        self._stops += 1
        self._stopping.set()
        for proc in self._children.values():
            _send(proc, signal.SIGTERM)

    async def run(self) -> int:
        """Run the children until stopped; return the exit code (0, or 2 after a usage error).

        Raises:
            RuntimeError: ``run()`` was already called.
        """
        if self._ran:
            raise RuntimeError("a ProcessSupervisor runs once; make a new one")
        self._ran = True
        read_fd, write_fd = os.pipe()  # the children's lifeline: see "No orphans"
        removers = install_stop_signals(self._on_signal) if self.handle_signals else []
        log.info("worker processes starting", processes=self.processes, pid=os.getpid())
        try:
            async with asyncio.TaskGroup() as group:
                slots = [group.create_task(self._keep(slot, read_fd), name=f"slot-{slot}")
                         for slot in range(self.processes)]
                killer = group.create_task(self._kill_stragglers())
                await asyncio.wait(slots)
                killer.cancel()
        finally:
            for remove in removers:
                remove()
            os.close(write_fd)
            os.close(read_fd)
        log.info("worker processes stopped", restarts=self.restarts, exit_code=self.exit_code)
        return self.exit_code

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stops == 0:
            log.info("signal received, stopping worker processes", signal=sig.name,
                     grace=self.grace, processes=len(self._children))
        else:
            log.info("signal received again: children skip the rest of the grace",
                     signal=sig.name)
        self.stop()

    async def _keep(self, slot: int, lifeline: int) -> None:
        """Run slot ``slot``'s child, and start it again after each exit until stopping."""
        loop = asyncio.get_running_loop()
        doublings = 0
        while not self._stopping.is_set():
            started = loop.time()
            pid, code = await self._run_child(slot, lifeline)
            if self._stopping.is_set():
                return
            if code == USAGE_ERROR:
                log.error("worker process refused its target or flags: stopping", slot=slot,
                          pid=pid)
                self.exit_code = USAGE_ERROR
                self.stop()
                return
            if loop.time() - started >= self.stable_after:
                doublings = 0
            delay = reconnect_delay(doublings, self.restart_base, self.restart_cap, self._rng)
            doublings += 1
            self.restarts += 1
            log.warning("worker process exited, restarting it", slot=slot, pid=pid,
                        exit="failed to start" if code is None else describe_exit(code),
                        delay=round(delay, 3), restarts=self.restarts)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()

    async def _run_child(self, slot: int, lifeline: int) -> tuple[int | None, int | None]:
        """Start one child and wait for it: its pid and return code (``None``: no start)."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command, SUPERVISOR_FD_FLAG, str(lifeline), stdin=subprocess.DEVNULL,
                pass_fds=(lifeline,), process_group=0,
            )
        except OSError as exc:
            log.error("cannot start a worker process", slot=slot, error=str(exc))
            return None, None
        self._children[slot] = proc
        try:
            if self._stopping.is_set():  # the stop came while it was starting
                _send(proc, signal.SIGTERM)
            log.info("worker process started", slot=slot, pid=proc.pid)
            code = await proc.wait()
        finally:
            if proc.returncode is None:  # cancelled: leave no child behind (invariant 3)
                _send(proc, signal.SIGKILL)
                await proc.wait()
            del self._children[slot]
        if self._stopping.is_set():
            level = log.info if code in (0, -signal.SIGTERM) else log.warning
            level("worker process exited", slot=slot, pid=proc.pid, exit=describe_exit(code))
        return proc.pid, code

    async def _kill_stragglers(self) -> None:
        await self._stopping.wait()
        await asyncio.sleep(self.grace + self.kill_margin)
        for slot, proc in sorted(self._children.items()):
            log.warning("worker process still running after the grace period: killing it",
                        slot=slot, pid=proc.pid, grace=self.grace)
            _send(proc, signal.SIGKILL)


def _send(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    """Signal ``proc`` unless it was reaped (asyncio refuses then; its pid may be reused)."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


async def run_supervised(worker: Worker, lifeline: int) -> None:
    """Run ``worker`` as a supervised child: SIGTERM/SIGINT stop it (a second one skips the
    grace), and so does end-of-file on ``lifeline``, the supervisor's death (once; not after a
    signal, which the supervisor sent before it died).

    Args:
        worker: the worker to run; its own signal handling is turned off.
        lifeline: the read end of the supervisor's pipe.
    """
    loop = asyncio.get_running_loop()
    worker.handle_signals = False
    signalled = False
    _tag_log_records(os.getpid())

    def on_signal(sig: signal.Signals) -> None:
        nonlocal signalled
        log.info("signal received, shutting down", signal=sig.name, grace=worker.grace)
        signalled = True
        worker.stop()

    def on_lifeline() -> None:
        try:
            data = os.read(lifeline, 64)
        except BlockingIOError:
            return
        if data:  # nothing is ever written; not the end
            return
        loop.remove_reader(lifeline)
        if not signalled:
            log.warning("supervisor process gone: stopping", grace=worker.grace)
            worker.stop()

    os.set_blocking(lifeline, False)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_reader(lifeline, on_lifeline)
    try:
        await worker.run()
    finally:
        loop.remove_reader(lifeline)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
            # Stopped: a later signal (the supervisor's second) must not kill the exit midway.
            signal.signal(sig, signal.SIG_IGN)



def _tag_log_records(pid: int) -> None:
    """Give the lines the ``jobwire`` handlers print a ``pid`` (the CLI's output shows it), so
    the interleaved lines of several children can be told apart."""

    def tag(record: logging.LogRecord) -> bool:
        if not hasattr(record, "pid"):
            record.pid = pid
        return True

    for handler in logging.getLogger(ROOT).handlers:
        handler.addFilter(tag)


HANDLER_THREAD_PREFIX: Final = "jobwire-handler"
"""The names of the worker's handler threads (``Worker``'s thread pool)."""


def leave_stuck_handlers(wait: float = 0.5) -> None:
    """After a supervised child's worker stopped: exit now if handler threads still run.

    They are plain ``def`` handlers the stop cut off (their jobs were handed back, or the broker
    gives them back when the connection closes). Python cannot stop a thread, and interpreter exit
    would wait for them: the child would linger past its grace until the supervisor kills it. So
    after ``wait`` seconds (idle pool threads end by then) the child flushes its output and
    exits 0 without waiting for them (nor running ``atexit`` hooks).
    """
    deadline = time.monotonic() + wait
    stuck = [thread for thread in threading.enumerate()
             if thread.name.startswith(HANDLER_THREAD_PREFIX)]
    for thread in stuck:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [thread for thread in stuck if thread.is_alive()]
    if not stuck:
        return
    log.warning("handlers still running after the stop: exiting without them",
                threads=len(stuck))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
