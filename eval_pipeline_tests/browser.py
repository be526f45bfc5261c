"""Headless Chromium for tests that must see a page the way a person would.

The browser is the Debian ``chromium`` and ``chromium-driver`` packages (``.ci/run`` installs them
when missing), driven through Selenium. A browser test starts with :func:`require_browser`:

* browser present: the test runs;
* browser missing and ``EVAL_PIPELINE_REQUIRE_BROWSER`` unset: the test is skipped, saying why;
* browser missing and ``EVAL_PIPELINE_REQUIRE_BROWSER`` set (CI sets it): the test fails, so a
  broken CI image cannot quietly turn every browser test into a skip.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

__all__ = [
    "CHROMEDRIVER",
    "CHROMIUM",
    "REQUIRE_BROWSER_ENV",
    "SCREENSHOTS",
    "browser_required",
    "chromium_available",
    "external_requests",
    "headless_chrome",
    "require_browser",
    "save_screenshot",
]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REQUIRE_BROWSER_ENV = "EVAL_PIPELINE_REQUIRE_BROWSER"
REPO_ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"

_LOCAL_SCHEMES = {"data", "about", "file", "blob"}
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
_OPTIONS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000")


def chromium_available() -> bool:
    """Whether both the Chromium binary and its chromedriver are installed and executable."""
    return all(p.is_file() and os.access(p, os.X_OK) for p in (CHROMIUM, CHROMEDRIVER))


def browser_required() -> bool:
    """Whether the environment demands a real browser (``EVAL_PIPELINE_REQUIRE_BROWSER`` set, not ``0``)."""
    return os.environ.get(REQUIRE_BROWSER_ENV, "").strip() not in ("", "0")


def require_browser() -> None:
    """Skip the calling test when there is no browser, or fail it when one is required.

    Call it first thing in a browser test. The skip exists for a developer's machine without the
    Debian Chromium packages (`make test` must still run there); CI sets the variable, so a browser
    missing in CI fails the test instead of hiding it.
    """
    if chromium_available():
        return
    missing = ", ".join(str(p) for p in (CHROMIUM, CHROMEDRIVER) if not (p.is_file() and os.access(p, os.X_OK)))
    if browser_required():
        pytest.fail(
            f"{REQUIRE_BROWSER_ENV} is set but {missing} is missing: "
            "install it with `apt-get install -y chromium chromium-driver` (as .ci/run does)",
            pytrace=False,
        )
    pytest.skip(
        f"headless Chromium not installed ({missing} missing); install `chromium chromium-driver` "
        f"or set {REQUIRE_BROWSER_ENV}=1 to make this a failure"
    )


@contextmanager
def headless_chrome() -> Iterator[webdriver.Chrome]:
    """A headless Chromium webdriver with performance logging on; quit on exit."""
    options = webdriver.ChromeOptions()
    for argument in _OPTIONS:
        options.add_argument(argument)
    options.binary_location = str(CHROMIUM)
    # the performance log records every request the page issued, including ones that failed
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def _is_external(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme.lower() in _LOCAL_SCHEMES:
        return False
    return (parts.hostname or "").lower() not in _LOCAL_HOSTS


def external_requests(driver: webdriver.Chrome) -> list[str]:
    """URLs the current page fetched from anywhere but itself, ``data:``/``about:`` or localhost.

    Two sources are combined: the page's resource timing entries plus its navigation entry (what
    loaded), and the browser's performance log (``Network.requestWillBeSent``: what was asked
    for, so blocked and failed requests count too). The log is drained by reading it.

    Returns:
        The external URLs, each once, in the order first seen.
    """
    urls: list[str] = driver.execute_script(
        "return performance.getEntriesByType('navigation').concat("
        "performance.getEntriesByType('resource')).map(e => e.name);"
    )
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return list(dict.fromkeys(url for url in urls if _is_external(url)))


def save_screenshot(driver: webdriver.Chrome, name: str, *, full_page: bool = True) -> Path:
    """Save a PNG of the current page to ``<repo>/artifacts/screenshots/<name>.png``.

    Args:
        driver: The webdriver showing the page.
        name: File stem (a trailing ``.png`` is accepted and not doubled).
        full_page: Grow the window to the page's full height for the shot, then restore it.

    Returns:
        The path of the PNG.
    """
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    stem = name.removesuffix(".png")
    path = SCREENSHOTS / f"{stem}.png"
    size = driver.get_window_size()
    if full_page:
        height = driver.execute_script("return document.documentElement.scrollHeight;")
        driver.set_window_size(size["width"], max(size["height"], int(height) + 140))
    try:
        if not driver.save_screenshot(str(path)):
            raise RuntimeError(f"the browser could not write the screenshot {path}")
    finally:
        if full_page:
            driver.set_window_size(size["width"], size["height"])
    return path
