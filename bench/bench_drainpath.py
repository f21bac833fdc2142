"""The drain path without I/O, for instruction counts: reserve and ack in 50-job requests, and
the journal rows each commit would write (``RowEncoder.job_row``). No timing: run it under
``valgrind --tool=cachegrind --cache-sim=no`` and compare instructions, which do not move with
the load of a shared machine (wall-clock and CPU time do, by ±30% here).

Usage: ``python -m bench.bench_drainpath JOBS MODE``, MODE ``setup`` (fill the queue only),
``core`` (and drain it through the core) or ``rows`` (and build the rows too). Instructions per
job of a part = (count of the mode with it - count of the mode before) / JOBS::

    for m in setup core rows; do valgrind --tool=cachegrind --cache-sim=no \\
        --cachegrind-out-file=/dev/null python -m bench.bench_drainpath 20000 $m 2>&1 | grep refs
    done
"""

from __future__ import annotations

import gc
import random
import sys

from broker.core import Core, CoreConfig
from broker.records import RowEncoder
from protocol.model import AckItem, JobSpec

BATCH = 50


def main(argv: list[str]) -> int:
    total, mode = int(argv[0]), argv[1]
    core = Core(CoreConfig(), rng=random.Random(0), token_base=1 << 40)
    encoder = RowEncoder()
    now = 1_700_000_000_000
    core.enqueue("q", [JobSpec(None, "bench", bytes(100)) for _ in range(total)], now)
    core.take_changes()
    core.take_ready()
    gc.collect()
    gc.disable()
    if mode == "setup":
        return 0
    rows = mode == "rows"
    for _ in range(total // BATCH):
        now += 1
        reserved = core.reserve(("q",), BATCH, None, 1, now)
        changed = core.take_changes().jobs.values()
        if rows:
            for job in changed:
                if job is not None:
                    encoder.job_row(job)
        core.ack([AckItem(job.job_id, job.token, None) for job in reserved], now)
        changed = core.take_changes().jobs.values()
        if rows:
            for job in changed:
                if job is not None:
                    encoder.job_row(job)
        core.take_finished()
        core.take_ready()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
