"""The bench scenarios: enqueue, drain, latency, mixed, recovery.

Each scenario takes ``Params`` and a ``Target`` (the bench's own broker subprocess, or an address
given with ``--connect``), runs its load processes through ``bench.runner.run_load`` and returns
one result dict (``bench.report.make_result``). Every run uses a fresh queue name, so runs
against a shared broker never see each other's jobs.

What each one measures (seconds always start at the common ``go`` instant of the load processes):

* ``enqueue``: until the last producer's last acknowledgement; latency is per request
  (call → durable acknowledgement).
* ``drain``: the queue is filled first (not timed); then until the last completion is
  acknowledged; latency is handler start → completion acknowledged.
* ``latency``: a steady rate against idle workers; headline latency is enqueue call → handler
  start; enqueue call → acknowledged completion is recorded too.
* ``mixed``: producers and workers together for ``duration`` seconds; throughput and latency
  count only whole seconds after ``warmup`` (steady state); headline latency is enqueue call →
  acknowledged completion; a per-second series feeds ``--plot``.
* ``recovery``: the journal gets ``jobs`` waiting jobs through the broker; the broker is killed
  (SIGKILL, or SIGTERM) and restarted; seconds run from the restart's spawn to the first
  successful ``hello`` + ``stats``, whose waiting count must equal ``jobs``.
"""

from __future__ import annotations

import asyncio
import math
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.broker_proc import BrokerProcess, ResourceSampler
from bench.hdr import merge, summary_ms
from bench.loadgen import LoadSpec
from bench.report import make_result, merge_latencies
from bench.runner import BenchError, LoadProgress, LoadRun, run_load
from protocol.codec import FrameDecoder, encode_frames
from protocol.messages import PROTOCOL_VERSION, request_message
from protocol.operations import Hello, Stats

SCENARIOS = ("enqueue", "drain", "latency", "mixed", "recovery", "raw")


@dataclass(slots=True)
class Params:
    """Every scenario option; each scenario reads the ones it uses."""

    jobs: int = 100_000
    payload_bytes: int = 100
    sync: str = "full"
    connect: str | None = None
    producers: int = 1
    batch: int = 1000
    in_flight: int | None = None
    """Requests in flight per producer; default 1 in bulk, 100 one at a time."""
    batch_adds: bool = True
    """One at a time: the client's automatic batching of concurrent adds (``batch_adds``)."""
    loop: str = "uvloop"
    """The load processes' event loop: ``uvloop`` or ``asyncio`` (plain ``asyncio.run``)."""
    raw_mode: str = "split"
    """``raw``: one ``send`` per request (``split``) or per batch of replies (``joined``)."""
    workers: int = 1
    concurrency: int = 50
    work: str = "none"
    work_ms: float = 0.0
    rate: float = 0.0
    duration: float = 10.0
    warmup: float = 2.0
    max_backlog: int = 2_000
    stop_signal: str = "kill"
    quiet: bool = False
    data_dir: str | None = None
    broker_args: list[str] = field(default_factory=list)
    broker_pid: int | None = None
    timeout: float = 900.0

    def resolved_in_flight(self) -> int:
        if self.in_flight is not None:
            return self.in_flight
        return 1 if self.batch > 1 else 100


class Target:
    """Where a scenario's load goes: the bench's own broker (default) or ``--connect``.

    Args:
        params: the run's options (``connect``, ``sync``, ``data_dir``, ``broker_args``,
            ``broker_pid``).
    """

    def __init__(self, params: Params) -> None:
        self.params = params
        self.broker: BrokerProcess | None = None
        self.address = params.connect or ""

    def __enter__(self) -> Target:
        if not self.params.connect:
            self.broker = BrokerProcess(sync=self.params.sync, data_parent=self.params.data_dir,
                                        extra_args=self.params.broker_args)
            try:
                self.broker.start()
            except BaseException:
                self.broker.close()
                raise
            self.address = self.broker.address
        else:
            host, _, port = self.address.rpartition(":")
            reachable = port.isdigit() and asyncio.run(_probe(host, int(port), None)) is not None
            if not reachable:
                raise BenchError(f"no jobwire broker answers hello at {self.address}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.broker is not None:
            self.broker.close()

    @property
    def managed(self) -> bool:
        return self.broker is not None

    @property
    def sync(self) -> str | None:
        """The sync mode, when the bench knows it (its own broker)."""
        return self.params.sync if self.managed else None

    def sampler(self) -> ResourceSampler | None:
        """A sampler of the broker process (own broker, or ``--broker-pid``), else ``None``."""
        if self.broker is not None:
            return ResourceSampler(self.broker.pid)
        if self.params.broker_pid:
            return ResourceSampler(self.params.broker_pid)
        return None


def _queue_name(scenario: str) -> str:
    return f"bench-{scenario}-{uuid.uuid4().hex[:8]}"


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _seconds(start_ns: int, end_ns: int) -> float:
    return max(end_ns - start_ns, 1) / 1e9


def _result(scenario: str, params: Params, target: Target, run: LoadRun, *, parameters:
            dict[str, Any], jobs: int, seconds: float, latency: str | None,
            latencies: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    parameters = {"payload_bytes": params.payload_bytes, **parameters}
    return make_result(
        scenario=scenario, parameters=parameters, jobs=jobs, seconds=seconds, latency=latency,
        latencies=latencies, usage=run.usage, sync=target.sync, managed=target.managed,
        load_processes=len(run.results), load_cpu_s=run.cpu_s(), extra=extra,
    )


def _fill(params: Params, target: Target, queue: str, jobs: int, *, label: str) -> LoadRun:
    """Enqueue ``jobs`` jobs in bulk from one producer process (not a measured phase)."""
    spec = LoadSpec(role="producer", index=0, address=target.address, queue=queue,
                    payload_bytes=params.payload_bytes, jobs=jobs, batch=1000, in_flight=2)
    return run_load([spec], done=lambda e, c, t: e >= jobs, timeout=params.timeout,
                    progress=LoadProgress(label, jobs, "enqueued", quiet=params.quiet))


def enqueue(params: Params, target: Target) -> dict[str, Any]:
    """``jobs`` jobs from ``producers`` processes, in batches of ``batch`` (1: one at a time)."""
    queue = _queue_name("enqueue")
    in_flight = params.resolved_in_flight()
    specs = [
        LoadSpec(role="producer", index=i, address=target.address, queue=queue,
                 payload_bytes=params.payload_bytes, jobs=quota, batch=params.batch,
                 in_flight=in_flight, batch_adds=params.batch_adds, loop=params.loop)
        for i, quota in enumerate(_split(params.jobs, params.producers))
    ]
    run = run_load(specs, done=lambda e, c, t: e >= params.jobs, sampler=target.sampler(),
                   timeout=params.timeout,
                   progress=LoadProgress("enqueue", params.jobs, "enqueued", quiet=params.quiet))
    mode = "bulk" if params.batch > 1 else "single"
    return _result(
        "enqueue", params, target, run,
        parameters={"mode": mode, "producers": params.producers, "batch": params.batch,
                    "in_flight": in_flight, "batch_adds": params.batch_adds,
                    "loop": params.loop},
        jobs=run.count("producer"), seconds=_seconds(run.go_ns, run.last_ns("producer")),
        latency="enqueue_ack", latencies=merge_latencies(run.results, ["enqueue_ack"]),
        extra={"requests": sum(int(r["requests"]) for r in run.results)},
    )


def drain(params: Params, target: Target) -> dict[str, Any]:
    """Fill a queue with ``jobs`` jobs, then time ``workers`` processes at ``concurrency``."""
    queue = _queue_name("drain")
    filled = _fill(params, target, queue, params.jobs, label="fill")
    fill_s = _seconds(filled.go_ns, filled.last_ns("producer"))
    specs = [
        LoadSpec(role="worker", index=i, address=target.address, queue=queue,
                 payload_bytes=params.payload_bytes, concurrency=params.concurrency,
                 work=params.work, work_ms=params.work_ms)
        for i in range(params.workers)
    ]
    run = run_load(specs, done=lambda e, c, t: c >= params.jobs, sampler=target.sampler(),
                   timeout=params.timeout,
                   progress=LoadProgress("drain", params.jobs, "completed", quiet=params.quiet))
    return _result(
        "drain", params, target, run,
        parameters={"workers": params.workers, "concurrency": params.concurrency,
                    "work": params.work, "work_ms": params.work_ms},
        jobs=run.count("worker"), seconds=_seconds(run.go_ns, run.last_ns("worker")),
        latency="ack", latencies=merge_latencies(run.results, ["ack"]),
        extra={"fill_s": round(fill_s, 3)},
    )


def _mixed_specs(params: Params, target: Target, queue: str, *, jobs: int, batch: int,
                 in_flight: int, rate: float, series: bool) -> list[LoadSpec]:
    producer_slots = tuple(range(params.producers))
    worker_slots = tuple(range(params.producers, params.producers + params.workers))
    quotas = _split(jobs, params.producers) if jobs else [0] * params.producers
    specs = [
        LoadSpec(role="producer", index=i, address=target.address, queue=queue,
                 payload_bytes=params.payload_bytes, stamp=True, series=series, jobs=quotas[i],
                 batch=batch, in_flight=in_flight, rate=rate / params.producers,
                 max_backlog=params.max_backlog if not rate else 0,
                 producer_slots=producer_slots, worker_slots=worker_slots)
        for i in producer_slots
    ]
    specs += [
        LoadSpec(role="worker", index=i, address=target.address, queue=queue,
                 payload_bytes=params.payload_bytes, stamp=True, series=series,
                 concurrency=params.concurrency, work=params.work, work_ms=params.work_ms)
        for i in worker_slots
    ]
    return specs


def latency(params: Params, target: Target) -> dict[str, Any]:
    """``jobs`` jobs enqueued one at a time at ``rate`` jobs/s against idle workers."""
    if params.rate <= 0:
        raise BenchError("latency needs --rate > 0")
    queue = _queue_name("latency")
    specs = _mixed_specs(params, target, queue, jobs=params.jobs, batch=1, in_flight=1,
                         rate=params.rate, series=False)
    run = run_load(specs, done=lambda e, c, t: c >= params.jobs, sampler=target.sampler(),
                   timeout=params.timeout,
                   progress=LoadProgress("latency", params.jobs, "completed", quiet=params.quiet))
    return _result(
        "latency", params, target, run,
        parameters={"rate": params.rate, "producers": params.producers,
                    "workers": params.workers, "concurrency": params.concurrency,
                    "work": params.work, "work_ms": params.work_ms},
        jobs=run.count("worker"), seconds=_seconds(run.go_ns, run.last_ns("worker")),
        latency="start",
        latencies=merge_latencies(run.results, ["start", "complete", "enqueue_ack", "ack"]),
    )


def _series(run: LoadRun, seconds: range) -> list[dict[str, Any]]:
    """Per-second throughput (from the sampled counters and worker counts) and latency."""
    workers = run.of_role("worker")

    def enqueued_at(t: float) -> int:
        return max((e for s, e, _ in run.samples if s <= t), default=0)

    out = []
    for second in seconds:
        point: dict[str, Any] = {
            "t": second,
            "enqueued_per_s": enqueued_at(second + 1) - enqueued_at(second),
            "completed_per_s": sum(int(w["series"]["completed"].get(second, 0)) for w in workers),
        }
        for name in ("start", "complete"):
            merged = merge(w["series"][name][second] for w in workers
                           if second in w["series"][name])
            summary = summary_ms(merged)
            point[f"{name}_p50_ms"] = summary["p50"] if summary else None
            point[f"{name}_p99_ms"] = summary["p99"] if summary else None
        out.append(point)
    return out


def mixed(params: Params, target: Target) -> dict[str, Any]:
    """Producers and workers together for ``duration`` s, flat out or at ``rate`` jobs/s."""
    queue = _queue_name("mixed")
    in_flight = params.resolved_in_flight()
    specs = _mixed_specs(params, target, queue, jobs=0, batch=params.batch, in_flight=in_flight,
                         rate=params.rate, series=True)
    run = run_load(specs, done=lambda e, c, t: t >= params.duration, sampler=target.sampler(),
                   timeout=params.duration + params.timeout,
                   progress=LoadProgress("mixed", params.duration, "seconds", quiet=params.quiet))
    first = math.ceil(params.warmup)
    window = range(first, max(first + 1, math.floor(params.duration)))
    workers = run.of_role("worker")
    jobs = sum(int(w["series"]["completed"].get(s, 0)) for w in workers for s in window)
    latencies: dict[str, Any] = {}
    for name in ("start", "complete"):
        latencies[name] = summary_ms(merge(
            w["series"][name][s] for w in workers for s in window if s in w["series"][name]
        ))
    latencies.update(merge_latencies(run.results, ["enqueue_ack"]))
    return _result(
        "mixed", params, target, run,
        parameters={"rate": params.rate or "flat out", "producers": params.producers,
                    "batch": params.batch, "in_flight": in_flight,
                    "max_backlog": params.max_backlog if not params.rate else None,
                    "workers": params.workers, "concurrency": params.concurrency,
                    "work": params.work, "work_ms": params.work_ms,
                    "duration_s": params.duration, "warmup_s": first},
        jobs=jobs, seconds=float(len(window)), latency="complete", latencies=latencies,
        extra={"enqueued_total": run.count("producer"), "completed_total": run.count("worker"),
               "series": _series(run, range(0, math.ceil(params.duration)))},
    )


async def _probe(host: str, port: int, queue: str | None) -> dict[str, Any] | None:
    """One ``hello`` + ``stats`` exchange over a fresh connection; ``None`` if it fails."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return None
    try:
        writer.write(encode_frames([
            request_message(1, Hello(PROTOCOL_VERSION, "jobwire-bench")),
            request_message(2, Stats(queue)),
        ]))
        decoder = FrameDecoder()
        replies: dict[int, Any] = {}
        while len(replies) < 2:
            data = await reader.read(65536)
            if not data:
                return None
            decoder.feed(data)
            for message in decoder.messages():
                if message[0] != 1:  # an ERROR reply or event: not serving yet
                    return None
                replies[message[1]] = message[2]
        stats: dict[str, Any] = replies[2]
        return stats
    except (OSError, ValueError):
        return None
    finally:
        writer.close()


def wait_serving(host: str, port: int, queue: str, timeout: float) -> dict[str, Any]:
    """Probe every 5 ms until the broker answers ``hello`` + ``stats``.

    Returns:
        The ``stats`` reply body.

    Raises:
        BenchError: no answer within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = asyncio.run(_probe(host, port, queue))
        if answer is not None:
            return answer
        time.sleep(0.005)
    raise BenchError(f"restarted broker not serving after {timeout} s")


def recovery(params: Params, target: Target) -> dict[str, Any]:
    """Fill the journal with ``jobs`` jobs, kill and restart the broker, time until it serves."""
    broker = target.broker
    if broker is None:
        raise BenchError("recovery needs the bench's own broker (it restarts it): drop --connect")
    queue = _queue_name("recovery")
    filled = _fill(params, target, queue, params.jobs, label="fill journal")
    fill_s = _seconds(filled.go_ns, filled.last_ns("producer"))
    before = ResourceSampler(broker.pid)
    before.start()
    loaded = before.stop()
    sig = signal.SIGKILL if params.stop_signal == "kill" else signal.SIGTERM
    stop_started = time.monotonic()
    code = broker.stop(sig)
    stop_s = time.monotonic() - stop_started
    spawned = time.monotonic_ns()
    broker.spawn()
    sampler = ResourceSampler(broker.pid)
    sampler.start()
    try:
        stats = wait_serving(broker.host, broker.port, queue, params.timeout)
    finally:
        usage = sampler.stop()
    serving_ns = time.monotonic_ns()
    events = broker.wait_listening()
    waiting = int(((stats.get("queues") or {}).get(queue) or {}).get("waiting", -1))
    if waiting != params.jobs:
        raise BenchError(f"restarted broker reports {waiting} waiting jobs, expected {params.jobs}")
    recovered = events.get("recovered") or {}
    seconds = _seconds(spawned, serving_ns)
    run = LoadRun([], spawned, serving_ns, usage)
    return _result(
        "recovery", params, target, run,
        parameters={"signal": params.stop_signal},
        jobs=waiting, seconds=seconds, latency=None, latencies={},
        extra={"fill_s": round(fill_s, 3), "rss_mb_before_stop": loaded.rss_mb_end,
               "stop_s": round(stop_s, 3), "exit_code": code,
               "journal_load_s": recovered.get("seconds"),
               "jobs_recovered": recovered.get("jobs")},
    )


def raw(params: Params, target: Target) -> dict[str, Any]:
    """``jobs`` one-job enqueues from ``bench.rawload`` (no client library), ``in_flight``
    outstanding on one blocking socket, in this process."""
    from bench.rawload import run as raw_run

    in_flight = params.in_flight or 100
    sampler = target.sampler()
    if sampler is not None:
        sampler.start()
    try:
        done = raw_run(target.address, None, mode=params.raw_mode, jobs=params.jobs,
                       in_flight=in_flight, payload_bytes=params.payload_bytes,
                       queue=_queue_name("raw"), token=None)
    finally:
        usage = sampler.stop() if sampler is not None else None
    own_cpu = round(done["load_us_per_job"] * params.jobs / 1e6, 3)
    return make_result(
        scenario="raw", parameters={"payload_bytes": params.payload_bytes,
                                    "mode": params.raw_mode, "in_flight": in_flight},
        jobs=params.jobs, seconds=done["seconds"], latency=None, latencies={},
        usage=usage, sync=target.sync, managed=target.managed, load_processes=1,
        load_cpu_s=own_cpu, extra={"sends": done["sends"], "recvs": done["recvs"]},
    )


RUNNERS: dict[str, Callable[[Params, Target], dict[str, Any]]] = {
    "enqueue": enqueue, "drain": drain, "latency": latency, "mixed": mixed, "recovery": recovery,
    "raw": raw,
}


def run_scenario(name: str, params: Params) -> dict[str, Any]:
    """Run one scenario against its own broker (or ``params.connect``).

    Raises:
        BenchError: the run failed; the message says why.
        BrokerStartError: the bench's broker did not start.
    """
    with Target(params) as target:
        return RUNNERS[name](params, target)
