"""The API pages (``/docs``: Swagger UI, ``/redoc``: ReDoc) render the balancer's OpenAPI 3.1
document in a real headless Chromium from files the balancer serves itself: no request
leaves the machine, so they work without internet. Skipped where Debian's chromium and
chromium-driver are missing (``./dev test`` installs them as root)."""

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from selenium.webdriver import Chrome as WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from comfy_testkit.browser import MISSING, PageRecord, chromium, chromium_binaries
from comfy_testkit.plugin import BalancerFactory

pytestmark = [
    pytest.mark.skipif(chromium_binaries() is None, reason=MISSING),
    pytest.mark.timeout(120),
]

RENDER_S = 30
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
SWAGGER_RENDERED = """
return Boolean(document.querySelector('.opblock-summary-path[data-path="/api/v1/generate"]'))
"""
REDOC_RENDERED = """
return Array.from(document.querySelectorAll('[data-section-id^="operation/"]')).length > 5
"""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    with chromium(tmp_path / "profile") as driver:
        yield driver


def open_page(driver: WebDriver, url: str, rendered: str) -> PageRecord:
    PageRecord().take(driver)  # drop what the browser's own start page loaded
    driver.get(url)
    WebDriverWait(driver, RENDER_S).until(lambda d: d.execute_script(rendered))
    return PageRecord().take(driver)


def assert_stayed_on(record: PageRecord, host: str) -> None:
    """Every request the page sent went to ``host`` (inline ``data:`` images aside) and was
    answered; nothing but a load the page's policy blocked (never sent) logged an error."""
    sent = [answer.url for answer in record.answers if urlsplit(answer.url).scheme != "data"]
    assert sent, "the page made no request at all"
    assert [url for url in sent if urlsplit(url).hostname != host] == []
    assert [answer for answer in record.answers if answer.status >= 400] == []
    assert [(url, error) for url, error in record.failed if error != "blocked:csp"] == []
    assert [line for line in record.errors() if "Content Security Policy" not in line] == []


async def test_swagger_ui_renders_every_operation_from_the_balancers_own_files(
    start_balancer: BalancerFactory, browser: WebDriver
) -> None:
    origin = start_balancer().url

    record = open_page(browser, f"{origin}/docs", SWAGGER_RENDERED)

    assert_stayed_on(record, urlsplit(origin).hostname or "")
    paths = {answer.path for answer in record.answers}
    assert {"/docs", "/openapi.json"} <= paths
    assert any(path.endswith("/swagger-ui-bundle.js") for path in paths)
    summaries = browser.execute_script(
        "return Array.from(document.querySelectorAll('.opblock-summary-path'), e => e.dataset.path)"
    )
    assert {"/api/v1/generate", "/api/v1/queue", "/api/v1/tasks/{task_id}"} <= set(summaries)


async def test_redoc_renders_from_the_balancers_own_files(
    start_balancer: BalancerFactory, browser: WebDriver
) -> None:
    origin = start_balancer().url

    record = open_page(browser, f"{origin}/redoc", REDOC_RENDERED)

    assert_stayed_on(record, urlsplit(origin).hostname or "")
    assert any(answer.path.endswith("/redoc.standalone.js") for answer in record.answers)
    # its maker's logo, which it would fetch from their CDN, the browser never asked for
    assert record.failed == [(REDOC_LOGO, "blocked:csp")]
