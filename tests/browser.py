"""Debian's headless Chromium driven by Selenium through Debian's chromedriver, for the
browser tests. Without the binaries a test fails, saying how to install them, unless
``DEX_SKIP_BROWSER_TESTS=1`` asks for it to be skipped."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from tests.live import REPO

CHROMIUM = os.environ.get("DEX_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("DEX_CHROMEDRIVER", "/usr/bin/chromedriver")
ARTIFACTS = REPO / "test-artifacts"


def require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if not missing:
        return
    if os.environ.get("DEX_SKIP_BROWSER_TESTS") == "1":
        pytest.skip(f"DEX_SKIP_BROWSER_TESTS=1 and no {', '.join(missing)}")
    pytest.fail(
        f"the browser test needs {' and '.join(missing)}: install Debian's Chromium with "
        "`sudo apt-get install chromium chromium-driver` (.ci/run does this), point "
        "DEX_CHROMIUM / DEX_CHROMEDRIVER at another build, or set DEX_SKIP_BROWSER_TESTS=1 "
        "to skip this test knowingly",
        pytrace=False,
    )


@contextlib.contextmanager
def chromium(
    tmp_path: Path, *, window: str | None = None, downloads: Path | None = None
) -> Iterator[webdriver.Chrome]:
    """A headless Chromium for the block, its profile and driver log under ``tmp_path``;
    files it downloads go to ``downloads``."""
    require_browser()
    options = Options()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(argument)
    if window:
        options.add_argument(f"--window-size={window}")
    if downloads is not None:
        options.add_experimental_option(
            "prefs",
            {"download.default_directory": str(downloads), "download.prompt_for_download": False},
        )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # A driver path given: Selenium Manager is not run, so nothing is downloaded.
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    if downloads is not None:
        driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
    try:
        yield driver
    finally:
        driver.quit()
