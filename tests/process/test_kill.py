"""The kill test (``tests/tools/killtest.py``) as pytest tests.

``test_kill_short`` runs in CI: 5 SIGKILLs of a real ``jobwire serve`` over 5,000 jobs (4
producers, 8 workers, 1 s leases); ``test_kill_short_sync_normal`` does 3 over 2,000 jobs with
``--sync normal``. ``test_kill_long`` is the on-demand soak (``pytest -m slow``):
20 kills over 50,000 jobs, 8 producers, 16 workers, 5 s leases, the same as ``python -m
tests.tools.killtest --kills 20 --jobs 50000 --producers 8 --workers 16 --lease-ms 5000``.

Each run has 2 ``checkpoint`` kills: the broker checkpoints every 256 KiB of WAL and the killer
sends SIGKILL while its log shows one under way; the run asserts at least one landed inside.

Both assert what the README's "Guarantees and failure modes" promises for the default sync mode:
nothing acknowledged is lost, nothing appears that was never enqueued, no job is delivered again
after its completion was acknowledged, and every duplicate delivery is explained by an explicit
fail, an expired lease or a broker restart. Set ``JOBWIRE_KILL_SEED`` to replay a run.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.tools.killtest import KillConfig, run_kill_test


def _seed() -> int:
    return int(os.environ.get("JOBWIRE_KILL_SEED", random.randrange(2**32)))


async def _run(cfg: KillConfig, tmp_path: Path) -> None:
    report = await run_kill_test(cfg, tmp_path)
    print(report.table())
    assert report.violations() == {}, f"seed {cfg.seed}:\n{report.table()}"
    assert report.acked_enqueues == cfg.jobs
    finished = report.final_states.get("completed", 0) + report.final_states.get("failed", 0)
    assert finished == cfg.jobs
    # Kills did land inside checkpoints (the broker's log: checkpoint_started, not complete),
    # and the invariants above held across them.
    assert report.mid_checkpoint_kills >= 1, f"seed {cfg.seed}:\n{report.table()}"


@pytest.mark.timeout(600)
async def test_kill_short(tmp_path: Path) -> None:
    await _run(KillConfig(kills=5, jobs=5_000, producers=4, workers=8, lease_ms=1_000,
                          seed=_seed(), deadline_s=400), tmp_path)


@pytest.mark.timeout(600)
async def test_kill_short_sync_normal(tmp_path: Path) -> None:
    """``--sync normal`` skips the fsync per commit, but a broker crash (not a power loss)
    still loses nothing: the committed pages are in the OS's cache."""
    await _run(KillConfig(kills=3, jobs=2_000, producers=2, workers=4, lease_ms=1_000,
                          seed=_seed(), sync="normal", deadline_s=300), tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(3600)
async def test_kill_long(tmp_path: Path) -> None:
    await _run(KillConfig(kills=20, jobs=50_000, producers=8, workers=16, lease_ms=5_000,
                          seed=_seed(), deadline_s=3000), tmp_path)
