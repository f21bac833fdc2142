"""A repeatable job across ``kill -9`` of a real ``jobwire serve``: a scheduler with ``every: 1s``
upserted 5 times is one scheduler; over 10 s it makes 10 ± 1 jobs, one per occurrence, with a
SIGKILL and restart in the middle (issue 13's done-when); the occurrence pending at the kill runs
once after the restart (the catch-up run) and no occurrence is made twice. And ``jobwire
schedules``."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from client import Client, JobState
from client.cli import main
from tests.conftest import BrokerProcess, RunningBroker

PERIOD_MS = 1_000
WINDOW_MS = 10_000


async def occurrences(client: Client, key: str) -> list[int]:
    page = await client.queue("cron").jobs(list(JobState), limit=1000)
    return sorted(int(job.id.rsplit(":", 1)[1]) for job in page.jobs
                  if job.id.startswith(f"repeat:{key}:"))


async def upsert_five_times(url: str) -> list[bool]:
    async with Client(url) as client:
        queue = client.queue("cron")
        made = [await queue.upsert_scheduler("beat", every=PERIOD_MS / 1000, data="tick")
                for _ in range(5)]
        assert [s.key for s in await queue.schedulers()] == ["beat"]
        return [s.created for s in made]


async def test_every_second_over_ten_seconds_across_a_sigkill(
    spawn_broker: Callable[..., BrokerProcess],
) -> None:
    broker = spawn_broker()
    url = f"jobwire://{broker.host}:{broker.port}"
    assert await upsert_five_times(url) == [True, False, False, False, False]
    async with Client(url) as client:
        anchor = (await occurrences(client, "beat"))[0]  # the first run: due at the upsert
    # Kill just after the fifth occurrence (anchor + 4 s) was made: the sixth is then pending,
    # journaled as a delayed job, and the restart has most of a period before a run is missed.
    await asyncio.sleep(max(0.0, (anchor + 4 * PERIOD_MS + 150) / 1000 - time.time()))
    killed_at = time.time() * 1000
    broker.kill()
    broker.start()
    up_at = time.time() * 1000
    assert await upsert_five_times(url) == [False] * 5  # an app start: nothing new
    await asyncio.sleep(max(0.0, (anchor + WINDOW_MS + 300) / 1000 - time.time()))
    async with Client(url) as client:
        made = [at for at in await occurrences(client, "beat") if at < anchor + WINDOW_MS]
        listed = await client.queue("cron").schedulers()
    broker.terminate()

    grid = [anchor + k * PERIOD_MS for k in range(WINDOW_MS // PERIOD_MS)]
    assert set(made) <= set(grid), made  # each on its occurrence, none twice (ids are unique)
    assert [at for at in grid if at <= killed_at] == [at for at in made if at <= killed_at]
    pending = min(at for at in grid if at > killed_at)
    assert pending in made  # the run due while the broker was down: once, after the restart
    assert all(at in made for at in grid if at > up_at + PERIOD_MS)  # on again from then
    # The done-when: 10 ± 1 jobs in 10 s. A restart slower than a period would skip (by design:
    # one catch-up run, not a burst) the occurrences it missed; it is stated here so that a
    # failure on a machine that slow says why.
    assert 9 <= len(made) <= 11, (made, up_at - killed_at)
    assert len(listed) == 1 and listed[0].next_run is not None


async def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(main, list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def test_jobwire_schedules_upsert_list_remove(broker: RunningBroker) -> None:
    url = f"jobwire://{broker.host}:{broker.port}"
    upsert = ("schedules", "upsert", "reports", "daily", "--cron", "0 9 * * 1-5", "--tz",
              "Europe/Berlin", "--name", "report", "--data", '{"days": 7}', "--limit", "10",
              "--url", url)
    code, out, _ = await cli(*upsert, "--json")
    assert code == 0
    made = json.loads(out)
    assert (made["created"], made["cron"], made["tz"], made["data"], made["count"]) == (
        True, "0 9 * * 1-5", "Europe/Berlin", {"days": 7}, 1)
    next_run = datetime.fromtimestamp(made["next_run"], ZoneInfo("Europe/Berlin"))
    assert (next_run.hour, next_run.minute) == (9, 0) and next_run.weekday() < 5
    code, out, _ = await cli(*upsert)
    assert code == 0 and out.startswith("reports/daily: unchanged; cron '0 9 * * 1-5'")
    code, out, _ = await cli("schedules", "upsert", "ops", "beat", "--every", "15m", "--url", url)
    assert code == 0 and "created; every 900s" in out
    code, out, _ = await cli("schedules", "--url", url)
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["QUEUE", "KEY", "RULE"]
    assert [line.split()[:2] for line in lines[1:]] == [["ops", "beat"], ["reports", "daily"]]
    assert "1/10" in lines[2]
    code, out, _ = await cli("schedules", "list", "--queue", "ops", "--json", "--url", url)
    assert [s["key"] for s in json.loads(out)] == ["beat"]
    code, _, err = await cli("schedules", "upsert", "ops", "bad", "--cron", "0 9 * * *", "--tz",
                             "Atlantis/Capital", "--url", url)
    assert code == 1 and "tz: " in err
    assert (await cli("schedules", "remove", "ops", "beat", "--url", url))[0] == 0
    code, out, _ = await cli("schedules", "remove", "ops", "beat", "--url", url)
    assert code == 1 and "no such scheduler" in out
