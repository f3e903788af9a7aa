"""The dashboard in a real browser: Debian's chromium driven by Playwright, over a real server.

Every page is opened with the operator's token, must log no console error, and leaves a screenshot in
`tmp_path/report`. Skips loudly (message printed) when Playwright or /usr/bin/chromium is missing
(`make test` installs chromium when run as root).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.bench_dashboard import _fill, _serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _skip_loudly(reason: str) -> None:
    print(f"\n*** dashboard browser tests SKIPPED: {reason} ***")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip_loudly("playwright is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        _skip_loudly("no chromium at /usr/bin/chromium (run `make test` as root to apt-get it)")
    root = tmp_path_factory.mktemp("dash")
    dispatcher, identity, _ = _fill(root, 14)
    url, server = _serve(dispatcher, identity)
    token = (root / "admin.token").read_text().strip()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{url}/login")
        page.fill("#token", token)
        page.click("#signin")
        try:
            yield url, page
        finally:
            browser.close()
            server.should_exit = True


def _open(page: Any, url: str, report: Path, name: str) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_load_state("networkidle")
    report.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(report / f"{name}.png"), full_page=True)
    return errors


def _job_id(page: Any, url: str, state: str) -> str:
    rows = page.request.get(f"{url}/api/v1/dashboard/jobs?state={state}").json()
    return str(rows["jobs"][0]["job_id"])


def test_every_page_renders_without_console_errors(site: tuple[str, Any], tmp_path: Path) -> None:
    url, page = site
    done = _job_id(page, url, "succeeded")
    report = tmp_path / "report"
    for name, path in [
        ("jobs", "/"),
        ("wire", f"/jobs/{done}/wire"),
        ("approvals", "/approvals"),
        ("models", "/models"),
        ("parties", "/parties"),
    ]:
        assert _open(page, url + path, report, name) == [], name
        assert (report / f"{name}.png").stat().st_size > 0
    page.goto(url + "/?state=failed")
    page.wait_for_load_state("networkidle")
    assert "failed" in page.content()


def test_finished_job_shows_roc_plot_and_fed_vs_central(site: tuple[str, Any], tmp_path: Path) -> None:
    url, page = site
    done = _job_id(page, url, "succeeded")
    assert _open(page, f"{url}/jobs/{done}", tmp_path / "report", "job-done") == []
    page.wait_for_selector("#plot-roc .main-svg", timeout=10_000)
    page.wait_for_selector("#plot-ks .main-svg", timeout=10_000)
    table = page.locator("#fed-vs-central")
    assert table.is_visible() and "V_FED" in table.inner_text().upper().replace("|", "")


def test_failed_job_names_failing_party_at_top(site: tuple[str, Any], tmp_path: Path) -> None:
    url, page = site
    failed = _job_id(page, url, "failed")
    assert _open(page, f"{url}/jobs/{failed}", tmp_path / "report", "job-failed") == []
    banner = page.locator("#failure")
    assert banner.is_visible() and "shop" in banner.inner_text()
    assert "/data/shop" not in banner.inner_text()
    first = page.locator("main > *").first.bounding_box()
    box = banner.bounding_box()
    assert first is not None and box is not None and box["y"] <= first["y"] + 200
