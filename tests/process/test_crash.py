"""Kill -9 the broker at random moments under load; nothing acknowledged may be lost or redone.

A producer enqueues 20,000 jobs (client-chosen ids, batches pipelined, every batch retried with
the same ids until acknowledged) while a worker reserves and acks them. The broker, a real
``jobwire serve`` process in the default sync mode, is SIGKILLed several times at random moments
and restarted on the same journal. The test records what the broker *acknowledged*:

* an acknowledged enqueue must be present (any state) after every restart;
* an acknowledged completion must stay ``completed`` and must never be delivered again;
* at the end, once everything is processed, the queue holds exactly the 20,000 jobs, all
  completed, and the counts per state add up.

Set ``JOBWIRE_CRASH_SEED`` to replay a run (the seed is in every failure message).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import Callable

from protocol.messages import Reply
from tests.conftest import BrokerProcess
from tests.tools.wire import R_ID, R_TOKEN, WireClient, job_spec

JOBS = 20_000
ENQUEUE_BATCH = 100
ENQUEUE_PIPELINE = 4
RESERVE_BATCH = 100
KILLS = 5
QUEUE = "crash"


class Ledger:
    """What the broker acknowledged, as seen by the test."""

    def __init__(self) -> None:
        self.all_ids = [f"job-{i}" for i in range(JOBS)]
        self.enqueued: set[str] = set()
        self.completed: set[str] = set()
        self.redelivered_after_ack: list[str] = []
        self.deliveries = 0
        self.kill_at = float(JOBS)
        self.reached = asyncio.Event()
        """Set once ``kill_at`` enqueues are acknowledged."""


async def _produce(client: WireClient, ledger: Ledger) -> None:
    """Enqueue every id not yet acknowledged, a few batches in flight at a time."""
    todo = [job_id for job_id in ledger.all_ids if job_id not in ledger.enqueued]
    batches = [todo[i:i + ENQUEUE_BATCH] for i in range(0, len(todo), ENQUEUE_BATCH)]
    in_flight: list[tuple[int, list[str]]] = []
    for batch in batches:
        jobs = [job_spec(job_id, "crash", job_id.encode()) for job_id in batch]
        in_flight.append((client.send("enqueue", {"queue": QUEUE, "jobs": jobs}), batch))
        if len(in_flight) >= ENQUEUE_PIPELINE:
            await _settle_enqueue(client, ledger, *in_flight.pop(0))
    for request_id, batch in in_flight:
        await _settle_enqueue(client, ledger, request_id, batch)


async def _settle_enqueue(client: WireClient, ledger: Ledger, request_id: int,
                          batch: list[str]) -> None:
    answer = await client.answer(request_id, within=60)
    assert isinstance(answer, Reply), answer
    assert answer.body["ids"] == tuple(batch)
    ledger.enqueued.update(batch)  # new or duplicate: either way it exists and is committed
    if len(ledger.enqueued) >= ledger.kill_at:
        ledger.reached.set()


async def _work(client: WireClient, ledger: Ledger, until_done: bool) -> None:
    """Reserve and ack; with ``until_done``, stop once the queue has nothing unfinished."""
    while True:
        jobs = await client.reserve(QUEUE, max_jobs=RESERVE_BATCH, wait_ms=100, within=60)
        for job in jobs:
            ledger.deliveries += 1
            if job[R_ID] in ledger.completed:
                ledger.redelivered_after_ack.append(job[R_ID])
        if jobs:
            results = await client.ack(*([job[R_ID], job[R_TOKEN]] for job in jobs))
            for job, (code, _) in zip(jobs, results, strict=True):
                assert code == "OK", (job[R_ID], code)
                ledger.completed.add(job[R_ID])
        elif until_done and len(ledger.enqueued) == JOBS:
            stats = (await client.ok("stats", {"queue": QUEUE}))["queues"][QUEUE]
            if stats["waiting"] + stats["delayed"] + stats["active"] == 0:
                return


async def _check_acknowledged(client: WireClient, ledger: Ledger, seed: int) -> dict[str, int]:
    """Every acknowledged enqueue is present; every acknowledged completion is completed."""
    states: dict[str, int] = {}
    ids = sorted(ledger.enqueued)
    for start in range(0, len(ids), 2000):
        chunk = ids[start:start + 2000]
        request_ids = client.send_many([("get", {"id": job_id}) for job_id in chunk])
        for job_id, request_id in zip(chunk, request_ids, strict=True):
            answer = await client.answer(request_id, within=60)
            assert isinstance(answer, Reply), f"seed {seed}: acknowledged {job_id} lost: {answer}"
            state = answer.body["job"]["state"]
            states[state] = states.get(state, 0) + 1
            if job_id in ledger.completed:
                assert state == "completed", f"seed {seed}: {job_id} acked, now {state}"
    return states


async def test_acknowledged_work_survives_kill_9(
    spawn_broker: Callable[..., BrokerProcess],
) -> None:
    seed = int(os.environ.get("JOBWIRE_CRASH_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    process = spawn_broker(
        "--default-attempts", "1000000",  # crashes count attempts; none may end up failed
        "--default-backoff", "fixed", "--backoff-base", "0",
        "--keep-completed-count", "none", "--keep-completed-age", "none",
    )
    ledger = Ledger()
    for incarnation in range(KILLS + 1):
        last = incarnation == KILLS
        producer = await WireClient.connect(process.host, process.port)
        worker = await WireClient.connect(process.host, process.port)
        await _check_acknowledged(producer, ledger, seed)
        tasks = [asyncio.create_task(_produce(producer, ledger)),
                 asyncio.create_task(_work(worker, ledger, until_done=last))]
        if last:
            await asyncio.gather(*tasks)
        else:
            # Kill somewhere inside the next fifth of the enqueues (so every kill lands while
            # work is under way), after a random extra moment of up to 50 ms.
            ledger.kill_at = rng.uniform(incarnation, incarnation + 1) * JOBS / KILLS
            ledger.reached.clear()
            reached = asyncio.create_task(ledger.reached.wait())
            await asyncio.wait({reached, *tasks}, return_when=asyncio.FIRST_COMPLETED)
            reached.cancel()
            await asyncio.wait(tasks, timeout=rng.uniform(0.0, 0.05))
            process.kill()
            for task in tasks:
                with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
                    await task
        await producer.close()
        await worker.close()
        if not last:
            process.restart()

    client = await WireClient.connect(process.host, process.port)
    states = await _check_acknowledged(client, ledger, seed)
    stats = (await client.ok("stats", {"queue": QUEUE}))["queues"][QUEUE]
    await client.close()
    assert ledger.redelivered_after_ack == [], f"seed {seed}"
    assert len(ledger.enqueued) == JOBS, f"seed {seed}"
    assert states == {"completed": JOBS}, f"seed {seed}: {states}"
    assert (stats["completed"], stats["total_completed"]) == (JOBS, JOBS), f"seed {seed}: {stats}"
    assert stats["waiting"] + stats["delayed"] + stats["active"] + stats["failed"] == 0, stats
    assert ledger.deliveries >= JOBS
