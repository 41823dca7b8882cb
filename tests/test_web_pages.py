"""Every page of the web UI in headless Chromium: a screenshot of each, and no serious accessibility violation.

Screenshots go to build/screenshots/ (kept after the run, for people to look at). The accessibility
checker is axe-core, served from the axe-playwright-python package (no network).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, expect

from .served import served
from .test_backup_restore import cairn
from .test_web_ui import browser, choose_password  # noqa: F401  (browser: the fixture)

SHOTS = Path(__file__).parent.parent / "build" / "screenshots"
SERIOUS = ("serious", "critical")


@pytest.fixture
def walked(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`cairn serve` with a source of two snapshots (a changed file between them) and a folder of 300 files."""
    data, src = tmp_path / "data", tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "report.txt").write_text("quarterly numbers\n")
    (src / "many").mkdir()
    for i in range(300):
        (src / "many" / f"file-{i:03}.txt").write_text(f"{i}\n")
    cairn(data, "backup", "laptop", str(src), "--snapshot", "monday")
    (src / "docs" / "report.txt").write_text("quarterly numbers, revised\n")
    cairn(data, "backup", "laptop", str(src), "--snapshot", "tuesday")
    cairn(data, "source", "add", "server")
    with served(data, tmp_path / "serve.log") as server:
        yield server.url, server.password


def check(page: Page, name: str) -> None:
    """Save the page's screenshot, and fail on any serious or critical axe-core violation."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    results = Axe().run(page)
    bad = [v for v in results.response["violations"] if v["impact"] in SERIOUS]
    assert not bad, f"{name}: " + json.dumps(
        [{"id": v["id"], "help": v["help"], "nodes": [n["html"] for n in v["nodes"][:3]]} for v in bad], indent=1
    )


def test_every_page_has_a_screenshot_and_no_serious_accessibility_violation(
    walked: tuple[str, str],
    browser: Browser,  # noqa: F811
) -> None:
    base, password = walked
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(base + "/login")
    check(page, "login")
    page.fill("input[name=name]", "admin")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    check(page, "password")
    choose_password(page, password)
    page.wait_for_selector("#sources")
    page.wait_for_selector("#chart-pool .uplot")  # drawn by script from /api/v1/usage, from the first sample on
    assert "Not enough history yet: 1 sample" in page.inner_text("#chart-note")
    check(page, "dashboard")
    page.click("button.range[data-days='365']")
    page.wait_for_selector("button.range[data-days='365'][aria-pressed='true']")
    page.goto(base + "/sources/laptop")
    check(page, "source")
    page.goto(base + "/sources/laptop/snapshots/tuesday/?path=/many")
    check(page, "browse")
    assert "300 entries, page 1 of 2" in page.inner_text("#count") and page.locator("#entries tbody tr").count() == 201
    assert [c.strip() for c in page.inner_text("nav.crumbs").split(":")[-1].split("/")] == ["", "many"]
    page.click("a[rel=next]")
    assert page.locator("#entries tbody tr").count() == 101  # the last 100, and ".."
    page.fill("#filter input[name=q]", "FILE-29")
    page.click("#filter button")
    assert "10 entries matching" in page.inner_text("#count")  # file-290 … file-299, whatever the case
    page.goto(base + "/sources/laptop")
    page.fill("#search input[name=q]", "REPORT")
    page.click("#search button")
    check(page, "search")
    assert "1 path whose name matches" in page.inner_text("#count")
    assert "monday to tuesday (2 versions)" in page.inner_text("#results")
    page.click("#results a:text('versions')")
    page.wait_for_url("**/history?path=/docs/report.txt")
    check(page, "history")
    rows = page.locator("#versions tbody tr")
    assert rows.count() == 2 and [rows.nth(i).locator("td").nth(4).inner_text() for i in (0, 1)] == [
        "changed",
        "first seen",
    ]
    page.goto(base + "/sources/laptop/snapshots/monday/restore?path=/docs/report.txt")
    check(page, "restore")
    assert "laptop/current/docs/report.txt exists: a file of" in page.inner_text("#replaced")
    page.goto(base + "/sources/laptop/snapshots/monday/restore?path=/")
    assert "never takes the whole snapshot" in page.inner_text("main")
    page.goto(base + "/sources/laptop/diff?old=monday&new=tuesday")
    check(page, "diff")
    page.goto(base + "/sources/laptop")
    page.fill("input[name=name]", "from-the-browser")
    page.click("text=Take a snapshot")
    page.wait_for_selector("#state.state-done", timeout=60_000)
    check(page, "job")
    page.goto(base + "/jobs")
    check(page, "jobs")
    page.goto(base + "/storage")
    check(page, "storage")
    page.goto(base + "/users")
    check(page, "users")
    page.goto(base + "/settings")
    check(page, "settings")
    cron = page.locator("#set-schedule input[name=value]")
    cron.fill("30 4 * * 1")  # Mondays at 04:30: the next runs follow as one types, before anything is set
    expect(page.locator("#runs-schedule")).to_contain_text("04:30")
    assert page.locator("#runs-schedule time").count() == 5
    cron.fill("0 2 * *")
    page.wait_for_selector("#runs-schedule .error")
    assert "not a schedule" in page.inner_text("#runs-schedule")
    page.goto(base + "/no/such/page")
    check(page, "not-found")
    assert "Back to the dashboard" in page.inner_text("main")
    assert [e for e in errors if "404" not in e and "400" not in e] == []  # the two refusals asked for above
    # The share's pages run no script at all (CSP sandbox): the checker's own script needs the policy set aside.
    share = browser.new_page(bypass_csp=True, extra_http_headers={
        "Authorization": "Basic " + base64.b64encode(b"admin:the admin's own password").decode()})  # fmt: skip
    share.goto(base + "/dav/")
    check(share, "share")
    assert "Map network drive" in share.inner_text("body") and "laptop/" in share.inner_text("body")
