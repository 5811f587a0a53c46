"""The web chat page in a real headless Chromium (Debian's /usr/bin/chromium driven by playwright; no browser
is downloaded): a message in Fast gets a streamed answer, one in Expert a reasoning block too; a screenshot
goes to build/test-artifacts/."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.server.conftest import ARTIFACTS, live_server

CHROMIUM = Path("/usr/bin/chromium")
INSTALL_TIMEOUT_S = 600
ANSWER_TIMEOUT_MS = 120_000  # the loaded 2-core machine streams a few tokens per second
PAGE_MAX_TOKENS = 6  # short answers keep the test quick; the page takes ?max_tokens=


@pytest.fixture(scope="session")
def chromium() -> Path:
    """The system Chromium, installed with apt when absent; skip (with the reason) only if that fails."""
    if not CHROMIUM.exists() and shutil.which("apt-get"):
        try:
            subprocess.run(["apt-get", "install", "-y", "chromium"], check=True, capture_output=True,
                           timeout=INSTALL_TIMEOUT_S)
        except (subprocess.SubprocessError, OSError) as exc:
            pytest.skip(f"chromium is not installed and 'apt-get install -y chromium' failed: {exc}")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing and apt-get is not available to install it")
    return CHROMIUM


@pytest.fixture(scope="module")
def server(chat_checkpoint):
    with live_server(chat_checkpoint, api_key=None) as s:
        yield s


def test_chat_page_streams_in_both_tiers(server, chromium):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{server.base_url}/?max_tokens={PAGE_MAX_TOKENS}")
            assert page.title() == "v4stack chat"

            page.fill("#prompt", "Good morrow")
            page.click("#send")
            fast = page.locator(".turn.assistant").nth(0)
            expect(fast.locator(".meta")).to_contain_text("tok/s", timeout=ANSWER_TIMEOUT_MS)
            assert fast.locator(".answer").inner_text().strip()
            assert fast.locator("details.reasoning").count() == 0
            assert "fast" in fast.locator(".meta").inner_text()

            page.check('input[name="tier"][value="expert"]')
            page.fill("#prompt", "And what say you?")
            page.click("#send")
            expert = page.locator(".turn.assistant").nth(1)
            expect(expert.locator(".meta")).to_contain_text("tok/s", timeout=ANSWER_TIMEOUT_MS)
            reasoning = expert.locator("details.reasoning")
            assert reasoning.count() == 1
            reasoning.locator("summary").click()  # collapsed after the answer; open it again
            assert reasoning.locator("div").inner_text().strip()
            assert "expert" in expert.locator(".meta").inner_text()

            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "chat_page.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "chat_page.png").stat().st_size > 0
