"""GET /dashboard in a real browser: Debian's headless Chromium, driven through chromedriver by
Selenium, against `promptcache serve` after real traffic. The page shows the numbers as soon as it
opens (a cache without keys, or a stored key), and they must equal /stats; no console message may
be an error (a CSP violation is one) but the 401 that makes the page ask for a key; a screenshot
is kept under the test's tmp dir."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.support.openai_upstream import OpenAIUpstream
from tests.support.serve import ServerProcess, local_server

ADMIN = "admin-dashboard-key"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,2200",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    for path in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(path), f"{path} is missing: apt-get install -y chromium chromium-driver"
    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def keyed(tmp_path: Path, upstream: OpenAIUpstream) -> Iterator[ServerProcess]:
    with local_server(
        tmp_path,
        upstream.base_url,
        PROMPTCACHE_API_KEYS="ka:alpha,kb:beta",
        PROMPTCACHE_ADMIN_KEY=ADMIN,
    ) as server:
        yield server


def traffic(server: ServerProcess, keys: bool = True) -> None:
    for key, prompt, model in (
        ("ka", "What is the capital of France?", "test-model"),
        ("ka", "What is the capital of France?", "test-model"),
        ("ka", "what is the capital of france", "test-model"),
        ("ka", "How tall is Mount Everest?", "other-model"),
        ("kb", "Beta's own question", "test-model"),
    ):
        response = httpx.post(
            server.url + "/chat",
            json={"prompt": prompt, "model": model},
            headers={"Authorization": f"Bearer {key}"} if keys else {},
            timeout=30,
        )
        assert response.status_code == 200, response.text


WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}


def mixed_traffic(server: ServerProcess) -> None:
    """One request of each kind but text (tools, structured) and two bypasses (a request's own
    reason, logprobs, and the client's cache=skip), through the OpenAI face."""
    for extra in (
        {"tools": [WEATHER]},
        {"response_format": {"type": "json_object"}},
        {"logprobs": True},
        {"promptcache": {"cache": "skip"}},
    ):
        body = {"model": "test-model", "messages": [{"role": "user", "content": "Weather?"}]}
        response = httpx.post(
            server.url + "/v1/chat/completions", json={**body, **extra}, timeout=30
        )
        assert response.status_code == 200, response.text


def stats(server: ServerProcess, key: str | None, query: str = "") -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(server.url + "/stats" + query, headers=headers, timeout=30)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def loaded(driver: webdriver.Chrome) -> str | None:
    """The page's state: the time of its last load, "key" (asking for one) or "error"."""
    return driver.find_element(By.TAG_NAME, "body").get_attribute("data-loaded")


def wait_state(driver: webdriver.Chrome, previous: str | None) -> str:
    WebDriverWait(driver, 30).until(lambda d: loaded(d) not in (None, "", previous))
    return loaded(driver) or ""


def wait_loaded(driver: webdriver.Chrome, previous: str | None) -> None:
    state = wait_state(driver, previous)
    assert state.isdigit(), (state, driver.find_element(By.ID, "status").text)


def open_dashboard(driver: webdriver.Chrome, server: ServerProcess) -> str:
    """Opens the page, and waits for its first answer without touching anything."""
    driver.get(server.url + "/dashboard")
    return wait_state(driver, None)


def asks_for_a_key(driver: webdriver.Chrome) -> bool:
    return (
        loaded(driver) == "key"
        and "needs an API key" in driver.find_element(By.ID, "status").text
        and driver.find_element(By.ID, "key-form").is_displayed()
        and driver.find_element(By.ID, "key") == driver.switch_to.active_element
        and not driver.find_element(By.ID, "board").is_displayed()
    )


def charts_drawn(driver: webdriver.Chrome) -> bool:
    return bool(
        driver.find_elements(By.CSS_SELECTOR, "#hit-rate-chart circle")
        and driver.find_elements(By.CSS_SELECTOR, "#tier-chart rect")
        and driver.find_elements(By.CSS_SELECTOR, "#latency-chart rect")
    )


def enter_key(driver: webdriver.Chrome, key: str) -> None:
    before = loaded(driver)
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.ID, "use-key").click()
    wait_loaded(driver, before)


def shown(driver: webdriver.Chrome) -> dict[str, str]:
    return {
        el.get_attribute("data-stat") or "": el.text
        for el in driver.find_elements(By.CSS_SELECTOR, "[data-stat]")
    }


def expected(report: dict[str, Any]) -> dict[str, str]:
    def ms(value: float | None) -> str:
        return "–" if value is None else f"{value:.1f}"

    return {
        "requests": str(report["requests"]),
        "hit_rate": f"{100 * report['hit_rate']:.1f}%",
        "hits.exact": str(report["hits"]["exact"]),
        "hits.semantic": str(report["hits"]["semantic"]),
        "misses": str(report["misses"]),
        "bypasses": str(report["bypasses"]),
        "tokens_saved": str(report["tokens_saved"]),
        "cost_saved_usd": f"{report['cost_saved_usd']:.4f}",
        "mean_latency_ms.hit": ms(report["mean_latency_ms"]["hit"]),
        "mean_latency_ms.miss": ms(report["mean_latency_ms"]["miss"]),
        "entries": "–" if report["entries"] is None else str(report["entries"]),
    }


def kinds_and_bypasses(report: dict[str, Any]) -> dict[str, list[list[str]]]:
    """The two tables as the page must draw them from ``report``: the three kinds always (a
    share of their total), then the bypasses by reason."""
    kinds = report["kinds"]
    total = sum(kinds.values())
    return {
        "kinds": [
            [k, str(kinds.get(k, 0)), f"{100 * kinds.get(k, 0) / total:.1f}%"]
            for k in ("text", "tools", "structured")
        ],
        "bypass-reasons": [[r, str(n)] for r, n in report["bypass_reasons"].items()]
        or [["no bypass"]],
    }


def rows(driver: webdriver.Chrome, table: str) -> list[list[str]]:
    return [
        [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
        for tr in driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")
    ]


def console_errors(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """The console's errors, but the 401 that asks for a key (Chromium logs a refused fetch)."""
    return [
        e
        for e in driver.get_log("browser")
        if e["level"] in ("SEVERE", "ERROR")
        and not ("/stats?" in e["message"] and "status of 401" in e["message"])
    ]


def test_without_keys_the_numbers_and_charts_show_as_the_page_opens(
    serve: ServerProcess, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    traffic(serve, keys=False)
    mixed_traffic(serve)
    assert open_dashboard(browser, serve).isdigit(), browser.find_element(By.ID, "status").text
    report = stats(serve, None)
    assert report["requests"] == 9 and report["hits"]["total"] >= 1
    assert report["kinds"] == {"structured": 1, "text": 7, "tools": 1}
    assert report["bypass_reasons"] == {"cache=skip": 1, "logprobs": 1}
    assert shown(browser) == expected(report)
    drawn = kinds_and_bypasses(report)
    assert {t: rows(browser, t) for t in drawn} == drawn
    assert drawn["kinds"][1] == ["tools", "1", "11.1%"]  # the figures themselves, not just equal
    assert charts_drawn(browser)
    assert [r[0] for r in rows(browser, "top")] == [e["prompt"] for e in report["top_entries"]]
    assert "Showing this cache" in browser.find_element(By.ID, "status").text
    assert not browser.find_element(By.ID, "key-form").is_displayed()  # nothing to ask for
    browser.save_screenshot(str(tmp_path / "dashboard-keyless.png"))
    assert (tmp_path / "dashboard-keyless.png").stat().st_size > 10_000
    # no error nor warning, not even the 401 a cache with keys answers first
    assert [e for e in browser.get_log("browser") if e["level"] not in ("DEBUG", "INFO")] == []


def test_with_keys_a_stored_key_is_used_as_the_page_opens(
    keyed: ServerProcess, browser: webdriver.Chrome
) -> None:
    traffic(keyed)
    assert open_dashboard(browser, keyed) == "key"  # no key stored: asked for one
    assert asks_for_a_key(browser)
    browser.execute_script("sessionStorage.setItem('promptcache.key', 'ka')")  # this tab's
    browser.refresh()
    wait_loaded(browser, None)
    alpha = stats(keyed, "ka")
    assert alpha["requests"] == 4
    assert shown(browser) == expected(alpha)
    assert rows(browser, "kinds") == kinds_and_bypasses(alpha)["kinds"]  # text only: 100%
    assert rows(browser, "bypass-reasons") == [["no bypass"]]
    assert charts_drawn(browser)
    assert "Showing tenant alpha" in browser.find_element(By.ID, "status").text
    assert browser.find_element(By.ID, "key-form").is_displayed()  # to change or forget it
    browser.find_element(By.ID, "forget-key").click()
    WebDriverWait(browser, 30).until(asks_for_a_key)
    assert browser.execute_script("return sessionStorage.getItem('promptcache.key')") is None
    assert console_errors(browser) == []


def test_the_dashboard_shows_what_stats_says(
    keyed: ServerProcess, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    traffic(keyed)
    open_dashboard(browser, keyed)
    assert asks_for_a_key(browser)

    # a tenant's key: its own numbers, its own top entries, its entries readable
    enter_key(browser, "ka")
    alpha = stats(keyed, "ka")
    assert alpha["requests"] == 4 and alpha["hits"]["total"] >= 1
    assert shown(browser) == expected(alpha)
    top = rows(browser, "top")
    assert [r[0] for r in top] == [e["prompt"] for e in alpha["top_entries"]]
    assert top[0][1] == str(alpha["top_entries"][0]["hits"])
    assert "Beta" not in browser.find_element(By.TAG_NAME, "main").text
    assert sorted(r[0] for r in rows(browser, "models")) == sorted(alpha["models"])
    assert browser.find_element(By.ID, "tenant-box").get_attribute("hidden") is not None
    link = browser.find_element(By.CSS_SELECTOR, "#top a[data-entry]")
    link.click()
    WebDriverWait(browser, 10).until(
        lambda d: "capital of france" in d.find_element(By.ID, "entry-view").text.lower()
    )
    assert charts_drawn(browser)
    assert "key" not in browser.current_url and "ka" not in browser.current_url.split("/")[-1]
    assert browser.execute_script("return sessionStorage.getItem('promptcache.key')") == "ka"

    # the admin key: every tenant, and the picker narrows to one
    enter_key(browser, ADMIN)
    overall = stats(keyed, ADMIN)
    assert overall["requests"] == 5
    assert shown(browser) == expected(overall)
    select = Select(browser.find_element(By.ID, "tenant"))
    assert [o.get_attribute("value") for o in select.options] == ["", "alpha", "beta"]
    before = loaded(browser)
    select.select_by_value("beta")
    wait_loaded(browser, before)
    beta = stats(keyed, ADMIN, "?tenant=beta")
    assert shown(browser) == expected(beta)
    assert beta["top_entries"] == [] and rows(browser, "top") == [["no hits yet"]]

    assert browser.find_element(By.ID, "entry-view").text == ""  # alpha's entry is gone

    before = loaded(browser)
    select.select_by_value("")
    wait_loaded(browser, before)
    assert shown(browser) == expected(overall)
    browser.save_screenshot(str(tmp_path / "dashboard.png"))
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    assert console_errors(browser) == []


def test_a_wrong_key_says_so_and_the_page_is_locked_down(
    keyed: ServerProcess, browser: webdriver.Chrome
) -> None:
    page = httpx.get(keyed.url + "/dashboard", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
    assert "<script>" not in page.text and not re.search(r"\son\w+\s*=", page.text)
    assert "style=" not in page.text  # inline styles would need 'unsafe-inline'
    for asset, kind in (("/dashboard.js", "text/javascript"), ("/dashboard.css", "text/css")):
        response = httpx.get(keyed.url + asset, timeout=30)
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
    assert open_dashboard(browser, keyed) == "key"
    before = loaded(browser)
    browser.find_element(By.ID, "key").send_keys("not-a-key")
    browser.find_element(By.ID, "use-key").click()
    WebDriverWait(browser, 30).until(lambda d: loaded(d) not in (None, "", before))
    assert loaded(browser) == "error"
    assert "403" in browser.find_element(By.ID, "status").text
    assert browser.find_element(By.ID, "board").get_attribute("hidden") is not None
    # the one console error is the refused request itself, nothing else (no CSP violation)
    errors = console_errors(browser)
    assert errors and all("status of 403" in e["message"] for e in errors), errors
