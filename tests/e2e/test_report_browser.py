"""The report in a real browser: headless Chromium through Playwright, from file://, offline.

Needs `playwright` (the Python package; its own browser download is not used) and a system
Chromium on PATH. Without them these tests skip, unless LMGYM_REQUIRE_BROWSER=1 (CI), where
they fail. A screenshot of the opened report goes to tests/artifacts/report.png.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from paths import ARTIFACTS
from sample_runs import XSS, write_sample_run, write_training_run  # tests/ is on sys.path

from lmgym.eval.report import write_report


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[report]')"
    if chromium_path() is None:
        return "no chromium on PATH (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser():
    missing = browser_missing()
    if missing:
        if os.environ.get("LMGYM_REQUIRE_BROWSER") == "1":
            pytest.fail(f"LMGYM_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path())
        yield browser
        browser.close()


class OpenReport:
    """A page on a report, offline, recording console errors, page errors, dialogs and any
    request that is not for the file itself."""

    def __init__(self, browser, path: Path):
        self.context = browser.new_context(offline=True, viewport={"width": 1300, "height": 900})
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: m.type in ("error", "warning") and self.problems.append(f"console {m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("dialog", lambda d: (self.problems.append(f"dialog: {d.message}"), d.dismiss()))
        self.page.on("request", lambda r: r.url.startswith("file://") or self.requests.append(r.url))
        self.page.route(re.compile(r"^(https?|wss?)://"), lambda route: (self.requests.append(route.request.url), route.abort()))
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_selector("body[data-ready=true]", timeout=10_000)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def eval_report(browser, tmp_path):
    path = write_report(write_sample_run(tmp_path / "run"))
    report = OpenReport(browser, path)
    yield report
    report.close()
    assert report.problems == [] and report.requests == []


def row_rewards(page) -> list[str]:
    return page.locator("#rows tr.row td.reward").all_inner_texts()


def test_histogram_is_drawn(eval_report):
    bars = eval_report.page.locator("#hist-reward rect.bar")
    assert bars.count() == 4  # rewards 0, 0.25, 0.5, 1
    for i in range(bars.count()):
        box = bars.nth(i).bounding_box()
        assert box and box["width"] > 0 and box["height"] > 0
    assert eval_report.page.locator("#hist-correct rect.bar").count() == 2


def test_filters_show_exactly_the_matching_rows(eval_report):
    page = eval_report.page
    assert page.locator("#rows tr.row").count() == 6
    page.select_option("#filter", "errored")
    assert page.locator("#rows tr.row td.example").all_inner_texts() == ["3"]
    assert page.locator("#rows tr.row.errored").count() == 1
    page.select_option("#filter", "zero_reward")
    assert row_rewards(page) == ["0"]
    page.select_option("#filter", "truncated")
    assert page.locator("#rows tr.row td.example").all_inner_texts() == ["4", "5"]
    assert page.locator("#count").inner_text() == "rows 1–2 of 2 (of 6 rollouts)"


def test_sorting_by_reward(eval_report):
    page = eval_report.page
    page.click("th[data-key=reward]")
    assert row_rewards(page) == ["0", "0.250", "0.500", "1", "1", "–"]  # errored (no reward) last
    page.click("th[data-key=reward]")
    assert row_rewards(page) == ["1", "1", "0.500", "0.250", "0", "–"]
    assert page.locator("th[data-key=reward].sorted-desc").count() == 1


def test_transcript_shows_tool_calls_results_and_folded_reasoning(eval_report):
    page = eval_report.page
    assert page.locator(".transcript").count() == 0  # nothing rendered before a row is opened
    page.locator("#rows tr.row").first.click()
    transcript = page.locator(".transcript")
    assert transcript.locator(".toolcall .toolname").inner_text() == "calculator"
    assert '"expression": "0 + 2"' in transcript.locator(".toolcall .args").inner_text()
    assert "calculator says 2" in transcript.locator(".msg.role-tool").inner_text()
    thinking = transcript.locator("details.think")
    assert thinking.count() == 2  # the two assistant replies; the system prompt's tags stay text
    assert thinking.evaluate_all("nodes => nodes.map(n => n.open)") == [False, False]
    assert not page.get_by_text("I should use the calculator.").is_visible()
    assert "The answer is 2." in transcript.inner_text()
    page.locator("#rows tr.row").first.click()  # and closed again
    assert page.locator(".transcript").count() == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#rows tr.row").first.click()
    thinking.first.locator("summary").click()
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)


def test_model_text_is_shown_as_text_never_run(eval_report):
    from playwright.sync_api import expect

    page = eval_report.page
    page.locator("#rows tr.row").nth(2).click()
    assert XSS in page.locator(".transcript").inner_text()
    assert page.locator("script").count() == 2  # no script element came from the data
    page.fill("#search", "alert(1)")
    expect(page.locator("#rows tr.row td.example")).to_have_text(["2"])  # the search waits 200 ms


def test_training_run_draws_its_curves(browser, tmp_path):
    from playwright.sync_api import expect

    report = OpenReport(browser, write_report(write_training_run(tmp_path / "train")))
    page = report.page
    try:
        assert page.locator("#training .chart h3").all_inner_texts() == ["reward", "loss", "KL", "tokens/s", "SFT loss"]
        paths = page.locator("#training path.line")
        assert paths.count() == 6  # reward and eval/reward share a chart
        assert all(d.startswith("M") for d in paths.evaluate_all("nodes => nodes.map(n => n.getAttribute('d'))"))
        box = page.locator("#curve-0 svg").bounding_box()
        assert box and box["width"] > 0 and box["height"] > 0
        page.click("#other-curves summary")
        expect(page.locator("#other-curves .chart")).to_have_count(3)  # drawn on the (async) toggle event
        assert page.locator("#rollouts").count() == 0
    finally:
        report.close()
    assert report.problems == [] and report.requests == []
