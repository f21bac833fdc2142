"""The dashboard in a real browser: Playwright drives Debian's chromium against a real broker and
gateway (in-process, port 0). ``make test`` installs chromium (``apt-get install chromium``);
Playwright's own browser downloads are not used.

Set ``JOBWIRE_SCREENSHOTS=docs`` to refresh the README's screenshots of the three pages.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from client import Client, Worker
from tests.conftest import RunningBroker
from tests.tools.clienttools import running
from tests.tools.gatewaytools import RunningGateway, fail_jobs, gateway, http, make_gateway

__all__ = ["gateway", "http", "make_gateway"]  # fixtures, imported for pytest

playwright_api = pytest.importorskip("playwright.async_api", reason="pip install '.[dev]'")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# Generous waits: the page refreshes every 2 s, and the host may be busy (nothing here is timed).
playwright_api.expect.set_options(timeout=20_000)
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Debian's chromium is not installed (make test installs it: apt-get install chromium)",
)


@pytest.fixture
async def page(gateway: RunningGateway) -> AsyncIterator[playwright_api.Page]:
    async with playwright_api.async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 800},
                                                base_url=gateway.base_url)
            context.set_default_timeout(20_000)
            yield await context.new_page()
        finally:
            await browser.close()


async def screenshot(page: playwright_api.Page, tmp_path: Path, name: str) -> None:
    target = Path(os.environ.get("JOBWIRE_SCREENSHOTS") or tmp_path)
    await page.screenshot(path=str(target / f"dashboard-{name}.png"))


async def test_overview_queue_job_retry_and_pause(
        gateway: RunningGateway, http: httpx.AsyncClient, page: playwright_api.Page,
        tmp_path: Path) -> None:
    expect = playwright_api.expect
    await page.goto("/")
    await expect(page.locator(".empty")).to_be_visible()  # a fresh broker has no queue

    # A queue appears, live, when jobs are added (no reload).
    async with Client(gateway.broker_url) as producer:
        await producer.queue("emails").add_bulk([("send", {"to": f"user{i}"}) for i in range(3)])
    emails = page.locator('tr[data-queue="emails"]')
    await expect(emails.locator("td.waiting")).to_have_text("3")
    before = await emails.bounding_box()

    # Counts that grow by three digits do not move the row (fixed layout, tabular numbers).
    async with Client(gateway.broker_url) as producer:
        await producer.queue("emails").add_bulk([("send", i) for i in range(1_000)])
    await expect(emails.locator("td.waiting")).to_have_text("1,003")
    assert await emails.bounding_box() == before

    # Failed jobs: open the queue, then a job, and read its traceback.
    await fail_jobs(gateway.broker_url, "reports", 2, message="disk on fire")
    # The queue page also shows its flow control and its schedulers.
    await http.put("/api/queues/reports/limits", json={"rate": {"max": 50, "per": 60_000},
                                                       "concurrency": 4})
    await http.put("/api/queues/reports/schedulers/digest",
                   json={"cron": "0 9 * * 1-5", "tz": "Europe/Berlin", "name": "digest"})
    await http.put("/api/queues/reports/schedulers/cleanup", json={"every": 900_000,
                                                                   "limit": 100})
    reports = page.locator('tr[data-queue="reports"]')
    await expect(reports.locator("td.failed")).to_have_text("2")
    await screenshot(page, tmp_path, "overview")
    await reports.get_by_role("link", name="reports").click()
    await expect(page).to_have_url(f"{gateway.base_url}/queues/reports?state=failed")
    await expect(page.locator("#tab-failed")).to_have_attribute("aria-selected", "true")
    rows = page.locator("table.jobs tbody tr")
    await expect(rows).to_have_count(2)
    await expect(page.locator(".range")).to_have_text("1\N{EN DASH}2 of 2 failed")
    await expect(page.locator("#limits-rate")).to_have_text("50 per 1 min")
    await expect(page.locator("#limits-concurrency")).to_have_text("4")
    schedulers = page.locator("#schedulers-table tbody tr")
    await expect(schedulers).to_have_count(2)
    await expect(schedulers.first).to_contain_text("every 15 min")
    await expect(schedulers.first).to_contain_text(" / 100")  # runs made of its limit
    await expect(schedulers.last).to_contain_text("cron 0 9 * * 1-5 (Europe/Berlin)")
    await screenshot(page, tmp_path, "queue")

    # The limits form works from the keyboard: an emptied field removes that limit.
    await page.locator("#limit-concurrency").fill("")
    await page.locator("#limit-concurrency").press("Enter")
    await expect(page.locator("#limits-concurrency")).to_have_text("none")
    limits = (await http.get("/api/queues/reports/limits")).json()
    assert limits["concurrency"] is None and limits["rate"] == {"max": 50, "per": 60_000}
    # Removing a scheduler asks first.
    await page.get_by_role("button", name="Remove scheduler cleanup").click()
    await page.locator("#confirm-ok").click()
    await expect(schedulers).to_have_count(1)
    keys = [s["key"] for s in (await http.get("/api/queues/reports/schedulers")).json()[
        "schedulers"]]
    assert keys == ["digest"]
    job_id = await rows.first.get_attribute("data-job")
    assert job_id is not None
    await rows.first.get_by_role("link").click()
    await expect(page).to_have_url(f"{gateway.base_url}/jobs/{job_id}")
    error = page.locator("#job-error")
    await expect(error).to_contain_text("RuntimeError: disk on fire")
    await expect(error).to_contain_text("Traceback (most recent call last)")
    await expect(page.locator("#job-state")).to_have_text("failed")
    await expect(page.locator("#job-attempts")).to_have_text("1 of 1")
    await screenshot(page, tmp_path, "job")

    # Retry moves it back to waiting, in the page and in the broker.
    await page.get_by_role("button", name="Retry").click()
    await expect(page.locator("#job-state")).to_have_text("waiting")
    assert (await http.get(f"/api/jobs/{job_id}")).json()["state"] == "waiting"

    # Retry all failed asks first; cancelling changes nothing, confirming retries the rest.
    await page.get_by_role("link", name="reports").click()
    await expect(rows).to_have_count(1)
    await page.get_by_role("button", name="Retry all failed").click()
    await page.locator("#confirm-cancel").click()
    assert (await http.get("/api/queues/reports")).json()["failed"] == 1
    await page.get_by_role("button", name="Retry all failed").click()
    await page.locator("#confirm-ok").click()
    await expect(rows).to_have_count(0)
    await expect(page.locator("#count-failed")).to_have_text("0")

    # Pause a queue from the overview, with the keyboard.
    await page.goto("/")
    pause = page.get_by_role("button", name="Pause queue emails")
    await pause.focus()
    await page.keyboard.press("Enter")
    await expect(emails.locator(".badge")).to_have_text("paused")
    assert (await http.get("/api/queues/emails")).json()["paused"] is True


async def test_remove_asks_then_leaves_for_the_queue(
        gateway: RunningGateway, http: httpx.AsyncClient, page: playwright_api.Page) -> None:
    expect = playwright_api.expect
    (job_id,) = await fail_jobs(gateway.broker_url, "trash", 1)
    await page.goto(f"/jobs/{job_id}")
    await expect(page.locator("#job-data")).to_have_text("0")
    await page.get_by_role("button", name="Remove").click()
    await expect(page.locator("#confirm")).to_be_visible()
    await page.keyboard.press("Escape")  # the dialog closes: nothing happens
    assert (await http.get(f"/api/jobs/{job_id}")).status_code == 200
    await page.get_by_role("button", name="Remove").click()
    await page.locator("#confirm-ok").click()
    await expect(page).to_have_url(f"{gateway.base_url}/queues/trash?state=waiting")
    assert (await http.get(f"/api/jobs/{job_id}")).status_code == 404
    await page.goto("/jobs/does-not-exist")
    await expect(page.locator(".empty")).to_contain_text("does not exist")


async def test_the_dashboard_asks_for_the_token(
        start_broker: Callable[..., Awaitable[RunningBroker]],
        make_gateway: Callable[..., Awaitable[RunningGateway]]) -> None:
    broker = await start_broker(token="t0ken")
    running = await make_gateway(broker)
    async with playwright_api.async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(base_url=running.base_url)
            await page.goto("/")
            await playwright_api.expect(page.locator("#login")).to_be_visible()
            await page.locator("#login-token").fill("t0ken")
            await page.keyboard.press("Enter")
            await playwright_api.expect(page.locator(".empty")).to_be_visible()
        finally:
            await browser.close()


async def test_an_unknown_queue_says_so(gateway: RunningGateway,
                                        page: playwright_api.Page) -> None:
    await page.goto("/queues/nowhere")
    await playwright_api.expect(page.locator(".empty")).to_contain_text("no queue of this name")


async def test_state_tabs_page_jobs_and_live_events_update_without_reloading(
        gateway: RunningGateway, http: httpx.AsyncClient, page: playwright_api.Page,
        tmp_path: Path) -> None:
    expect = playwright_api.expect
    async with Client(gateway.broker_url) as producer:
        tabs = producer.queue("tabs")
        await tabs.add_bulk([("w", i) for i in range(55)])
        await tabs.add("later", "soon", delay=3600)
        await page.goto("/queues/tabs")
        # No failed or active job: the page opens on waiting, 50 a page.
        rows = page.locator("table.jobs tbody tr")
        await expect(page.locator("#tab-waiting")).to_have_attribute("aria-selected", "true")
        await expect(page.locator("#tab-waiting")).to_have_text("Waiting (55)")
        await expect(rows).to_have_count(50)
        await page.get_by_role("button", name="Next").click()
        await expect(page.locator(".range")).to_have_text("51\N{EN DASH}55 of 55 waiting")
        await expect(page).to_have_url(f"{gateway.base_url}/queues/tabs?state=waiting&offset=50")
        # Arrow keys move between tabs (the ARIA tab pattern).
        await page.locator("#tab-waiting").focus()
        await page.keyboard.press("ArrowRight")
        await expect(page.locator("#tab-delayed")).to_be_focused()
        await expect(page.locator("#col-time")).to_have_text("Runs at")
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_contain_text('"soon"')

        # A job added elsewhere shows up through the event stream, with no reload.
        await page.evaluate("window.notReloaded = true")
        await tabs.add("later", "also soon", delay=3600)
        await expect(rows).to_have_count(2)
        assert await page.evaluate("window.notReloaded === true")
        assert int(await page.evaluate("document.body.dataset.events || '0'")) > 0
        await expect(page.locator("#status")).to_contain_text("live")

        # A job page follows its job: active with its worker, progress, then completed.
        job = await producer.queue("live").add("slow", {"step": 1})
        await page.goto(f"/jobs/{job.id}")
        await expect(page.locator("#job-state")).to_have_text("waiting")
        await page.evaluate("window.notReloaded = true")
        go_on = asyncio.Event()

        async def slow(ctx: object) -> str:
            await ctx.progress(40)  # type: ignore[attr-defined]
            await go_on.wait()
            return "done"

        worker = Worker(gateway.broker_url, "live", slow, handle_signals=False, poll_wait=0.2,
                        client_name="dash-worker")
        async with running(worker):
            await expect(page.locator("#job-state")).to_have_text("active")
            await expect(page.locator("#job-progress-text")).to_have_text("40%")
            await expect(page.locator("#job-holder")).to_contain_text("dash-worker")
            await page.goto("/workers")
            await expect(page.locator("#workers tbody tr")).to_have_count(1)
            await expect(page.locator("#workers tbody")).to_contain_text("dash-worker")
            await expect(page.locator("#workers tbody")).to_contain_text("live")
            await screenshot(page, tmp_path, "workers")
            await page.goto(f"/jobs/{job.id}")
            await expect(page.locator("#job-progress-text")).to_have_text("40%")
            await page.evaluate("window.notReloaded = true")
            go_on.set()
            await expect(page.locator("#job-state")).to_have_text("completed")
            await expect(page.locator("#job-result")).to_have_text('"done"')
            assert await page.evaluate("window.notReloaded === true")
