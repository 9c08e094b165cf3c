"""Every integration test's teardown: volume images an agent mounted under the test's
directory are unmounted (an agent leaves them mounted until their volume is deleted, see
``cloudless.agent.volume_quota``), so their loop devices go back to the host. ``browser``:
Debian's Chromium, headless, driven by chromedriver through Selenium (skipped without
them)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudless.agent.volume_quota import mounts_under

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(autouse=True)
def _unmount_volume_images(tmp_path: Path) -> Iterator[None]:
    yield
    for point in mounts_under(tmp_path, "ext4"):
        if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium/chromedriver missing: apt-get install chromium chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium missing: pip install -e '.[dev]'")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        # The cluster's private CA is not in Chromium's store; the console's tests trust it
        # this way only (the login link and cookie are what is under test, not the CA).
        "--ignore-certificate-errors",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
