"""The group committer over a real journal: batching, failures and retries, and a restart."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from broker.committer import GroupCommitter, retry_delay
from broker.core import Core, CoreConfig
from broker.journal import Journal, JournalError
from protocol.model import AckItem, JobSpec, JobState
from tests.tools.journaltools import NOW, Source, commit, failing, make_job, upserts


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    opened = await Journal.open(tmp_path / "jobwire.db")
    yield opened
    await opened.close()



@pytest.fixture
async def committed(
    journal: Journal,
) -> AsyncIterator[tuple[Journal, Source, GroupCommitter]]:
    source = Source()
    committer = GroupCommitter(journal, source.take_changes, retry_delay=0.01)
    task = asyncio.create_task(committer.run())
    yield journal, source, committer
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task



# --------------------------------------------------------------------------- group commit


async def test_many_requests_share_few_transactions(
    committed: tuple[Journal, Source, GroupCommitter],
) -> None:
    journal, source, committer = committed

    async def request() -> BaseException | None:
        source.new_job()
        return await commit(committer)

    results = await asyncio.gather(*(request() for _ in range(300)))

    assert results == [None] * 300
    assert journal.transactions <= 3
    assert committer.batches == journal.transactions
    assert len((await journal.load()).jobs) == 300


async def test_callbacks_run_in_batch_order_each_after_its_own_commit(
    committed: tuple[Journal, Source, GroupCommitter],
) -> None:
    # The run loop answers a batch once the next one is in the SQLite thread: the order of
    # answers must still follow the batches, and each answer must see its own rows on disk.
    journal, source, committer = committed
    answered: list[tuple[int, int]] = []  # (request, transactions committed when answered)
    done = asyncio.Event()

    def make_callback(index: int) -> Callable[[BaseException | None], None]:
        def callback(error: BaseException | None) -> None:
            assert error is None
            answered.append((index, journal.transactions))
            if len(answered) == 200:
                done.set()
        return callback

    committed_at: dict[int, int] = {}
    for index in range(200):
        source.new_job(payload=b"x" * 2_000)
        committed_at[index] = journal.transactions
        committer.after_commit(make_callback(index))
        if index % 10 == 9:
            await asyncio.sleep(0.001)  # let batches form and commit in between
    await asyncio.wait_for(done.wait(), 30)

    assert [index for index, _ in answered] == list(range(200))
    # Each answer came after at least one more transaction than when it registered.
    assert all(at > committed_at[index] for index, at in answered)
    assert journal.transactions >= 2


@pytest.mark.parametrize("delay", [0.0, 0.0005, 0.001, 0.003, 0.01])
async def test_every_callback_is_answered_once_however_the_run_loop_is_stopped(
    journal: Journal, delay: float
) -> None:
    source = Source()
    committer = GroupCommitter(journal, source.take_changes)
    answers: list[tuple[str, BaseException | None]] = []
    task = asyncio.create_task(committer.run())
    source.new_job(payload=b"x" * 50_000)
    committer.after_commit(lambda error: answers.append(("first", error)))
    await source.taken.wait()  # the first batch is being written
    source.new_job()
    committer.after_commit(lambda error: answers.append(("second", error)))
    await asyncio.sleep(delay)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await committer.flush()

    assert answers == [("first", None), ("second", None)]
    assert len((await journal.load()).jobs) == 2


async def test_the_next_batch_gathers_while_a_transaction_runs(
    committed: tuple[Journal, Source, GroupCommitter],
) -> None:
    journal, source, committer = committed
    for _ in range(2_000):
        source.new_job(payload=b"x" * 200)
    first = asyncio.ensure_future(commit(committer))
    await source.taken.wait()  # the committer took them and built the first transaction
    later = []
    for _ in range(50):
        source.new_job()
        later.append(asyncio.ensure_future(commit(committer)))

    assert await first is None
    assert await asyncio.gather(*later) == [None] * 50
    assert journal.transactions == 2
    assert len((await journal.load()).jobs) == 2_050


async def test_a_waiter_with_nothing_to_write_is_still_answered(
    committed: tuple[Journal, Source, GroupCommitter],
) -> None:
    journal, _, committer = committed

    assert await commit(committer) is None
    assert journal.transactions == 0


async def test_a_waiter_without_changes_is_answered_after_the_running_commit(
    committed: tuple[Journal, Source, GroupCommitter],
) -> None:
    journal, source, committer = committed
    order: list[str] = []
    for _ in range(2_000):
        source.new_job()
    committer.after_commit(lambda error: order.append("writer"))
    await source.taken.wait()
    assert journal.transactions == 0  # the writer's transaction is still running

    committer.after_commit(lambda error: order.append("reader"))
    await committer.flush()

    assert order == ["writer", "reader"]
    assert journal.transactions == 1


async def test_a_failing_callback_does_not_stop_the_loop(
    committed: tuple[Journal, Source, GroupCommitter],
) -> None:
    _, source, committer = committed

    def broken(error: BaseException | None) -> None:
        raise RuntimeError("callback bug")

    source.new_job()
    committer.after_commit(broken)
    assert await commit(committer) is None
    source.new_job()
    assert await commit(committer) is None


async def test_flush_commits_everything_and_is_safe_when_idle(journal: Journal) -> None:
    source = Source()
    committer = GroupCommitter(journal, source.take_changes)  # no run() task at all
    await committer.flush()
    answers: list[BaseException | None] = []
    source.new_job()
    committer.after_commit(answers.append)
    await committer.flush()
    await committer.flush()

    assert answers == [None]
    assert len((await journal.load()).jobs) == 1


async def test_run_reraises_cancellation_and_keeps_an_unanswered_batch(journal: Journal) -> None:
    source = Source()
    committer = GroupCommitter(journal, source.take_changes)
    task = asyncio.create_task(committer.run())
    for _ in range(1_000):
        source.new_job()
    answers: list[BaseException | None] = []
    committer.after_commit(answers.append)
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # mid-transaction
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    await committer.flush()  # shutdown's final commit answers the waiter
    assert answers == [None]
    assert len((await journal.load()).jobs) == 1_000


async def test_a_failed_write_is_reported_and_retried_once_the_disk_has_room(
    committed: tuple[Journal, Source, GroupCommitter],
) -> None:
    journal, source, committer = committed
    kept = source.new_job()
    doomed = source.new_job()
    assert await commit(committer) is None

    await journal.set_size_limit(0)  # the file may not grow: as good as a full disk
    for _ in range(300):
        source.new_job(payload=b"z" * 1_000)
    kept.state = JobState.ACTIVE
    source.changed(kept)
    failure = await commit(committer)

    assert isinstance(failure, JournalError)
    assert isinstance(failure.__cause__, sqlite3.Error)
    assert failing(committer)
    with pytest.raises(JournalError, match="full"):
        await journal.write(upserts(make_job(10_000, payload=b"y" * 100_000)))

    # Newer changes made while the disk is full are merged over the retained ones.
    kept.attempts = 1
    source.changed(kept)
    source.deleted(doomed.seq)
    assert isinstance(await commit(committer), JournalError)

    await journal.set_size_limit(None)
    assert await commit(committer) is None
    assert not failing(committer)
    assert committer.batches == journal.transactions
    assert committer.failed_batches >= 2  # the retry timer may have added failures of its own
    jobs = {job.id: job for job in (await journal.load()).jobs}
    assert len(jobs) == 301
    assert doomed.id not in jobs
    assert (jobs[kept.id].state, jobs[kept.id].attempts) == (JobState.ACTIVE, 1)


async def test_retained_changes_are_retried_without_new_requests(
    committed: tuple[Journal, Source, GroupCommitter],
) -> None:
    journal, source, committer = committed
    await journal.set_size_limit(0)
    for _ in range(300):
        source.new_job(payload=b"z" * 1_000)
    assert isinstance(await commit(committer), JournalError)

    await journal.set_size_limit(None)
    for _ in range(1_000):  # the committer's own retry timer (10 ms, doubling) gets there
        if not failing(committer):
            break
        await asyncio.sleep(0.01)
    assert not failing(committer)
    assert len((await journal.load()).jobs) == 300


async def test_flush_raises_when_the_final_commit_fails(journal: Journal) -> None:
    source = Source()
    committer = GroupCommitter(journal, source.take_changes)
    await journal.set_size_limit(0)
    for _ in range(300):
        source.new_job(payload=b"z" * 1_000)

    with pytest.raises(JournalError):
        await committer.flush()
    assert failing(committer)


# --------------------------------------------------------------------------- recovery with the core


async def test_a_restart_rebuilds_the_core_from_what_was_committed(tmp_path: Path) -> None:
    path = tmp_path / "jobwire.db"
    journal = await Journal.open(path)
    core = Core(CoreConfig(), rng=random.Random(1), token_base=1_000)
    committer = GroupCommitter(journal, core.take_changes)
    core.enqueue("q", [JobSpec(f"job-{i}", "work", b"%d" % i) for i in range(5)], NOW)
    await committer.flush()
    leased = {job.job_id: job for job in core.reserve(["q"], 3, None, owner=1, now=NOW + 1)}
    core.ack([AckItem("job-0", leased["job-0"].token, b"done")], NOW + 2)
    core.pause("q", NOW + 2)
    await committer.flush()
    core.enqueue("q", [JobSpec("never-committed", "work", b"")], NOW + 3)
    await journal.close()  # "crash": the last enqueue was never committed

    journal = await Journal.open(path)
    try:
        restarted = Core.restore(CoreConfig(), await journal.load(), NOW + 10,
                                 rng=random.Random(2), token_base=2_000)
    finally:
        await journal.close()

    def state(job_id: str) -> tuple[JobState, int] | None:
        info = restarted.get(job_id)
        return None if info is None else (info.state, info.attempts)

    assert state("job-0") == (JobState.COMPLETED, 1)
    # Leased when the broker stopped: that attempt counts as failed, with backoff.
    assert state("job-1") == (JobState.DELAYED, 1)
    assert state("job-2") == (JobState.DELAYED, 1)
    assert state("job-3") == (JobState.WAITING, 0)
    assert state("job-4") == (JobState.WAITING, 0)
    assert state("never-committed") is None
    assert restarted.stats("q", NOW + 10)["q"].paused



# --------------------------------------------------------------------------- a long full disk


def test_the_retry_delay_is_capped_however_many_failures() -> None:
    assert retry_delay(1, 0.05, 5.0) == 0.05
    assert retry_delay(4, 0.05, 5.0) == 0.4
    for failures in (1_025, 10_000, 10**9):  # 2.0 ** 1024 overflows a float
        assert retry_delay(failures, 0.05, 5.0) == 5.0


async def test_thousands_of_failed_batches_do_not_stop_the_committer(journal: Journal) -> None:
    source = Source()
    committer = GroupCommitter(journal, source.take_changes, retry_delay=1e-6,
                               max_retry_delay=0.0)
    task = asyncio.create_task(committer.run())
    try:
        await journal.set_size_limit(0)
        for _ in range(300):
            source.new_job(payload=b"z" * 1_000)
        committer.wake()
        while committer.failed_batches < 2_000:  # the retry loop alone gets there
            assert not task.done(), task.exception()
            await asyncio.sleep(0.01)
        await journal.set_size_limit(None)
        assert await commit(committer) is None
        assert not task.done()
        assert len((await journal.load()).jobs) == 300
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
