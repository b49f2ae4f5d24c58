"""The console page in a real browser: headless system Chromium, driven by Playwright.

The console is served by ``kafka-retry console`` on a free loopback port. The
test opens the page, a dead letter, and replays it after the dry run and the
confirmation. It takes screenshots; with ``KAFKA_RETRY_SCREENSHOTS=1`` they
replace ``docs/images/console*.png`` (the ones the documentation shows),
otherwise they go to the test's temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kafka_retry import Config

from .console_support import TIMEOUT_GROUP, dead_letter_orders

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).with_name("kafka-retry")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

try:
    from playwright.async_api import async_playwright

    PLAYWRIGHT = True
except ImportError:  # pragma: no cover - the dev extra installs it
    PLAYWRIGHT = False

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None or not PLAYWRIGHT,
    reason="no Chromium installed (apt-get install chromium) or no playwright package",
)


def _environment(config: Config, kafka: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE_"))}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        KAFKA_GROUP=config.group,
        KAFKA_TOPICS=",".join(config.topics),
        KAFKA_RETRY_INTERVALS=",".join(str(s) for s in config.retry_intervals),
        KAFKA_RETRY_BACKEND=config.retry_backend,
        KAFKA_IDEMPOTENCE="true" if kafka.supports_idempotence else "false",
    )
    return env


@contextlib.asynccontextmanager
async def served(config: Config, kafka: Any) -> AsyncIterator[str]:
    """``kafka-retry console --port 0`` running; yields its URL."""
    process = await asyncio.create_subprocess_exec(
        str(SCRIPT),
        "console",
        "--port",
        "0",
        env=_environment(config, kafka),
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        async with asyncio.timeout(30):
            line = (await process.stderr.readline()).decode()
        found = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert found, line
        yield found.group(0)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


def _shots(tmp_path: Path) -> Path:
    if os.environ.get("KAFKA_RETRY_SCREENSHOTS") == "1":
        return ROOT / "docs" / "images"
    return tmp_path


@needs_chromium
async def test_open_a_dead_letter_and_replay_it(kafka_service: Any, tmp_path: Path) -> None:
    """The page shows the groups and a dead letter in full; replays one, then ticked rows."""
    assert CHROMIUM is not None
    config = await dead_letter_orders(kafka_service, "kafka", None, None)
    topic = config.topics[0]
    shots = _shots(tmp_path)
    async with served(config, kafka_service) as url, async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 860})
            await page.goto(url)
            groups = page.locator("table.groups tbody tr")
            await groups.first.wait_for()
            assert await groups.count() == 2
            assert TIMEOUT_GROUP in await groups.first.inner_text()
            assert "3" in await groups.first.locator("td.count").inner_text()
            await page.screenshot(path=str(shots / "console.png"), full_page=True)

            await page.get_by_role("link", name=f"{topic}:0:0").click()
            await page.wait_for_url(f"**/dead-letters/{topic}:0:0")
            assert "order 1 timed out after 253 ms" in await page.inner_text("main")
            assert '{"id": 1}' in await page.locator("pre.text").last.inner_text()
            await page.get_by_role("button", name="Replay…").click()
            dialog = page.get_by_role("alertdialog")
            await dialog.wait_for()
            assert "Replay 1 dead letter(s)" in await dialog.inner_text()
            await page.screenshot(path=str(shots / "console-detail.png"), full_page=True)
            await page.get_by_role("button", name="Replay 1").click()
            await page.locator(".flash.ok").wait_for()
            assert "Replayed 1 dead letter(s)" in await page.locator(".flash.ok").inner_text()
            assert "replayed" in await page.locator("h2 .tag").inner_text()

            await page.get_by_role("link", name=f"← dead letters of {topic}").click()
            await page.get_by_label(f"select {topic}:0:1").check()
            await page.get_by_label(f"select {topic}:0:3").check()
            await page.get_by_role("button", name="Replay selected…").click()
            await dialog.wait_for()
            assert "Replay 2 dead letter(s)" in await dialog.inner_text()
            await page.get_by_role("button", name="Replay 2").click()
            await page.locator(".flash.ok").wait_for()
            assert "Replayed 2 dead letter(s)" in await page.locator(".flash.ok").inner_text()
            assert await page.locator("table.entries .tag.replayed").count() == 3
        finally:
            await browser.close()
        async with httpx.AsyncClient(base_url=url) as http:
            items = (await http.get("api/dead-letters")).json()["items"]
    replayed = {item["id"] for item in items if item["replayed"]}
    assert replayed == {f"{topic}:0:0", f"{topic}:0:1", f"{topic}:0:3"}
    assert {item["replayed_to"] for item in items if item["replayed"]} == {topic}
