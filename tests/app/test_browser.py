"""End to end in a real browser: Debian's Chromium, driven by Playwright, against `streamlit run`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(env: dict[str, str]):
    """Start `streamlit run app/main.py` with `env`; yield its URL; stop it."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it with apt-get")
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless=true",
         f"--server.port={port}", "--server.address=127.0.0.1", "--browser.gatherUsageStats=false"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited early:\n{proc.stdout.read()}")
        time.sleep(0.3)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def dashboard_url(tmp_path_factory: pytest.TempPathFactory, demo_checkpoint: Path):
    """The dashboard on the demo cohort with the session's tiny checkpoint (predictions on)."""
    env = dict(os.environ, MEDFUSE_LENS_HOME=str(tmp_path_factory.mktemp("home")),
               MEDFUSE_LENS_CHECKPOINT=str(demo_checkpoint))
    env.pop("MEDFUSE_LENS_SOURCE", None)
    yield from _serve(env)


def _shots(tmp_path: Path) -> Path:
    """Where screenshots go: $MEDFUSE_LENS_SCREENSHOTS (kept, e.g. as CI artifacts) else the test's tmp folder."""
    folder = Path(os.environ.get("MEDFUSE_LENS_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def hostile_url(tmp_path_factory: pytest.TempPathFactory):
    """The dashboard on a one-patient source whose note is an XSS attempt (and one image is corrupt)."""
    from tests.app.test_patient_page import write_hostile_bundle

    source = tmp_path_factory.mktemp("hostile_source")
    write_hostile_bundle(source)
    env = dict(os.environ, MEDFUSE_LENS_HOME=str(tmp_path_factory.mktemp("home")), MEDFUSE_LENS_SOURCE=str(source))
    yield from _serve(env)


def _browser(pw):
    return pw.chromium.launch(
        executable_path=CHROMIUM,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--no-first-run", "--disable-quic"],
    )


def _wait_idle(page) -> None:
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=120_000)


def test_patients_page_renders_in_chromium(dashboard_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(dashboard_url)
        page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=120_000)
        page.wait_for_selector("h1:has-text('Patients')", timeout=30_000)
        assert page.locator("[data-testid='stException']").count() == 0
        assert page.get_by_text("40 patients", exact=False).count() >= 1
        page.locator("[data-testid='stDataFrame']").wait_for(timeout=30_000)  # drawn just after the script ends
        assert page.locator("[data-testid='stDataFrame']").count() == 1
        assert page.get_by_text("synthetic", exact=False).count() >= 1
        page.screenshot(path=str(_shots(tmp_path) / "patients.png"), full_page=True)
        assert (_shots(tmp_path) / "patients.png").stat().st_size > 10_000
        browser.close()


def test_open_patient_from_worklist_shows_the_four_panels(dashboard_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = _browser(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 2200})  # tall: both charts on screen
        page.goto(dashboard_url)
        _wait_idle(page)
        grid = page.locator("[data-testid='stDataFrame']")
        grid.wait_for(timeout=30_000)
        page.wait_for_timeout(500)
        box = grid.bounding_box()
        # the grid is a canvas: click the row-selection marker of the first row (the highest risk);
        # rows are 35 px below a 35 px header
        page.mouse.click(box["x"] + 18, box["y"] + 35 + 17)
        page.wait_for_selector("h1:has-text('Patient P')", timeout=60_000)
        patient = page.locator("h1:has-text('Patient P')").first.inner_text().split()[-1]
        assert f"patient={patient}" in page.url
        _wait_idle(page)
        for heading in ("Predictions", "Labs", "Notes", "Vital signs", "Chest X-ray"):
            page.get_by_role("heading", name=heading).wait_for(timeout=30_000)
        # the risk bars always; the vitals (SVG) and the X-ray (Plotly) when the record has them (the top row
        # of the worklist is whoever needs review first, with whatever modalities that patient has)
        page.locator(".mf-risk-bars").first.wait_for(timeout=60_000)
        if page.get_by_text("No vital signs in this record.").count() == 0:
            page.locator("img.mf-vitals").first.wait_for(timeout=60_000)
        if page.get_by_text("No chest X-ray in this record.").count() == 0:
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 1", timeout=60_000)
        assert page.locator("[data-testid='stException']").count() == 0
        page.screenshot(path=str(_shots(tmp_path) / "patient_from_worklist.png"), full_page=True)
        browser.close()


def test_hostile_note_displays_as_text(hostile_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = _browser(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(f"{hostile_url}/patient?patient=HOSTILE")
        _wait_idle(page)
        note = page.locator(".mf-note-text").first
        note.wait_for(timeout=60_000)
        text = note.inner_text()
        assert "<script>alert(1)</script>" in text
        assert "<img src=x onerror=alert(2)>" in text
        assert page.locator(".mf-note script, .mf-note img").count() == 0
        assert page.get_by_text("Loading warnings (1)", exact=False).count() == 1
        assert page.locator("[data-testid='stException']").count() == 0
        page.wait_for_timeout(500)
        assert dialogs == []
        browser.close()


def test_review_switches_disease_without_exception(dashboard_url: str, tmp_path: Path) -> None:
    """The issue's browser check: a demo patient's review, a disease switch, screenshots of both."""
    from playwright.sync_api import sync_playwright

    shots = _shots(tmp_path)
    with sync_playwright() as pw:
        browser = _browser(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 2200})
        page.goto(f"{dashboard_url}/patient?patient=P00002")
        _wait_idle(page)
        page.get_by_role("heading", name="Predictions").wait_for(timeout=60_000)
        page.locator(".mf-risk-bars").first.wait_for(timeout=60_000)  # the risk bars, the vitals, the X-ray
        page.locator("img.mf-vitals").first.wait_for(timeout=60_000)
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 1", timeout=60_000)
        assert page.locator("[data-testid='stException']").count() == 0
        assert page.locator(".mf-note").count() >= 1
        page.screenshot(path=str(shots / "review.png"), full_page=True)
        box = page.locator("[data-testid='stSelectbox']").filter(has_text="Disease").first
        box.click()
        page.get_by_role("option", name="Pneumonia").first.click()
        page.get_by_text("Pneumonia (except that caused by tuberculosis or sexually transmitted disease): "
                         "estimated probability", exact=False).first.wait_for(timeout=30_000)
        _wait_idle(page)
        page.wait_for_timeout(500)
        assert page.locator("[data-testid='stException']").count() == 0
        page.screenshot(path=str(shots / "review_pneumonia.png"), full_page=True)
        browser.close()


# ------------------------------------------------------------------------- issue 18: 1440 px wide

_CLIPPED_GRIDS_JS = """() => Array.from(document.querySelectorAll("[data-testid='stDataFrame']")).map(grid => {
    const scroller = grid.querySelector('.dvn-scroller');
    return scroller ? {clipped: scroller.scrollWidth - scroller.clientWidth, width: scroller.clientWidth} : null;
}).filter(x => x !== null)"""


def _grids_fit(page) -> list[dict]:
    """Every table on the page and how many pixels of it are cut off on the right (0: all columns shown)."""
    page.wait_for_timeout(800)  # the grids lay out their columns after the script has finished
    return page.evaluate(_CLIPPED_GRIDS_JS)


def test_nothing_is_clipped_at_1440_px_and_the_sorted_worklist_opens_on_its_disease(dashboard_url: str,
                                                                                   tmp_path: Path) -> None:
    """Issue 18: at 1440 px the worklist, the lab table and the predictions table show every column; a
    patient opened from the list sorted by a disease opens on that disease. Screenshots are kept in
    $MEDFUSE_LENS_SCREENSHOTS for a person to look at."""
    from playwright.sync_api import sync_playwright

    shots = _shots(tmp_path)
    with sync_playwright() as pw:
        browser = _browser(pw)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(dashboard_url)
        _wait_idle(page)
        page.locator("[data-testid='stDataFrame']").wait_for(timeout=60_000)
        grids = _grids_fit(page)
        page.screenshot(path=str(shots / "worklist_1440.png"), full_page=True)
        assert page.get_by_text("Deploy", exact=True).count() == 0  # client.toolbarMode = "viewer"
        assert grids and all(g["clipped"] <= 1 for g in grids), grids

        box = page.locator("[data-testid='stSelectbox']").filter(has_text="Risk for").first
        box.click()
        page.get_by_role("option", name="Pneumonia").first.click()
        page.get_by_text("Sorted by the probability of Pneumonia", exact=False).wait_for(timeout=30_000)
        _wait_idle(page)
        page.wait_for_timeout(800)
        grid = page.locator("[data-testid='stDataFrame']").first.bounding_box()
        page.mouse.click(grid["x"] + 18, grid["y"] + 35 + 35 + 17)  # the second row's selection marker
        page.wait_for_selector("h1:has-text('Patient P')", timeout=60_000)
        _wait_idle(page)
        assert "disease=Pneumonia" in page.url.replace("+", " ").replace("%20", " ")
        page.get_by_text("Pneumonia (except that caused by tuberculosis or sexually transmitted disease): "
                         "estimated probability", exact=False).first.wait_for(timeout=60_000)
        page.get_by_role("heading", name="Labs").wait_for(timeout=60_000)
        page.set_viewport_size({"width": 1440, "height": 2600})  # the page scrolls inside: a tall window shows it all
        _wait_idle(page)
        grids = _grids_fit(page)
        page.screenshot(path=str(shots / "review_1440.png"), full_page=True)
        assert len(grids) >= 2 and all(g["clipped"] <= 1 for g in grids), grids  # predictions and labs
        assert page.locator("[data-testid='stException']").count() == 0
        browser.close()
