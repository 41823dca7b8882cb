"""The web UI in headless Chromium (Debian's chromium, driven by playwright) against `cairn serve`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from .served import served
from .test_backup_restore import cairn

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
def appliance(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A running `cairn serve` with one backed-up source; yields (base URL, admin password)."""
    data = tmp_path / "data"
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "report.txt").write_text("quarterly numbers\n")
    cairn(data, "backup", "laptop", str(src), "--snapshot", "monday")
    with served(data, tmp_path / "serve.log") as server:
        yield server.url, server.password


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


def choose_password(page: Page, one_time: str) -> None:
    """The first sign-in with the one-time password leads to choosing one's own, then to the dashboard."""
    assert page.url.endswith("/password") and "Choose your own password" in page.inner_text("h1")
    page.fill("#password input[name=password]", one_time)
    page.fill("#password input[name=new_password]", "the admin's own password")
    page.fill("#password input[name=repeat]", "the admin's own password")
    page.click("#password button[type=submit]")


def test_sign_in_browse_download_and_watch_a_job(appliance: tuple[str, str], browser: Browser, tmp_path: Path) -> None:
    base, password = appliance
    page = browser.new_page(accept_downloads=True)
    errors: list[str] = []  # the console's errors: among them every refusal by the pages' security policy
    page.on("console", lambda m: errors.append(f"{m.text} at {m.location.get('url')}") if m.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(base + "/")
    assert "/login" in page.url  # signed out: sent to the login page
    page.fill("input[name=name]", "admin")
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    assert page.locator("[role=alert]").inner_text() == "wrong name or password"
    page.fill("input[name=name]", "admin")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    choose_password(page, password)
    page.wait_for_selector("#sources")
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    assert (tmp_path / "dashboard.png").stat().st_size > 5000
    page.click("#sources >> text=laptop")
    page.click("text=monday")
    page.click("text=docs/")
    with page.expect_download() as download:
        page.click("a.download")
    saved = tmp_path / "report.txt"
    download.value.save_as(saved)
    assert saved.read_text() == "quarterly numbers\n"
    page.click("#restore-folder")  # the confirmation page first: what, where, and what it would replace
    assert "laptop/current/docs exists: a folder" in page.inner_text("#replaced")
    assert page.locator("#restore-confirm input[name=overwrite]").get_attribute("required") is not None
    page.fill("#restore-where input[name=to]", "/restored/docs")  # a new location, its parents made
    page.click("#restore-where button[type=submit]")
    assert "nothing is replaced" in page.inner_text("#replaced")
    page.click("#restore-confirm button[type=submit]")
    page.wait_for_selector("#state.state-done", timeout=60_000)
    page.goto(base + "/sources/laptop")
    page.click("#source-settings")
    page.fill("#set-retention input[name=last]", "5")
    page.click("#set-retention button[type=submit]")
    assert "source:laptop" in page.locator("#settings").inner_text()
    with page.expect_navigation():
        page.select_option("#level select[name=at]", "")  # the level switch submits itself, by script
    assert page.url.endswith("/settings?at=") and "source:laptop" not in page.locator("#settings").inner_text()
    page.goto(base + "/sources/laptop")
    page.fill("input[name=name]", "from-the-browser")
    page.click("text=Take a snapshot")
    page.wait_for_selector("#state.state-done", timeout=60_000)  # the job page refreshes itself
    page.goto(base + "/sources/laptop")
    assert page.locator("#snapshots").inner_text().count("from-the-browser") == 1
    page.click("#snapshots >> text=from-the-browser")
    page.click("text=restored/")
    page.click("text=docs/")
    assert "report.txt" in page.locator("#entries").inner_text()  # the restore is in the next snapshot
    assert not errors, errors
