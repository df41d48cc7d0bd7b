"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by Playwright (never a download).

``launch_browser()`` uses ``CONVSCOPE_CHROMIUM`` or /usr/bin/chromium; it skips the calling test when Playwright or Chromium is missing, unless
``CONVSCOPE_REQUIRE_BROWSER`` is set (``.ci/run`` sets it), when it fails instead.
"""
import contextlib
import os
import shutil

import pytest

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def chromium_path() -> str | None:
    for name in (os.environ.get("CONVSCOPE_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if name and os.path.exists(name):
            return name
    return None


def _unavailable(reason: str):
    if os.environ.get("CONVSCOPE_REQUIRE_BROWSER"):
        pytest.fail(f"browser tests required (CONVSCOPE_REQUIRE_BROWSER is set) but {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def launch_browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install '.[test]')")
    path = chromium_path()
    if path is None:
        _unavailable("Chromium is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
