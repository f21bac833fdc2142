"""Kill-test harness: SIGKILL a real broker under load, restart it, and account for every job.

Usable two ways: ``await run_kill_test(KillConfig(...), workdir)`` from a pytest test
(``tests/process/test_kill.py``), or as a command for long runs::

    python -m tests.tools.killtest --kills 20 --jobs 50000 --producers 8 --workers 16 \\
        --lease-ms 5000

Theory of operation
-------------------
One ``jobwire serve`` process (default sync mode ``full``, retention off so every job stays
inspectable) is driven over the raw protocol (``tests.tools.wire``; no ``client/`` code, so the
accounting sees exactly what the broker sent):

* **producers** enqueue disjoint ranges of client-chosen ids in batches and wait for each
  acknowledgement; a batch whose answer was lost in a crash is re-sent with the same ids until it
  is acknowledged (idempotent enqueue);
* **workers** reserve batches with a short lease, "run" each job (mostly instant, some slow
  beyond the lease, some failing), then ack the successes and fail the failures in batches;
* the **killer** SIGKILLs the broker at spread-out points of the run, at a random moment chosen
  by a mode: ``random``, ``ack_burst`` (right after workers sent acks: inside a group commit),
  ``enqueue_burst`` (inside an enqueue commit) or ``shutdown`` (SIGTERM, then SIGKILL a few ms
  later: inside the drain, the final commit or the TRUNCATE checkpoint); ``checkpoint_kills``
  of the kills (at random places in the run) are ``checkpoint`` kills: the broker runs with a
  small ``--checkpoint-bytes`` and debug logging, and the killer tails its log and sends SIGKILL
  as soon as a ``checkpoint_started`` line has no ``checkpoint_complete`` after it. The log after
  the kill tells whether the kill landed inside that checkpoint (mode ``checkpoint/mid``) or just
  after it (``checkpoint/after``). It restarts the broker on the same data directory and records
  the recovery time.

Every connection carries the *generation* of the broker process it reached: the killer bumps the
generation (and holds new connections back) before each kill, and a connection whose connect
spanned a bump is discarded, so each delivery is attributed to the right process.

The checker (``Report``) counts: acknowledged enqueues; **lost** (acknowledged, never delivered
and absent at the end); **unexpected** (delivered or present, never enqueued); **duplicates**
(a delivery after the first), each explained by an explicit fail (a retry), an expired lease (the
new reservation's broker time is past the previous lease's deadline) or a crash (a different
generation), and the **unexplained** rest; **redelivered after an acknowledged completion**;
**reverted** (a completion acknowledged but the job is not completed at the end); **corrupt**
payloads; and the recovery time of every restart.

Invariants asserted by ``Report.violations``: lost = unexpected = unexplained = redelivered after
ack = reverted = corrupt = unfinished = 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import random
import shutil
import signal
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.messages import ErrorReply, Reply
from tests.conftest import BrokerProcess
from tests.tools.wire import WireClient, job_spec

QUEUE = "kill"
KILL_MODES = ("random", "ack_burst", "enqueue_burst", "shutdown")
_RETRYABLE = frozenset({"DRAINING", "JOURNAL_FAILURE", "OVERLOADED", "QUEUE_FULL"})
# Indexes into a reserved job array (protocol.ReservedJob).
_ID, _PAYLOAD, _ATTEMPT, _TOKEN, _LEASE_MS, _DEADLINE = 0, 3, 4, 6, 7, 8


@dataclass(frozen=True, slots=True)
class KillConfig:
    """One kill-test run.

    Attributes:
        kills: SIGKILLs (each followed by a restart), spread over the run.
        jobs: jobs enqueued in total (ids ``k<producer>-<n>``).
        producers: producer connections (one batch in flight each).
        workers: worker connections (one reservation in flight each).
        lease_ms: the lease of every reservation.
        seed: random seed (the run prints it; pass it again to replay the same choices).
        enqueue_batch: jobs per enqueue request.
        reserve_batch: most jobs per reserve request.
        fail_rate: chance a handler fails (retryable: the job comes back after a short backoff).
        slow_rate: chance a handler outlives its lease (the lease expires, the job is redelivered).
        sync: the broker's sync mode.
        deadline_s: the whole run must finish within this (a stuck job then shows as unfinished).
        checkpoint_kills: how many of the kills wait for a checkpoint and land inside it.
        checkpoint_bytes: the broker's ``--checkpoint-bytes`` (small: checkpoints happen often).
    """

    kills: int = 5
    jobs: int = 5_000
    producers: int = 4
    workers: int = 8
    lease_ms: int = 1_000
    seed: int = 0
    enqueue_batch: int = 50
    reserve_batch: int = 10
    fail_rate: float = 0.05
    slow_rate: float = 0.003
    sync: str = "full"
    deadline_s: float = 900.0
    checkpoint_kills: int = 2
    checkpoint_bytes: str = "256KiB"


def expected_payload(job_id: str) -> bytes:
    """The payload a producer sends for ``job_id`` (checked on every delivery)."""
    return (job_id + "|").encode() * (1 + zlib.crc32(job_id.encode()) % 16)


@dataclass(slots=True)
class Delivery:
    """One reservation of a job, as the worker received it."""

    generation: int
    reserved_at: int  # broker clock: lease deadline - lease
    lease_deadline: int
    attempt: int
    outcome: str = "pending"  # acked, ack_stale, failed, fail_stale, lost_reply, abandoned


@dataclass(slots=True)
class Restart:
    mode: str
    downtime_s: float  # SIGKILL sent -> broker accepting again
    recovered_s: float | None  # the broker's own "recovered" log figure
    jobs_loaded: int | None


@dataclass
class Ledger:
    """Everything the harness saw, in the order it saw it."""

    sent: set[str] = field(default_factory=set)
    acked: set[str] = field(default_factory=set)
    deliveries: dict[str, list[Delivery]] = field(default_factory=dict)
    completed: set[str] = field(default_factory=set)
    unexpected_deliveries: set[str] = field(default_factory=set)
    redelivered_after_ack: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    restarts: list[Restart] = field(default_factory=list)
    enqueue_retries: int = 0
    generation: int = 1
    up: asyncio.Event = field(default_factory=asyncio.Event)
    acks_in_flight: int = 0
    enqueues_in_flight: int = 0
    activity: asyncio.Event = field(default_factory=asyncio.Event)
    """Set whenever a count above changes (the killer waits on it)."""


@dataclass
class Report:
    """The checker's verdict on one run."""

    config: KillConfig
    acked_enqueues: int = 0
    deliveries: int = 0
    lost: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    duplicates: int = 0
    explained: dict[str, int] = field(default_factory=dict)
    unexplained: list[str] = field(default_factory=list)
    redelivered_after_ack: list[str] = field(default_factory=list)
    reverted: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)
    final_states: dict[str, int] = field(default_factory=dict)
    completions_acked: int = 0
    enqueue_retries: int = 0
    restarts: list[Restart] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def mid_checkpoint_kills(self) -> int:
        """Kills that landed inside a checkpoint (the broker's log: started, not complete)."""
        return sum(r.mode == "checkpoint/mid" for r in self.restarts)

    def violations(self) -> dict[str, list[str]]:
        """Every failed invariant, with up to 10 example job ids each (empty when all hold)."""
        checks = {
            "lost": self.lost, "unexpected": self.unexpected, "unexplained": self.unexplained,
            "redelivered_after_ack": self.redelivered_after_ack, "reverted": self.reverted,
            "corrupt": self.corrupt, "unfinished": self.unfinished,
        }
        out = {name: ids[:10] for name, ids in checks.items() if ids}
        if len(self.restarts) != self.config.kills:
            out["restarts"] = [f"{len(self.restarts)} of {self.config.kills} kills happened"]
        return out

    def table(self) -> str:
        """A plain-text summary: counts, duplicate explanations, recovery per restart."""
        cfg = self.config
        rows = [
            ("seed", cfg.seed),
            ("kills / restarts", f"{cfg.kills} / {len(self.restarts)}"),
            ("kills inside a checkpoint", self.mid_checkpoint_kills),
            ("jobs, producers, workers", f"{cfg.jobs}, {cfg.producers}, {cfg.workers}"),
            ("lease_ms, sync", f"{cfg.lease_ms}, {cfg.sync}"),
            ("acknowledged enqueues", self.acked_enqueues),
            ("enqueue batches re-sent", self.enqueue_retries),
            ("deliveries", self.deliveries),
            ("completions acknowledged", self.completions_acked),
            ("LOST", len(self.lost)),
            ("UNEXPECTED", len(self.unexpected)),
            ("duplicates", self.duplicates),
            *((f"  explained: {why}", n) for why, n in sorted(self.explained.items())),
            ("  UNEXPLAINED", len(self.unexplained)),
            ("REDELIVERED AFTER ACK", len(self.redelivered_after_ack)),
            ("REVERTED completions", len(self.reverted)),
            ("CORRUPT payloads", len(self.corrupt)),
            ("UNFINISHED at end", len(self.unfinished)),
            ("final states", ", ".join(f"{k}={v}" for k, v in sorted(self.final_states.items()))),
            ("elapsed", f"{self.elapsed_s:.1f} s"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        lines.append("")
        lines.append(f"{'#':>3}  {'mode':<22} {'downtime s':>10} {'recovered s':>11} {'jobs':>7}")
        for i, r in enumerate(self.restarts, 1):
            rec = "?" if r.recovered_s is None else f"{r.recovered_s:.3f}"
            jobs = "?" if r.jobs_loaded is None else str(r.jobs_loaded)
            lines.append(f"{i:>3}  {r.mode:<22} {r.downtime_s:>10.3f} {rec:>11} {jobs:>7}")
        if self.restarts:
            downs = sorted(r.downtime_s for r in self.restarts)
            lines.append(f"downtime: median {downs[len(downs) // 2]:.3f} s, max {downs[-1]:.3f} s")
        return "\n".join(lines)


# --------------------------------------------------------------------------- connections


async def _connect(broker: BrokerProcess, ledger: Ledger) -> tuple[WireClient, int]:
    """Connect to the broker process of the current generation (waits while it is down)."""
    while True:
        await ledger.up.wait()
        generation = ledger.generation
        try:
            client = await WireClient.connect(broker.host, broker.port)
        except (OSError, ConnectionError, AssertionError, TimeoutError):
            await asyncio.sleep(0.02)
            continue
        if ledger.generation == generation and ledger.up.is_set():
            return client, generation
        await client.close()  # the connect spanned a kill: which process answered is unknown


async def _producer(index: int, broker: BrokerProcess, ledger: Ledger, cfg: KillConfig) -> None:
    count = cfg.jobs // cfg.producers + (1 if index < cfg.jobs % cfg.producers else 0)
    ids = [f"k{index}-{n}" for n in range(count)]
    client: WireClient | None = None
    try:
        for start in range(0, len(ids), cfg.enqueue_batch):
            batch = ids[start:start + cfg.enqueue_batch]
            jobs = [job_spec(job_id, "kill", expected_payload(job_id), max_attempts=100_000,
                             backoff=["fixed", 20]) for job_id in batch]
            first = True
            while True:
                if client is None:
                    client, _ = await _connect(broker, ledger)
                if not first:
                    ledger.enqueue_retries += 1
                first = False
                ledger.sent.update(batch)
                ledger.enqueues_in_flight += 1
                ledger.activity.set()
                try:
                    answer = await client.call("enqueue", {"queue": QUEUE, "jobs": jobs}, 120)
                except (ConnectionError, OSError):
                    await client.close()
                    client = None
                    continue
                finally:
                    ledger.enqueues_in_flight -= 1
                if isinstance(answer, Reply):
                    if answer.body["ids"] != tuple(batch):
                        raise AssertionError(f"enqueue answered ids {answer.body['ids'][:3]}...")
                    ledger.acked.update(batch)
                    ledger.activity.set()
                    break
                if answer.code not in _RETRYABLE:
                    raise AssertionError(f"enqueue failed: {answer}")
                await asyncio.sleep(0.05)
    finally:
        if client is not None:
            await client.close()


def _record(job: tuple[Any, ...], generation: int, ledger: Ledger) -> Delivery:
    job_id = job[_ID]
    if job_id not in ledger.sent:
        ledger.unexpected_deliveries.add(job_id)
    elif job[_PAYLOAD] != expected_payload(job_id):
        ledger.corrupt.append(job_id)
    if job_id in ledger.completed:
        ledger.redelivered_after_ack.append(job_id)
    delivery = Delivery(generation, job[_DEADLINE] - job[_LEASE_MS], job[_DEADLINE],
                        job[_ATTEMPT])
    ledger.deliveries.setdefault(job_id, []).append(delivery)
    return delivery


async def _settle(client: WireClient, request_id: int | None,
                  held: list[tuple[tuple[Any, ...], Delivery]], ok: str, stale: str,
                  ledger: Ledger) -> None:
    """Record the per-job outcomes of an ack (``ok="acked"``) or fail request."""
    if request_id is None:
        return
    answer = await client.answer(request_id, 120)
    if isinstance(answer, ErrorReply):
        if answer.code not in _RETRYABLE:
            raise AssertionError(f"{ok} request failed: {answer}")
        for _, delivery in held:
            delivery.outcome = "lost_reply"  # not acknowledged: the lease runs out or is released
        return
    for (job, delivery), (code, _) in zip(held, answer.body["results"], strict=True):
        if code == "OK":
            delivery.outcome = ok
            if ok == "acked":
                ledger.completed.add(job[_ID])
        elif code in ("STALE_LEASE", "NOT_FOUND"):
            delivery.outcome = stale
        else:
            raise AssertionError(f"{ok} of {job[_ID]}: unexpected outcome {code}")


async def _worker(index: int, broker: BrokerProcess, ledger: Ledger, cfg: KillConfig,
                  rng: random.Random, stop: asyncio.Event) -> None:
    client: WireClient | None = None
    generation = 0
    held: list[tuple[tuple[Any, ...], Delivery]] = []
    try:
        while not stop.is_set():
            if client is None:
                client, generation = await _connect(broker, ledger)
            try:
                jobs = await client.reserve(QUEUE, max_jobs=cfg.reserve_batch, wait_ms=200,
                                            lease_ms=cfg.lease_ms, within=120)
                held = [(job, _record(job, generation, ledger)) for job in jobs]
                done: list[tuple[tuple[Any, ...], Delivery]] = []
                failed: list[tuple[tuple[Any, ...], Delivery]] = []
                for job, delivery in held:
                    if rng.random() < cfg.slow_rate:  # outlive the lease, then try to ack
                        await asyncio.sleep(cfg.lease_ms / 1000 * rng.uniform(1.2, 1.5))
                    elif rng.random() < 0.2:
                        await asyncio.sleep(rng.uniform(0, 0.005))
                    if rng.random() < cfg.fail_rate:
                        failed.append((job, delivery))
                    else:
                        done.append((job, delivery))
                ack_id = fail_id = None
                if done:
                    ack_id = client.send("ack", {"items": [
                        [job[_ID], job[_TOKEN], b"ok"] for job, _ in done]})
                if failed:
                    fail_id = client.send("fail", {"items": [
                        [job[_ID], job[_TOKEN], "handler failed"] for job, _ in failed]})
                ledger.acks_in_flight += 1
                ledger.activity.set()
                try:
                    await _settle(client, ack_id, done, "acked", "ack_stale", ledger)
                    await _settle(client, fail_id, failed, "failed", "fail_stale", ledger)
                finally:
                    ledger.acks_in_flight -= 1
                    ledger.activity.set()
                held = []
            except (ConnectionError, OSError, TimeoutError):
                for _, delivery in held:
                    if delivery.outcome == "pending":
                        delivery.outcome = "lost_reply"
                held = []
                await client.close()
                client = None
    finally:
        if client is not None:
            await client.close()


# --------------------------------------------------------------------------- the killer


def _progress_reached(ledger: Ledger, cfg: KillConfig, target: float) -> bool:
    """Whether acknowledged enqueues plus completions reached ``target`` of all the work."""
    return (len(ledger.acked) + len(ledger.completed)) / (2 * cfg.jobs) >= target


async def _killer(broker: BrokerProcess, ledger: Ledger, cfg: KillConfig,
                  rng: random.Random) -> None:
    loop = asyncio.get_running_loop()
    log_mark = len(broker.log_lines())
    at_checkpoint = set(rng.sample(range(cfg.kills), min(cfg.checkpoint_kills, cfg.kills)))
    for k in range(cfg.kills):
        target = (k + 1) / (cfg.kills + 1) + rng.uniform(-0.3, 0.3) / (cfg.kills + 1)
        await _until(ledger, functools.partial(_progress_reached, ledger, cfg, target))
        if k in at_checkpoint:
            killed_at = loop.time()
            mode = await _kill_in_checkpoint(broker, ledger)
            await _restart(broker, ledger, mode, killed_at)
            log_mark = len(broker.log_lines())
            continue
        mode = rng.choice(KILL_MODES)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                if mode == "ack_burst":
                    await _until(ledger, lambda: ledger.acks_in_flight > 0)
                elif mode == "enqueue_burst":
                    await _until(ledger, lambda: ledger.enqueues_in_flight > 0)
        if mode == "ack_burst":
            await asyncio.sleep(rng.uniform(0, 0.003))  # inside the commit of those acks
        if mode == "random":
            await asyncio.sleep(rng.uniform(0, 0.05))
        ledger.up.clear()
        ledger.generation += 1
        assert broker.proc is not None
        if mode == "shutdown":
            broker.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(rng.uniform(0, 0.3))  # the grace is 0.2 s, then commit, checkpoint
        killed_at = loop.time()
        broker.kill()
        lines = broker.log_lines()
        if mode == "shutdown":
            mode += "/" + _shutdown_phase(lines[log_mark:])
        await _restart(broker, ledger, mode, killed_at)
        log_mark = len(broker.log_lines())


async def _restart(broker: BrokerProcess, ledger: Ledger, mode: str, killed_at: float) -> None:
    """Start the killed broker again and record the restart."""
    await asyncio.to_thread(broker.start, 60.0)
    downtime = asyncio.get_running_loop().time() - killed_at
    event: dict[str, Any] = next(
        (e for e in reversed(broker.log_lines()) if e.get("event") == "recovered"), {})
    ledger.restarts.append(Restart(mode, downtime, event.get("seconds"), event.get("jobs")))
    ledger.generation += 1  # connections made while it was down are discarded too
    ledger.up.set()


def _checkpoint_open(text: str, was_open: bool) -> bool:
    """Whether a checkpoint is under way after the log lines in ``text``."""
    for line in text.splitlines():
        if '"checkpoint_started"' in line:
            was_open = True
        elif '"checkpoint_complete"' in line or '"checkpoint_failed"' in line:
            was_open = False
    return was_open


async def _kill_in_checkpoint(broker: BrokerProcess, ledger: Ledger) -> str:
    """SIGKILL the broker as soon as its log shows a checkpoint under way; say where it landed.

    The log is tailed every millisecond (the broker flushes each line before the checkpoint
    starts); a checkpoint seen complete before the kill is let go and the next one awaited.
    """
    with broker.log_path.open("rb") as log:
        log.seek(0, 2)
        under_way = False
        for _ in range(20_000):  # 20 s at most: checkpoints come every few hundred commits
            under_way = _checkpoint_open(log.read().decode(errors="replace"), under_way)
            if under_way:
                break
            await asyncio.sleep(0.001)
        ledger.up.clear()
        ledger.generation += 1
        broker.kill()
        still = _checkpoint_open(log.read().decode(errors="replace"), under_way)
    if not under_way:
        return "checkpoint/none seen"
    return "checkpoint/mid" if still else "checkpoint/after"


async def _until(ledger: Ledger, condition: Callable[[], bool]) -> None:
    while not condition():
        ledger.activity.clear()
        await ledger.activity.wait()


def _shutdown_phase(lines: list[dict[str, Any]]) -> str:
    """How far a graceful shutdown got before its SIGKILL, from the broker's log.

    ``signalled`` (not started), ``draining`` (grace, releases, final commit or TRUNCATE
    checkpoint: the connections are closed only after the checkpoint), ``closing``, ``complete``.
    """
    events = [e.get("event") for e in lines]
    if "shutdown_complete" in events:
        return "complete"
    if any(e.get("event") == "connection_closed" and e.get("reason") == "shutdown"
           for e in lines):
        return "closing"
    return "draining" if "shutdown_started" in events else "signalled"


# --------------------------------------------------------------------------- the run


async def _drained(broker: BrokerProcess, ledger: Ledger) -> bool:
    client, _ = await _connect(broker, ledger)
    try:
        stats = (await client.ok("stats", {"queue": QUEUE}, 60))["queues"].get(QUEUE)
    finally:
        await client.close()
    return stats is not None and stats["waiting"] + stats["delayed"] + stats["active"] == 0


async def _final_states(broker: BrokerProcess, ledger: Ledger) -> tuple[dict[str, str], int]:
    """Every sent id's state at the end (absent ids are missing), and the queue's job total."""
    client, _ = await _connect(broker, ledger)
    states: dict[str, str] = {}
    try:
        ids = sorted(ledger.sent)
        for start in range(0, len(ids), 2_000):
            chunk = ids[start:start + 2_000]
            request_ids = client.send_many([("get", {"id": job_id}) for job_id in chunk])
            for job_id, request_id in zip(chunk, request_ids, strict=True):
                answer = await client.answer(request_id, 120)
                if isinstance(answer, Reply):
                    states[job_id] = answer.body["job"]["state"]
                elif answer.code != "NOT_FOUND":
                    raise AssertionError(f"get {job_id}: {answer}")
        stats = (await client.ok("stats", {"queue": QUEUE}, 60))["queues"].get(QUEUE, {})
    finally:
        await client.close()
    total = sum(stats.get(k, 0) for k in ("waiting", "delayed", "active", "completed", "failed"))
    return states, total


def _explain(ledger: Ledger, report: Report) -> None:
    for job_id, deliveries in ledger.deliveries.items():
        for prev, nxt in _pairs(deliveries):
            report.duplicates += 1
            if prev.outcome in ("failed", "fail_stale"):
                why = "retry after fail"
            elif nxt.generation != prev.generation:
                why = "broker restart"
            elif nxt.reserved_at >= prev.lease_deadline:
                why = "lease expired"
            else:
                report.unexplained.append(job_id)
                continue
            report.explained[why] = report.explained.get(why, 0) + 1


def _pairs(deliveries: list[Delivery]) -> Iterator[tuple[Delivery, Delivery]]:
    return itertools.pairwise(deliveries)


def broker_args(cfg: KillConfig) -> tuple[str, ...]:
    """The flags the harness runs ``jobwire serve`` with (retention off: every job stays)."""
    return ("--sync", cfg.sync, "--keep-completed-count", "none", "--keep-completed-age", "none",
            "--keep-failed-count", "none", "--keep-failed-age", "none",
            "--shutdown-grace", "0.2", "--checkpoint-bytes", cfg.checkpoint_bytes,
            "--log-level", "debug" if cfg.checkpoint_kills else "info")


async def run_kill_test(cfg: KillConfig, workdir: Path) -> Report:
    """Run one kill test against a fresh ``jobwire serve`` in ``workdir``; return the report.

    Args:
        cfg: the run's parameters.
        workdir: an empty directory for the journal and the broker's log.

    Returns:
        The checker's report (``report.violations()`` is empty when every invariant held).
    """
    rng = random.Random(cfg.seed)
    loop = asyncio.get_running_loop()
    started = loop.time()
    broker = BrokerProcess(workdir / "data", broker_args(cfg), {})
    await asyncio.to_thread(broker.start, 60.0)
    ledger = Ledger()
    ledger.up.set()
    stop = asyncio.Event()
    report = Report(cfg)
    try:
        async with asyncio.timeout(cfg.deadline_s):
            async with asyncio.TaskGroup() as tasks:
                workers = [tasks.create_task(_worker(i, broker, ledger, cfg,
                                                     random.Random(rng.random()), stop))
                           for i in range(cfg.workers)]
                killer = tasks.create_task(
                    _killer(broker, ledger, cfg, random.Random(rng.random())))
                async with asyncio.TaskGroup() as producing:
                    for i in range(cfg.producers):
                        producing.create_task(_producer(i, broker, ledger, cfg))
                await killer
                for _ in itertools.count():
                    if await _drained(broker, ledger):
                        break
                    await asyncio.sleep(0.2)
                stop.set()
                del workers
        states, total = await _final_states(broker, ledger)
    except TimeoutError:
        stop.set()
        states, total = await _final_states(broker, ledger)
    finally:
        broker.kill()
    report.elapsed_s = loop.time() - started
    _check(ledger, states, total, report)
    return report


def _check(ledger: Ledger, states: dict[str, str], total: int, report: Report) -> None:
    report.acked_enqueues = len(ledger.acked)
    report.deliveries = sum(len(d) for d in ledger.deliveries.values())
    report.completions_acked = len(ledger.completed)
    report.enqueue_retries = ledger.enqueue_retries
    report.restarts = ledger.restarts
    report.redelivered_after_ack = ledger.redelivered_after_ack
    report.corrupt = ledger.corrupt
    report.lost = sorted(j for j in ledger.acked if j not in ledger.deliveries and j not in states)
    report.unexpected = sorted(ledger.unexpected_deliveries)
    if total > len(states):  # the queue holds jobs that were never enqueued
        report.unexpected.append(f"<{total - len(states)} jobs in the queue never enqueued>")
    report.reverted = sorted(j for j in ledger.completed if states.get(j) != "completed")
    report.unfinished = sorted(j for j in ledger.acked
                               if states.get(j) not in ("completed", "failed"))
    for state in states.values():
        report.final_states[state] = report.final_states.get(state, 0) + 1
    _explain(ledger, report)


# --------------------------------------------------------------------------- command line


def _parse(argv: list[str] | None) -> tuple[KillConfig, bool]:
    parser = argparse.ArgumentParser(prog="python -m tests.tools.killtest",
                                     description=__doc__.split("\n")[0])
    defaults = KillConfig()
    parser.add_argument("--kills", type=int, default=defaults.kills)
    parser.add_argument("--jobs", type=int, default=defaults.jobs)
    parser.add_argument("--producers", type=int, default=defaults.producers)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--lease-ms", type=int, default=defaults.lease_ms)
    parser.add_argument("--seed", type=int, default=None, help="random by default")
    parser.add_argument("--sync", choices=("full", "normal", "off"), default=defaults.sync)
    parser.add_argument("--fail-rate", type=float, default=defaults.fail_rate)
    parser.add_argument("--slow-rate", type=float, default=defaults.slow_rate)
    parser.add_argument("--deadline", type=float, default=3600.0, help="seconds")
    parser.add_argument("--keep", action="store_true", help="keep the data directory and log")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    cfg = KillConfig(kills=args.kills, jobs=args.jobs, producers=args.producers,
                     workers=args.workers, lease_ms=args.lease_ms, seed=seed, sync=args.sync,
                     fail_rate=args.fail_rate, slow_rate=args.slow_rate,
                     deadline_s=args.deadline)
    return cfg, args.keep


def main(argv: list[str] | None = None) -> int:
    """Run the kill test from the command line; exit 0 when every invariant held, else 1."""
    cfg, keep = _parse(argv)
    workdir = Path(tempfile.mkdtemp(prefix="jobwire-killtest-"))
    print(f"kill test: seed {cfg.seed}, data in {workdir}", flush=True)
    try:
        import uvloop

        report = uvloop.run(run_kill_test(cfg, workdir))
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(report.table())
    violations = report.violations()
    for name, examples in violations.items():
        print(f"VIOLATION {name}: {examples}")
    print("OK: lost = unexpected = redelivered-after-ack = 0" if not violations else "FAILED")
    return 1 if violations else 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"total {time.monotonic() - started:.1f} s")
    sys.exit(code)
