"""Headless Chromium driven over WebDriver (Debian's `chromium` + `chromium-driver`).

A fresh profile per browser, and every background service off, so a test run never
talks to anything but the page under test."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

__all__ = ["ARTIFACTS", "chromium", "find_chromium"]

ARTIFACTS = Path(
    os.environ.get("TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")
)

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1440,1000",
)


def find_chromium() -> tuple[str, str] | None:
    """(browser, driver) paths, or None where they are not installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@contextlib.contextmanager
def chromium(log_dir: Path) -> Iterator[webdriver.Chrome]:
    found = find_chromium()
    if found is None:
        raise RuntimeError("chromium and chromedriver are not installed")
    browser, driver = found
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        # An explicit driver path: Selenium Manager never goes looking online.
        service = Service(driver, log_output=str(log_dir / "chromedriver.log"))
        session = webdriver.Chrome(options=options, service=service)
        try:
            yield session
        finally:
            session.quit()
