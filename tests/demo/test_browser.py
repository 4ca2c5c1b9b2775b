"""A real browser on the demo: Debian's chromium, driven by Playwright, types a prompt, generates,
clicks a preference, and the row is in the store; the page is saved as a screenshot.

CI installs chromium (``.ci/run``) and sets ``MMALIGN_REQUIRE_BROWSER=1``, so there a missing
browser fails the test instead of skipping it. The screenshot goes to ``test-artifacts/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def browser():
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed (pip install -e '.[test]')"
    if missing is None and not CHROMIUM.is_file():
        missing = f"{CHROMIUM} is missing (apt-get install chromium chromium-driver)"
    if missing:
        if os.environ.get("MMALIGN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the browser test must run here, but {missing}")
        pytest.skip(missing)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


@pytest.mark.slow
def test_a_person_generates_votes_and_the_label_is_stored(served, browser):
    session, url = served
    before = session.label_count()
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(url)
    page.get_by_label("Prompt").wait_for(timeout=60_000)

    page.get_by_label("Prompt").fill("two yellow circles")
    page.get_by_role("spinbutton", name="number input for ReNO iterations").fill("8")
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("Which is better?").wait_for(timeout=60_000)
    page.locator(".pair img").nth(1).wait_for(timeout=30_000)
    assert page.get_by_text("ShapesEval (oracle)").count() >= 1

    page.get_by_label("Annotator").fill("browser")
    page.get_by_role("button", name="Right is better").click()
    page.get_by_text(f"{before + 1} label").wait_for(timeout=30_000)
    page.get_by_text("Saved label").wait_for()

    record = session.store.records()[-1]
    assert (session.label_count(), record.prompt, record.choice, record.annotator) == (
        before + 1, "two yellow circles", "right", "browser")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)
    assert (ARTIFACTS / "demo.png").stat().st_size > 10_000

    page.get_by_role("button", name="Left is better").click()  # the same pair again: a message, no row
    page.get_by_text("already labelled").first.wait_for(timeout=30_000)
    assert session.label_count() == before + 1
    page.close()
