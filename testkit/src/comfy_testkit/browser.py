"""A real headless Chromium for browser tests: Debian's ``chromium`` and ``chromium-driver``
driven through Selenium (never a browser Selenium would download), with what the page did
recorded: every network answer (from Chrome's performance log) and the console.

``./dev test`` installs the two packages when they are missing (``scripts/test-packages.sh``);
where they cannot be, the browser tests are skipped and say why.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.webdriver import Chrome as WebDriver
from selenium.webdriver.chrome.service import Service

CHROMIUM_PATHS = ("chromium", "chromium-browser")
CHROMEDRIVER = "chromedriver"
MISSING = "needs Debian's chromium and chromium-driver (./dev test installs them as root)"


def chromium_binaries() -> tuple[str, str] | None:
    """(browser, driver) paths, or None when either is missing."""
    browser = next((found for name in CHROMIUM_PATHS if (found := shutil.which(name))), None)
    driver = shutil.which(CHROMEDRIVER)
    return (browser, driver) if browser and driver else None


@dataclass(frozen=True, slots=True)
class NetworkAnswer:
    method: str
    url: str
    status: int

    @property
    def path(self) -> str:
        return urlsplit(self.url).path


BROWSER_SCHEMES = frozenset({"chrome", "chrome-untrusted", "chrome-extension", "devtools"})


@dataclass
class PageRecord:
    """What one browser saw: answers in order, failed loads (url, error; ``blocked:<reason>``
    for one the browser refused to send, e.g. ``blocked:csp``), console lines."""

    answers: list[NetworkAnswer] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    console: list[dict[str, Any]] = field(default_factory=list)
    _methods: dict[str, tuple[str, str]] = field(default_factory=dict)

    def take(self, driver: WebDriver) -> PageRecord:
        """Read (and so drain) the driver's logs into this record."""
        for entry in _log(driver, "performance"):
            self._network_event(json.loads(entry["message"])["message"])
        self.console.extend(_log(driver, "browser"))
        return self

    def _network_event(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        request_id = params.get("requestId", "")
        if method == "Network.requestWillBeSent":
            request = params["request"]
            self._methods[request_id] = (request["method"], request["url"])
        elif method == "Network.responseReceived":
            response = params["response"]
            if urlsplit(response["url"]).scheme in BROWSER_SCHEMES:
                return  # the browser's own pages (its new tab loads as it starts), not ours
            verb = self._methods.get(request_id, ("GET", ""))[0]
            self.answers.append(NetworkAnswer(verb, response["url"], int(response["status"])))
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            url = self._methods.get(request_id, ("", "?"))[1]
            blocked = params.get("blockedReason")  # e.g. "csp": never sent
            self.failed.append((url, f"blocked:{blocked}" if blocked else str(params["errorText"])))

    def errors(self) -> list[str]:
        """Console lines of level SEVERE (errors, failed loads)."""
        return [str(line["message"]) for line in self.console if line["level"] == "SEVERE"]


def _log(driver: WebDriver, kind: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = driver.get_log(kind)  # type: ignore[no-untyped-call]
    return entries


@contextmanager
def chromium(profile: Path) -> Iterator[WebDriver]:
    """A headless Chromium with its own profile folder (cookies live there: two profiles are
    two browsers); quit at the end."""
    binaries = chromium_binaries()
    if binaries is None:
        raise RuntimeError(MISSING)
    browser, driver_path = binaries
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--no-sandbox",  # as root in a container the sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,900",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
