"""The leaderboard page in a real browser (headless Chromium through Selenium): it renders, every image loads,
the findings come above the first table within the first screen, and the figures are shown at a legible size.

Chromium and its driver are system packages (Debian: ``chromium``, ``chromium-driver``); CI installs them and
sets HARNESS_REQUIRE_BROWSER=1, so there the test fails instead of skipping when they are missing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from harness.report.write import write_report
from harness.runs.config import RunConfig
from harness.runs.leaderboard import run_leaderboard
from test_report_injection import HTML_PAYLOAD, hostile_run

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "exported_models" / "digits_cnn.onnx"
SCREEN = (1280, 900)


def browser_binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("HARNESS_REQUIRE_BROWSER"):
            pytest.fail("Chromium and chromedriver are required here (apt-get install chromium chromium-driver)")
        pytest.skip("Chromium and chromedriver are not installed (CI installs them)")
    return chromium, driver


@pytest.fixture
def browser():
    chromium, driver = browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={SCREEN[0]},{SCREEN[1]}"):
        options.add_argument(argument)
    session = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    yield session
    session.quit()


def test_the_page_renders_loads_every_image_and_leads_with_the_findings(tmp_path, browser, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    methods = ["vanilla", "smoothgrad", "ig", "suppression", "point+abs-mean", "normal+abs-mean", "linear+abs-mean"]
    parameters = {m: {"samples": 4} for m in ("smoothgrad", "suppression", "normal+abs-mean")}
    parameters.update({m: {"steps": 4} for m in ("ig", "linear+abs-mean")})
    config = RunConfig.load(None, models=[str(DIGITS)], methods=methods, metrics=["mi"], images=4,
                            out=str(tmp_path / "run"), method_parameters=parameters, gallery=3)
    run_leaderboard(config, quiet=True)
    page = write_report(tmp_path / "run")
    browser.get(page.as_uri())
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0, "
        "i.clientWidth / i.naturalWidth])")
    assert len(images) >= 3 and all(loaded for _, loaded, _ in images), images
    assert all(scale >= 0.75 for _, _, scale in images), images       # no figure shrunk to illegible text
    top = browser.execute_script("return [document.querySelector('.findings').getBoundingClientRect().top, "
                                 "document.querySelector('table').getBoundingClientRect().top]")
    assert top[0] < SCREEN[1] and top[0] < top[1]
    assert "suppression" in browser.find_element("css selector", ".findings").text
    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot))
    pixels = np.asarray(Image.open(shot).convert("L"), np.float64)
    assert pixels.shape[:2][::-1] == SCREEN or pixels.shape[1] >= SCREEN[0] * 0.9
    assert pixels.std() > 10                                            # text and figures, not a blank page


def test_hostile_names_inject_no_element_and_run_no_script(tmp_path, browser, monkeypatch):
    """Model names carrying an <img onerror> payload, a newline heading, a formula and escape sequences
    (tests/test_report_injection.py) are text on the page: no handler runs, no element appears."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    page = hostile_run(tmp_path) / "leaderboard.html"
    browser.get(page.as_uri())
    state = browser.execute_script(
        "return [window.pwned === undefined, document.querySelectorAll('[onerror]').length, "
        "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0), document.body.innerText]")
    assert state[0] and state[1] == 0 and state[2], state[:3]
    assert HTML_PAYLOAD in state[3]            # shown as the text it is
