"""The web console in a real headless Chromium against a two-node cluster with
authentication on: signing in with a key, generating with ``demo`` and seeing the image,
cancelling a long task from its page, both nodes shown, an admin creating and revoking a key,
each tenant seeing only its own work, every control labelled, the theme switch, and the first
paint. Skipped where Debian's chromium and chromium-driver are missing (``./dev test``
installs them as root).

With ``COMFY_CONSOLE_SCREENSHOTS=DIR`` the tests save a screenshot of each page into DIR
(the README's pictures come from here)."""

import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from selenium.webdriver import Chrome as WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from comfy_testkit import graphs
from comfy_testkit.api import get_task, submit, wait_for_status
from comfy_testkit.api_keys import KeyClients
from comfy_testkit.browser import MISSING, PageRecord, chromium_binaries
from comfy_testkit.cluster import Cluster
from comfy_testkit.stack import ADMIN_KEY
from comfy_testkit.waiting import wait_for_condition

pytestmark = [
    pytest.mark.skipif(chromium_binaries() is None, reason=MISSING),
    pytest.mark.timeout(180),
]

WAIT_S = 30
UNLABELLED = """
return [...document.querySelectorAll(
    'main input:not([type=hidden]), main select, main textarea, main button, header button')]
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
    && !el.getAttribute('aria-labelledby') && !(el.tagName === 'BUTTON' && el.textContent.trim()))
  .map(el => el.outerHTML)
"""

PAGES_READY = (
    ("generate", "#param-width"),
    ("tasks", "#task-list tr[data-task]"),
    ("nodes", "article[data-node]"),
    ("queue", ".stats .stat"),
)
WIDER_THAN_THE_SCREEN = """
return [...document.querySelectorAll('body *')]
  .filter(el => el.getBoundingClientRect().right > document.documentElement.clientWidth + 1
    && !(el.parentElement && el.parentElement.closest('.table-wrap')))
  .map(el => el.tagName + (el.id ? '#' + el.id : '') + '.' + el.className)
"""


@pytest.fixture
async def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    made = make_cluster(["a", "b"])
    await made.nodes_ready(2)
    return made


def sign_in(driver: WebDriver, url: str, key: str) -> None:
    """As a user does: open the console, get sent to the sign-in page, paste the key."""
    driver.get(f"{url}/console")
    WebDriverWait(driver, WAIT_S).until(lambda d: urlsplit(d.current_url).path == "/signin")
    assert "Sign in to the console" in driver.page_source
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(driver, WAIT_S).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#who strong"))
    assert urlsplit(driver.current_url).path == "/console"


def open_page(driver: WebDriver, url: str, page: str, ready_css: str) -> WebElement:
    driver.get(f"{url}/console#/{page}")
    return wait_for(driver, ready_css)


def wait_for(driver: WebDriver, css: str, timeout_s: float = WAIT_S) -> WebElement:
    found: list[WebElement] = WebDriverWait(driver, timeout_s).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, css)
    )
    return found[0]


def screenshot(driver: WebDriver, name: str) -> None:
    folder = os.environ.get("COMFY_CONSOLE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))


async def submit_demo(client: httpx.AsyncClient) -> dict[str, Any]:
    answer = await client.post(
        "/api/v1/generate", json={"workflow": "demo", "params": {"width": 32}}
    )
    assert answer.status_code == 202, answer.text
    task: dict[str, Any] = answer.json()
    return task


def no_errors(driver: WebDriver, origin: str) -> None:
    """Nothing failed to load, nothing was asked of another host, no script error."""
    record = PageRecord().take(driver)
    assert record.errors() == []
    assert record.failed == []
    web = [a for a in record.answers if a.url.startswith(("http:", "https:"))]
    assert [a.url for a in web if not a.url.startswith(origin)] == []
    assert [(a.status, a.path) for a in web if a.status >= 400] == []


async def test_sign_in_generate_with_demo_and_see_the_image(
    cluster: Cluster, keys: KeyClients, browsers: Callable[[str], WebDriver]
) -> None:
    alice = await keys.make("alice")
    driver = browsers("alice")
    url = cluster.balancer.url

    sign_in(driver, url, alice.key["key"])
    first_paint = driver.execute_script(
        "return performance.getEntriesByName('first-contentful-paint')[0].startTime"
    )
    wait_for(driver, "#param-width")
    assert driver.find_element(By.ID, "nav-keys").get_attribute("hidden") is not None
    driver.find_element(By.ID, "param-width").send_keys("96")
    driver.find_element(By.ID, "param-height").send_keys("80")
    driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    image = wait_for(driver, "#live-task .gallery img")
    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.execute_script("return arguments[0].complete", image)
    )
    size = driver.execute_script(
        "return [arguments[0].naturalWidth, arguments[0].naturalHeight]", image
    )
    screenshot(driver, "generate")

    assert first_paint < 1000
    assert size == [96, 80]  # the parameters reached the graph, the image came back
    task_id = driver.find_element(By.CSS_SELECTOR, "#live-task h2 a").text
    task = await get_task(alice, task_id)
    assert (task["status"], task["tenant"], task["params"]["width"]) == ("succeeded", "alice", 96)
    assert "succeeded" in driver.find_element(By.ID, "live-task").text
    no_errors(driver, url)


PREVIEW_SEEN = """
window.previewsSeen = [];
document.addEventListener('load', event => {
  if (event.target.classList && event.target.classList.contains('preview')) {
    window.previewsSeen.push([event.target.naturalWidth, event.target.alt]);
  }
}, true);
"""


async def test_generating_shows_the_samplers_previews_while_it_runs(
    make_cluster: Callable[..., Cluster], browsers: Callable[[str], WebDriver]
) -> None:
    cluster = make_cluster(["a"], step_time_s=0.03)  # 150 steps: 4.5 s to see them
    await cluster.nodes_ready(1)
    driver = browsers("admin")
    url = cluster.balancer.url
    sign_in(driver, url, ADMIN_KEY)

    open_page(driver, url, "generate?workflow=txt2img-sdxl", "#param-steps")
    driver.find_element(By.ID, "param-prompt").send_keys("a lighthouse at dusk")
    driver.find_element(By.ID, "param-steps").send_keys("150")
    driver.find_element(By.ID, "param-width").send_keys("512")
    driver.find_element(By.ID, "param-height").send_keys("512")
    driver.execute_script(PREVIEW_SEEN)
    driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    wait_for(driver, "#live-task .live-preview:not([hidden]) img")
    screenshot(driver, "generate-preview")
    wait_for(driver, "#live-task .gallery img")
    seen = driver.execute_script("return window.previewsSeen")

    assert seen, "no preview was shown while the task ran"
    assert all(width > 0 for width, _ in seen)
    assert all(re.fullmatch(r"Preview at step \d+", alt) for _, alt in seen)
    assert driver.find_element(By.CSS_SELECTOR, "#live-task .live-preview").get_attribute("hidden")
    no_errors(driver, url)


async def test_a_long_task_is_cancelled_from_its_page(
    cluster: Cluster, keys: KeyClients, browsers: Callable[[str], WebDriver]
) -> None:
    alice = await keys.make("alice")
    task = await submit(alice, graphs.txt2img(f"long-{uuid.uuid4().hex[:8]}", steps=5000))
    await wait_for_status(alice, task["id"], {"running"})
    driver = browsers("alice")
    url = cluster.balancer.url
    sign_in(driver, url, alice.key["key"])

    open_page(driver, url, f"tasks/{task['id']}", "ol.timeline li")
    WebDriverWait(driver, WAIT_S).until(
        lambda d: re.search(r"step \d+ of 5000", d.find_element(By.TAG_NAME, "main").text)
    )
    screenshot(driver, "task-running")
    cancel = driver.find_element(By.XPATH, "//main//button[text()='Cancel']")
    cancel.send_keys("\n")  # by keyboard
    wait_for(driver, "dl.facts .badge.s-cancelled")
    wait_for(driver, "ol.timeline li .badge.s-cancelled")

    assert (await get_task(alice, task["id"]))["status"] == "cancelled"
    assert driver.find_elements(By.XPATH, "//main//button[text()='Cancel']") == []
    no_errors(driver, url)


async def test_a_failed_task_shows_the_graph_node_comfyui_blamed(
    cluster: Cluster, keys: KeyClients, browsers: Callable[[str], WebDriver]
) -> None:
    alice = await keys.make("alice")
    task = await submit(alice, graphs.runtime_error(f"err-{uuid.uuid4().hex[:8]}"))
    failed = await wait_for_status(alice, task["id"], {"failed"})
    driver = browsers("alice")
    url = cluster.balancer.url
    sign_in(driver, url, alice.key["key"])

    blamed = open_page(driver, url, f"tasks/{task['id']}", "main .alert .node-error")
    shown = driver.find_element(By.CSS_SELECTOR, "main .alert").text

    assert blamed.get_attribute("data-node") == failed["error"]["details"]["node_id"] == "2"
    assert "ImageToMask" in blamed.text
    assert failed["error"]["message"] in shown
    assert shown.startswith(f"{failed['error']['type']} error")
    no_errors(driver, url)


async def test_the_nodes_page_shows_both_nodes_live(
    cluster: Cluster, keys: KeyClients, browsers: Callable[[str], WebDriver]
) -> None:
    viewer = await keys.make("viewer", scopes=["read"])
    driver = browsers("viewer")
    url = cluster.balancer.url
    sign_in(driver, url, viewer.key["key"])

    open_page(driver, url, "nodes", "article[data-node]")
    # Read at once: the page redraws the cards every two seconds.
    cards = dict(
        driver.execute_script(
            "return [...document.querySelectorAll('article[data-node]')]"
            ".map(card => [card.dataset.node, card.innerText])"
        )
    )
    screenshot(driver, "nodes")

    assert set(cards) == {"a", "b"}
    for text in cards.values():
        assert "ready" in text
        assert re.search(r"0 of \d+ slots", text)
        assert "ComfyUI\nup" in text
    assert driver.find_elements(By.CSS_SELECTOR, "article[data-node] button") == []  # not admin
    no_errors(driver, url)


FOCUSED_LABEL = "return document.activeElement.getAttribute('aria-label')"
LAST_SEEN = """
return [...document.querySelectorAll("article[data-node='a'] dt")]
  .find(dt => dt.textContent === 'Last seen').nextElementSibling.textContent
"""


async def test_an_admin_drains_and_undrains_a_node_by_keyboard_through_the_redraws(
    cluster: Cluster, browsers: Callable[[str], WebDriver]
) -> None:
    driver = browsers("admin")
    url = cluster.balancer.url
    sign_in(driver, url, ADMIN_KEY)
    open_page(driver, url, "nodes", "button[aria-label='Drain node a']")

    driver.find_element(By.CSS_SELECTOR, "button[aria-label='Drain node a']").send_keys("\n")
    wait_for(driver, "article[data-node='a'] .badge.s-drained")
    seen = driver.execute_script(LAST_SEEN)
    WebDriverWait(driver, WAIT_S).until(lambda d: d.execute_script(LAST_SEEN) != seen)  # redrawn

    assert driver.execute_script(FOCUSED_LABEL) == "Undrain node a"
    nodes = {n["node_id"]: n["state"] for n in (await cluster.api.get("/api/v1/nodes")).json()}
    assert nodes == {"a": "drained", "b": "ready"}
    driver.switch_to.active_element.send_keys("\n")
    wait_for(driver, "article[data-node='a'] .badge.s-ready")
    assert driver.execute_script(FOCUSED_LABEL) == "Drain node a"
    nodes = {n["node_id"]: n["state"] for n in (await cluster.api.get("/api/v1/nodes")).json()}
    assert nodes == {"a": "ready", "b": "ready"}
    no_errors(driver, url)


async def test_an_admin_creates_a_key_sees_its_secret_once_and_revokes_it(
    cluster: Cluster, browsers: Callable[[str], WebDriver]
) -> None:
    driver = browsers("admin")
    url = cluster.balancer.url
    sign_in(driver, url, ADMIN_KEY)

    open_page(driver, url, "keys", "#key-name")
    driver.find_element(By.ID, "key-name").send_keys("carol")
    driver.find_element(By.ID, "key-tenant").send_keys("class-b")
    driver.find_element(By.ID, "limit-max_running").send_keys("2")
    driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    secret = wait_for(driver, "#new-key-secret").text
    screenshot(driver, "keys")
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": secret}) as carol:
        me = (await carol.get("/api/v1/whoami")).json()
    row = wait_for(driver, "main table tbody tr")
    listed = driver.find_element(By.CSS_SELECTOR, "main table").text

    assert (me["tenant"], me["scopes"], me["limits"]["max_running"]) == (
        "class-b",
        ["read", "submit"],
        2,
    )
    assert "carol" in row.text
    assert secret not in listed  # shown once, above; never in the list
    driver.refresh()
    wait_for(driver, "main table tbody tr")
    assert secret not in driver.page_source

    driver.execute_script("window.confirm = () => true")
    driver.find_element(
        By.CSS_SELECTOR, f"button[aria-label='Revoke carol ({me['key_id']})']"
    ).click()
    WebDriverWait(driver, WAIT_S).until(
        lambda d: "carol" not in d.find_element(By.TAG_NAME, "main").text
    )

    async def refused() -> bool:
        async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": secret}) as revoked:
            return (await revoked.get("/api/v1/whoami")).status_code == 401

    await wait_for_condition(refused, timeout_s=5, what="the revoked key refused")
    no_errors(driver, url)


async def test_each_tenant_sees_only_its_own_work_on_labelled_pages(
    cluster: Cluster, keys: KeyClients, browsers: Callable[[str], WebDriver]
) -> None:
    alice, bob = await keys.make("alice"), await keys.make("bob")
    mine, theirs = await submit_demo(alice), await submit_demo(bob)
    for client, task in ((alice, mine), (bob, theirs)):
        await wait_for_status(client, task["id"], {"succeeded"})
    driver = browsers("alice")
    url = cluster.balancer.url
    sign_in(driver, url, alice.key["key"])

    open_page(driver, url, "tasks", "#task-list tr[data-task]")
    listed = [
        row.get_attribute("data-task")
        for row in driver.find_elements(By.CSS_SELECTOR, "tr[data-task]")
    ]
    screenshot(driver, "tasks")
    unlabelled = {"tasks": driver.execute_script(UNLABELLED)}
    driver.find_element(By.ID, "f-status").send_keys("failed")
    driver.find_element(By.CSS_SELECTOR, "form[role=search] button[type=submit]").click()
    WebDriverWait(driver, WAIT_S).until(
        lambda d: "No task matches" in d.find_element(By.ID, "main").text
    )
    filtered = urlsplit(driver.current_url).fragment
    open_page(driver, url, f"tasks/{theirs['id']}", "main .alert")
    refused = driver.find_element(By.CSS_SELECTOR, "main .alert").text
    for page, ready in (("generate", "#param-width"), ("nodes", "article[data-node]"),
                        ("queue", ".stats .stat")):  # fmt: skip
        open_page(driver, url, page, ready)
        unlabelled[page] = driver.execute_script(UNLABELLED)
    screenshot(driver, "queue")
    driver.set_window_size(390, 844)  # a phone: every page fits its width
    too_wide = {}
    for page, ready in PAGES_READY:
        open_page(driver, url, page, ready)
        too_wide[page] = driver.execute_script(WIDER_THAN_THE_SCREEN)

    assert listed == [mine["id"]]
    assert too_wide == {page: [] for page, _ in PAGES_READY}
    assert filtered == "/tasks?status=failed"  # the filter is in the address: a link keeps it
    assert refused.startswith("task_not_found")
    assert unlabelled == {page: [] for page in unlabelled}


async def test_the_theme_switch_is_kept(
    cluster: Cluster, keys: KeyClients, browsers: Callable[[str], WebDriver]
) -> None:
    alice = await keys.make("alice")
    driver = browsers("alice")
    url = cluster.balancer.url
    sign_in(driver, url, alice.key["key"])

    def theme() -> list[str | None]:
        shown: list[str | None] = driver.execute_script(
            "return [document.documentElement.dataset.theme || null, "
            "getComputedStyle(document.body).backgroundColor]"
        )
        return shown

    before = theme()
    driver.find_element(By.ID, "theme").click()
    switched = theme()
    driver.refresh()
    wait_for(driver, "#who strong")
    kept = theme()
    screenshot(driver, "generate-dark" if switched[0] == "dark" else "generate-light")

    assert before[0] is None  # the system's choice until the user picks one
    assert switched[0] in ("dark", "light")
    assert switched[1] != before[1]
    assert kept == switched
