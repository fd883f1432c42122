"""The dashboard in a real headless browser (Debian's chromium through chromedriver, driven by Selenium).

The test signs in with the admin key, runs hits and misses through the
gateway, reads the numbers from the page's DOM and compares them with
``/admin/stats``, clicks "Report wrong" on a semantic hit, and saves a
screenshot.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from support.gateway import GatewayProcess
from support.wait import wait_until

# Real gateway processes with the real model: not in the quick loop.
pytestmark = [pytest.mark.slow, pytest.mark.model]

MODEL = "gpt-4o-mini"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "install chromium and chromium-driver (bash scripts/setup.sh does, as root)"
    options = Options()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1200",
                     f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(argument)
    session = webdriver.Chrome(options=options, service=Service(driver))
    try:
        yield session
    finally:
        session.quit()


def post(gateway: GatewayProcess, prompt: str) -> httpx.Response:
    return httpx.post(f"{gateway.base_url}/chat/completions", timeout=60,
                      json={"model": MODEL, "messages": [{"role": "user", "content": prompt}]},
                      headers={"authorization": f"Bearer {gateway.keys['alpha']}"})


def text(browser: webdriver.Chrome, element_id: str) -> str:
    return str(browser.find_element(By.ID, element_id).text)


def test_the_dashboard_shows_the_numbers_and_reports_a_wrong_hit(
    gateway: GatewayProcess, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    browser.get(f"{gateway.root}/dashboard")
    assert browser.find_elements(By.ID, "key"), "without the cookie the page asks for the admin key"
    browser.find_element(By.ID, "key").send_keys("sk-not-the-admin-key")
    browser.find_element(By.ID, "sign-in").click()
    wait_until(lambda: browser.find_elements(By.ID, "login-error"), what="the wrong key refused")
    browser.find_element(By.ID, "key").send_keys(gateway.admin_key)
    browser.find_element(By.ID, "sign-in").click()
    wait_until(lambda: browser.find_elements(By.ID, "hit-rate"), what="the dashboard")

    # A scripted run: misses, an exact repeat and a semantic hit.
    for prompt in ("What is the capital of Japan?", "How do I sort a list in Python?", "Who wrote Hamlet?"):
        assert post(gateway, prompt).status_code == 200
    wait_until(lambda: post(gateway, "What is the capital of Japan?").headers["x-semcache"] == "hit",
               what="the first answer stored")
    assert post(gateway, "what's the capital of japan").headers["x-semcache"] == "hit"

    with gateway.admin() as admin:
        stats = admin.get("/admin/stats").json()["totals"]
    hits = stats["exact_hits"] + stats["semantic_hits"]
    # The page polls every 2 s: wait until it shows this (now settled) state, then read every number.
    wait_until(lambda: text(browser, "requests") == str(stats["requests"]), what="the page to catch up")
    assert text(browser, "hits") == str(hits)
    assert text(browser, "lookups") == str(hits + stats["misses"])
    assert text(browser, "hit-rate") == f"{100 * stats['hit_rate']:.1f} %"
    assert text(browser, "tokens-saved") == f"{stats['tokens_saved']:,}" and stats["tokens_saved"] > 0
    assert text(browser, "hit-p50") != "–" and text(browser, "upstream-p50") != "–"
    assert browser.find_element(By.ID, "hit-rate-line").get_attribute("points")

    rows = browser.find_elements(By.CSS_SELECTOR, "#recent-hits tr.recent-hit")
    semantic = [r for r in rows if r.find_element(By.CSS_SELECTOR, ".new-prompt").text
                == "what's the capital of japan"]
    assert len(semantic) == 1
    row = semantic[0]
    assert row.find_element(By.CSS_SELECTOR, ".cached-prompt").text == "What is the capital of Japan?"
    assert 0.5 < float(row.find_element(By.CSS_SELECTOR, ".similarity").text) < 1.0
    browser.save_screenshot(str(tmp_path / "dashboard.png"))
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000

    row.find_element(By.CSS_SELECTOR, "button.report-wrong").click()
    wait_until(lambda: "Reported" in text(browser, "report-status"), what="the report")
    assert "deleted" in text(browser, "report-status")
    with gateway.admin() as admin:
        assert admin.get("/admin/stats").json()["totals"]["wrong_hit_reports"] == 1
    # The reported entry is gone: the same question is a miss again.
    assert post(gateway, "What is the capital of Japan?").headers["x-semcache"] == "miss"
