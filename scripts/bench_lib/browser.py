"""A real headless Chromium (Debian's chromium and chromedriver, driven by Selenium) for the
console's tests (tests/test_console_browser.py) and its benchmark (console.py). Nothing is
downloaded: the browser and its driver come from Debian (scripts/setup installs them), and the
flags keep Chromium off the network (this machine's network is closed; background requests
would only be refused).

Selenium's calls block, and a test's daemon runs on the test's event loop: `Browser` runs every
call in a thread (`await browser.call(...)`) so the loop keeps serving.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
    "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
    "--window-size=1280,900", "--lang=en-US",
)
T = TypeVar("T")


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            return f"{path} is missing: scripts/setup installs Debian's chromium and chromium-driver"
    return None


class Browser:
    def __init__(self, extra_flags: tuple[str, ...] = ()) -> None:
        self.profile = tempfile.mkdtemp(prefix="deviceagentd-chromium-")
        options = Options()
        options.binary_location = CHROMIUM
        for flag in (*FLAGS, *extra_flags, f"--user-data-dir={self.profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        self.driver.set_page_load_timeout(30)

    @classmethod
    async def start(cls, extra_flags: tuple[str, ...] = ()) -> Browser:
        return await asyncio.to_thread(cls, extra_flags)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def get(self, url: str) -> None:
        await self.call(self.driver.get, url)

    async def js(self, script: str, *args: Any) -> Any:
        return await self.call(self.driver.execute_script, script, *args)

    async def wait(self, check: Callable[[webdriver.Chrome], T], timeout: float = 15.0, what: str = "") -> T:
        """Poll `check(driver)` in a thread until it returns something truthy."""
        def poll() -> T:
            deadline = time.monotonic() + timeout
            last: Exception | None = None
            while time.monotonic() < deadline:
                try:
                    value = check(self.driver)
                    if value:
                        return value
                except (StaleElementReferenceException, WebDriverException) as exc:
                    last = exc
                time.sleep(0.05)
            raise AssertionError(f"browser: {what or check} not seen within {timeout} s"
                                 + (f" (last error: {last})" if last else "") + f"\nconsole log: {self.log()}")

        return await asyncio.to_thread(poll)

    async def element(self, css: str, timeout: float = 15.0) -> WebElement:
        return await self.wait(lambda d: _first(d, css), timeout, f"element {css}")

    async def text_of(self, css: str) -> str:
        element = await self.element(css)
        return await self.call(lambda: element.text)

    async def until_text(self, css: str, wanted: str, timeout: float = 15.0) -> str:
        def check(d: webdriver.Chrome) -> str | None:
            element = _first(d, css)
            text = element.text if element is not None else ""
            return text if wanted in text else None

        return await self.wait(check, timeout, f"{wanted!r} in {css}")

    async def click(self, css: str) -> None:
        element = await self.element(css)
        await self.call(element.click)

    async def type(self, css: str, text: str, clear: bool = True) -> None:
        element = await self.element(css)
        if clear:
            await self.call(element.clear)
        await self.call(element.send_keys, text)

    async def select(self, css: str, visible_text: str) -> None:
        from selenium.webdriver.support.select import Select

        element = await self.element(css)
        await self.call(lambda: Select(element).select_by_visible_text(visible_text))

    async def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        await self.call(self.driver.save_screenshot, str(path))

    def log(self) -> list[dict[str, Any]]:
        try:
            entries: list[dict[str, Any]] = self.driver.get_log("browser")
            return entries
        except WebDriverException:
            return []

    async def errors(self, expected: tuple[str, ...] = ()) -> list[str]:
        """Errors the page logged (exceptions, failed requests) but those containing an `expected` text."""
        entries = await self.call(self.log)
        return [e["message"] for e in entries
                if e.get("level") == "SEVERE" and not any(text in e["message"] for text in expected)]

    async def close(self) -> None:
        try:
            await self.call(self.driver.quit)
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


def _first(driver: webdriver.Chrome, css: str) -> WebElement | None:
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0] if found else None
