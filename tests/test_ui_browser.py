"""The dashboard in a real browser (SPEC §15): the real daemon as a subprocess on loopback, with demo
data, secrets and a scripted model server; Debian's chromium driven by Playwright.

Each page is opened at 1440 px and at 360 px; a screenshot of each goes to build/screenshots/
(docs/screenshots/ with `make screenshots`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    MODEL_IMG,
    MODEL_SCRIPT,
    SCREENSHOTS,
    FakeModel,
    require_browser,
    seed_history,
)
from tests.daemon_support import JOB_SECRET, DaemonProcess, load_demo

pytestmark = [pytest.mark.browser, pytest.mark.slow]

XSS_TERM = "<img src=x onerror=alert(1)>"
XSS_SLUG = "xss-vs-tea"
HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


@pytest.fixture(scope="module")
def model() -> Iterator[FakeModel]:
    with FakeModel().running() as fake:
        yield fake


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, model: FakeModel) -> Iterator[DaemonProcess]:
    require_browser()
    d = DaemonProcess(
        tmp_path_factory.mktemp("ui"),
        "ui",
        {"ai": {"provider": "openai", "base_url": model.base_url, "model": "m", "max_retries": 0}},
    )
    load_demo(d, count=6)
    assert seed_history(d.db_path, int(time.time() * 1000)) > 150
    d.start()
    try:
        # One failed AI run (the model answers 400), then a warmed cache: forecasts and insights.
        model.fail_status = 400
        assert d.trigger("warmup-ai-explanations", wait=True)[1]["status"] == "failed"
        model.fail_status = None
        assert d.trigger("warmup-forecasts", wait=True)[1]["status"] == "success"
        assert d.trigger("warmup-ai-explanations", wait=True)[1]["status"] == "success"
        # A comparison added after the warmups: its parts are missing, its first term is markup.
        series = [
            {"date": f"2026-10-{day:02d}", XSS_TERM: 10 + day, "tea": 40 - day}
            for day in range(1, 29)
        ]
        status, body, _ = d.request(
            "PUT",
            f"/api/comparisons/{XSS_SLUG}",
            {"terms": [XSS_TERM, "tea"], "timeframe": "today 1-m", "series": series},
            headers={"X-Job-Secret": JOB_SECRET},
        )
        assert status == 201, body
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Watched:
    """A page with every console error, page error, dialog and failed request recorded."""

    def __init__(self, browser: Any, width: int, *, javascript: bool = True) -> None:
        self.context = browser.new_context(
            viewport={"width": width, "height": 900}, java_script_enabled=javascript
        )
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        self.page.on(
            "console",
            lambda m: (
                self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
            ),
        )
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", self._on_request_failed)
        self.page.on(
            "response",
            lambda r: self.problems.append(f"{r.status}: {r.url}") if r.status >= 400 else None,
        )

        def on_dialog(dialog: Any) -> None:
            self.dialogs.append(dialog.message)
            dialog.dismiss()

        self.page.on("dialog", on_dialog)

    def _on_request_failed(self, request: Any) -> None:
        # A request still in flight when the test navigates to the next page (a live-refresh poll,
        # the favicon) is cancelled by the browser (net::ERR_ABORTED): that is navigation, not a
        # failure of the daemon, whose failures show as a status >= 400 or another net:: error.
        if request.failure == "net::ERR_ABORTED":
            return
        self.problems.append(f"failed: {request.url} ({request.failure})")

    def open(self, url: str) -> Any:
        response = self.page.goto(url, wait_until="load")
        self.page.wait_for_load_state("networkidle")
        return response

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def wide(browser: Any) -> Iterator[Watched]:
    w = Watched(browser, 1440)
    yield w
    w.close()


def pages(daemon: DaemonProcess) -> dict[str, str]:
    return {
        "overview": "/ui",
        "runs": "/ui/runs",
        "run-failed": f"/ui/runs/{failed_run_id(daemon)}",
        "comparisons": "/ui/comparisons",
        "comparison": "/ui/comparisons/iphone-vs-android",
        "comparison-missing": f"/ui/comparisons/{XSS_SLUG}",
    }


def failed_run_id(daemon: DaemonProcess) -> int:
    _, body, _ = daemon.request("GET", "/api/jobs/runs?status=failed&limit=1")
    return int(body["runs"][0]["id"])


@pytest.mark.parametrize("width", [1440, 360])
def test_every_page_loads_clean_with_headers_and_fits(
    daemon: DaemonProcess, browser: Any, width: int
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    w = Watched(browser, width)
    try:
        for name, path in pages(daemon).items():
            response = w.open(daemon.url + path)
            assert response.status == 200, path
            for header, value in HEADERS.items():
                assert response.headers.get(header) == value, (path, header)
            assert w.problems == [], (path, w.problems)
            assert w.dialogs == []
            scroll = w.page.evaluate("document.documentElement.scrollWidth")
            assert scroll <= width, (path, scroll)
            w.page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
    finally:
        w.close()


def test_static_files_and_favicon_carry_the_headers(daemon: DaemonProcess) -> None:
    for path in ("/ui/static/app.js", "/ui/static/app.css", "/ui/static/favicon.svg", "/ui/nope"):
        _, _, headers = daemon.request("GET", path)
        lowered = {k.lower(): v for k, v in headers.items()}
        for header, value in HEADERS.items():
            assert lowered.get(header) == value, (path, header)
    status, _, headers = daemon.request("GET", "/ui/static/favicon.svg")
    assert status == 200
    assert headers["Content-Type"].startswith("image/svg+xml")


def test_overview_lists_the_three_jobs_with_next_fires_and_a_timeline(
    daemon: DaemonProcess, wide: Watched
) -> None:
    wide.open(daemon.url + "/ui")
    page = wide.page
    for job, words in (
        ("warmup-forecasts", "every day at 02:00 UTC"),
        ("warmup-ai-explanations", "every Sunday at 03:00 UTC"),
        ("housekeeping", "every hour at minute 17"),
    ):
        row = page.locator(f'[data-job="{job}"]')
        assert words in row.inner_text()
        nxt = row.locator('[data-field="next"]').inner_text()
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(in ", nxt), nxt
    bars = page.locator('svg[data-chart="timeline"] [data-run-id]')
    assert bars.count() >= 3
    failed = page.locator('svg[data-chart="timeline"] [data-status="failed"]')
    assert failed.count() >= 1
    assert (
        "failed" in failed.first.locator("title").text_content()
    )  # status in text, not colour only


def test_run_now_shows_the_run_without_a_reload_and_a_wrong_secret_is_refused(
    daemon: DaemonProcess, wide: Watched
) -> None:
    from playwright.sync_api import expect

    page = wide.open(daemon.url + "/ui") and wide.page
    page.evaluate("window.__sameDocument = true")
    button = page.locator('[data-job="housekeeping"] button[data-action="run"]')
    button.click()
    expect(page.locator("#flash")).to_contain_text("Type the job secret")
    page.fill("#secret-input", "not-the-secret")
    page.click("#secret-form button[type=submit]")
    button.click()
    expect(page.locator("#flash")).to_contain_text("secret is wrong", timeout=5000)
    page.fill("#secret-input", JOB_SECRET)
    page.click("#secret-form button[type=submit]")
    assert JOB_SECRET not in page.content()
    button.click()
    expect(page.locator("#flash")).to_contain_text("started: run #", timeout=5000)
    run_id = re.search(r"run #(\d+)", page.locator("#flash").inner_text()).group(1)
    expect(page.locator(f'#latest-runs tr[data-run-id="{run_id}"]')).to_be_visible(timeout=5000)
    expect(page.locator('[data-job="housekeeping"] [data-field="last"]')).to_contain_text(
        f"#{run_id}", timeout=5000
    )
    assert page.evaluate("window.__sameDocument") is True  # no reload happened
    assert page.evaluate("sessionStorage.getItem('warmupd.secret')") == JOB_SECRET
    assert all(JOB_SECRET not in c["value"] for c in wide.context.cookies())


def test_pause_and_resume_buttons_show_the_state_live(daemon: DaemonProcess, wide: Watched) -> None:
    from playwright.sync_api import expect

    page = wide.open(daemon.url + "/ui") and wide.page
    page.fill("#secret-input", JOB_SECRET)
    page.keyboard.press("Enter")  # the form works from the keyboard
    row = page.locator('[data-job="warmup-forecasts"]')
    row.locator('button[data-action="pause"]').click()
    expect(row.locator('[data-field="flags"]')).to_contain_text("paused", timeout=5000)
    expect(row.locator('button[data-action="resume"]')).to_be_enabled()
    expect(row.locator('button[data-action="pause"]')).to_be_disabled()
    expect(row.locator('[data-field="next"]')).to_contain_text("skipped while paused")
    _, body, _ = daemon.request("GET", "/api/jobs")
    assert next(j for j in body["jobs"] if j["name"] == "warmup-forecasts")["paused"] is True
    row.locator('button[data-action="resume"]').focus()
    page.keyboard.press("Enter")
    expect(row.locator('[data-field="flags"]')).not_to_contain_text("paused", timeout=5000)
    expect(row.locator('button[data-action="pause"]')).to_be_enabled()
    assert wide.problems == []


def test_failed_run_detail_lists_its_errors(daemon: DaemonProcess, wide: Watched) -> None:
    wide.open(daemon.url + f"/ui/runs/{failed_run_id(daemon)}")
    text = wide.page.locator("main").inner_text()
    assert "failed" in text
    assert "all_items_failed" in text
    errors = wide.page.locator('[data-field="errors"] li')
    assert errors.count() >= 1
    assert "400" in errors.first.inner_text()


def test_comparison_draws_both_series_and_both_bands(daemon: DaemonProcess, wide: Watched) -> None:
    wide.open(daemon.url + "/ui/comparisons/iphone-vs-android")
    chart = wide.page.locator('svg[data-chart="forecast"]')
    assert chart.count() == 1
    for term in ("termA", "termB"):
        assert chart.locator(f'[data-series="{term}"]').get_attribute("points").count(",") > 10
        assert chart.locator(f'[data-forecast="{term}"]').count() == 1
        for level in ("80", "95"):
            assert chart.locator(f'[data-band="{term}-{level}"]').count() == 1
    assert wide.page.locator("[data-missing]").count() == 0
    assert wide.page.locator('[data-part="forecastA"]').inner_text().strip().endswith("fresh")


def test_missing_parts_are_said_plainly_and_markup_stays_text(
    daemon: DaemonProcess, wide: Watched
) -> None:
    wide.open(daemon.url + f"/ui/comparisons/{XSS_SLUG}")
    page = wide.page
    for part in ("forecastA", "forecastB", "insights"):
        assert "missing: nothing is cached" in page.locator(f'[data-missing="{part}"]').inner_text()
    assert XSS_TERM in page.locator("h1").inner_text()  # shown as text
    assert page.locator("main img").count() == 0
    wide.open(daemon.url + "/ui/comparisons?q=%3Cimg")
    assert XSS_TERM in page.locator(f'tr[data-slug="{XSS_SLUG}"]').inner_text()
    assert wide.dialogs == []


def test_a_model_reply_holding_script_renders_as_text(daemon: DaemonProcess, wide: Watched) -> None:
    wide.open(daemon.url + "/ui/comparisons/iphone-vs-android")
    meaning = wide.page.locator('[data-field="meaning"]').inner_text()
    assert MODEL_SCRIPT in meaning
    assert MODEL_IMG in meaning
    assert wide.page.evaluate("window.__pwned === undefined")
    assert wide.page.locator("main script, main img").count() == 0
    assert wide.dialogs == []


def test_without_javascript_the_pages_are_server_rendered(
    daemon: DaemonProcess, browser: Any
) -> None:
    w = Watched(browser, 1440, javascript=False)
    try:
        w.open(daemon.url + "/ui")
        assert w.page.locator("[data-job]").count() == 3
        assert w.page.locator('svg[data-chart="timeline"] [data-run-id]').count() >= 4
        assert w.page.locator("#latest-runs tbody tr").count() >= 3
        w.open(daemon.url + "/ui/comparisons/iphone-vs-android")
        assert w.page.locator('svg[data-chart="forecast"] [data-band]').count() == 4
        assert w.problems == []
    finally:
        w.close()


def test_read_auth_login_logout_and_api_reads_still_need_the_secret(
    tmp_path: Path, browser: Any
) -> None:
    from playwright.sync_api import expect

    d = DaemonProcess(tmp_path, "auth", {"http": {"read_auth": True}}).start()
    w = Watched(browser, 1440)
    try:
        w.open(d.url + "/ui/runs")
        assert w.page.url.startswith(d.url + "/ui/login")
        w.page.fill("#login-secret", "wrong-secret")
        w.page.click("form.login button")
        expect(w.page.locator("[role=alert]")).to_contain_text("wrong secret")
        w.problems.clear()  # the refused login answered 401, as it should
        w.page.fill("#login-secret", JOB_SECRET)
        w.page.click("form.login button")
        expect(w.page.locator("h1")).to_have_text("Run log")
        (cookie,) = w.context.cookies()
        assert cookie["httpOnly"]
        assert cookie["sameSite"] == "Strict"
        assert JOB_SECRET not in cookie["value"]
        assert 11.9 * 3600 < cookie["expires"] - time.time() <= 12 * 3600
        api = w.context.request.get(d.url + "/api/status")
        assert api.status == 401  # the cookie opens pages, never the API
        w.page.click("text=Log out")
        assert w.page.url.startswith(d.url + "/ui/login")
        assert w.context.cookies() == []
        w.open(d.url + "/ui")
        assert w.page.url.startswith(d.url + "/ui/login")
        assert w.problems == []
    finally:
        w.close()
        d.stop()


def test_a_running_runs_page_shows_live_progress_then_the_result(
    daemon: DaemonProcess, model: FakeModel, wide: Watched
) -> None:
    from playwright.sync_api import expect

    # Runs last: it warms the comparison the other tests need cold. Its views get it selected.
    status, _, _ = daemon.request(
        "POST",
        f"/api/comparisons/{XSS_SLUG}/views",
        {"count": 50},
        headers={"X-Job-Secret": JOB_SECRET},
    )
    assert status == 200
    model.gate.clear()  # every model call waits: the run stays running
    try:
        status, body = daemon.trigger("warmup-ai-explanations")
        assert status == 202
        run_id = body["runId"]
        wide.open(daemon.url + f"/ui/runs/{run_id}")
        page = wide.page
        expect(page.locator('[data-field="status"]')).to_contain_text("running")
        expect(page.locator('[data-field="progress-text"]')).to_contain_text(
            "6 of 7 selected (0 processed, 6 skipped, 0 failed)"
        )
    finally:
        model.gate.set()
    # Without a reload by the test: the page follows the run and shows its end.
    expect(page.locator('[data-field="status"]')).to_contain_text("success", timeout=20_000)
    assert page.locator('[data-field="processed"]').inner_text() == "1"
    assert page.locator('[data-field="skipped"]').inner_text() == "6"  # already up to date
    assert wide.problems == []


def test_warm_up_now_fills_the_missing_parts_and_the_page_follows(
    daemon: DaemonProcess, wide: Watched
) -> None:
    """Runs after the others that need the comparison cold (pytest keeps the file's order)."""
    from playwright.sync_api import expect

    page = wide.open(daemon.url + f"/ui/comparisons/{XSS_SLUG}") and wide.page
    expect(page.locator('[data-part="forecastA"]')).to_contain_text("missing")
    page.fill("#secret-input", JOB_SECRET)
    page.click("#secret-form button[type=submit]")
    page.click('button[data-action="warmup"]')
    expect(page.locator("#flash")).to_contain_text("Warmup of xss-vs-tea", timeout=5000)
    # The page polls the warmup status and reloads itself once the parts changed.
    for part in ("forecastA", "forecastB", "insights"):
        expect(page.locator(f'[data-part="{part}"]')).to_contain_text("fresh", timeout=30_000)
    assert page.locator('svg[data-chart="forecast"] [data-band]').count() == 4
    assert page.locator("[data-missing]").count() == 0
    assert wide.dialogs == []
