"""A headless Chromium for the dashboard's browser tests.

Chromium and chromedriver come from the system (scripts/ensure-test-tools
installs Debian's); without them the browser tests skip, saying so.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashboard_support import DESKTOP

CHROMEDRIVER = "/usr/bin/chromedriver"


def _chromium() -> tuple[str, str]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = CHROMEDRIVER if Path(CHROMEDRIVER).exists() else shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip(
            "SKIPPED BROWSER TESTS: chromium/chromedriver not found; "
            "run scripts/ensure-test-tools (as root it installs Debian's chromium and "
            "chromium-driver)"
        )
    return binary, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless Chromium per test module; each test's server has its own origin,
    so no localStorage carries over between tests."""
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install selenium)"
    )
    binary, driver = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver))
    chrome.set_window_size(*DESKTOP)
    yield chrome
    chrome.quit()
