"""ComfyUI's own frontend in a real headless Chromium against a cluster with authentication on:
signing in, booting without errors from the gateway's routes, each user's settings and
workflows kept across a balancer restart and seen from a second browser of the same user
only, and ComfyUI's default graph queued behind other work (its place shown on its Save Image
node), run on the fleet and its image shown. Skipped where Debian's chromium and
chromium-driver are missing (``./dev test`` installs them as root)."""

import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from selenium.webdriver import Chrome as WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from comfy_testkit import graphs
from comfy_testkit.api import submit
from comfy_testkit.api_keys import KeyClient, KeyClients
from comfy_testkit.browser import MISSING, NetworkAnswer, PageRecord, chromium_binaries
from comfy_testkit.cluster import Cluster
from comfy_testkit.stack import RunningComponent
from comfy_testkit.waiting import wait_for_condition

pytestmark = [
    pytest.mark.skipif(chromium_binaries() is None, reason=MISSING),
    pytest.mark.timeout(180),
]

BOOT_S = 60
BOOTED = """
return Boolean(window.app && window.app.vueAppReady && document.querySelector('canvas')
    && window.app.extensionManager && window.app.extensionManager.setting)
"""
SETTING = ("Comfy.Sidebar.Location", "right")
WORKFLOW = "lesson-1"
LESSON = {
    "last_node_id": 0, "last_link_id": 0, "nodes": [], "links": [], "groups": [], "config": {},
    "extra": {"lesson": 1, "teacher": "Ms. Ada"}, "version": 0.4,
}  # fmt: skip


def core_would_404(answer: NetworkAnswer) -> bool:
    """A user file the frontend probes for and ComfyUI answers 404 too when there is none
    (``user.css``, ``comfy.templates.json``)."""
    return answer.method == "GET" and answer.path.startswith("/api/userdata/")


@pytest.fixture
async def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    made = make_cluster(["a", "b"])
    await made.nodes_ready(2)
    return made


def sign_in(driver: WebDriver, url: str, key: str) -> None:
    """As a user does: open the UI, get sent to the sign-in page, paste the key."""
    driver.get(f"{url}/")
    WebDriverWait(driver, 20).until(lambda d: urlsplit(d.current_url).path == "/signin")
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_booted(driver)


def wait_booted(driver: WebDriver) -> None:
    WebDriverWait(driver, BOOT_S).until(lambda d: d.execute_script(BOOTED))
    assert urlsplit(driver.current_url).path == "/"


def setting(driver: WebDriver, setting_id: str) -> Any:
    return driver.execute_script(
        "return window.app.extensionManager.setting.get(arguments[0])", setting_id
    )


def workflow_paths(driver: WebDriver) -> list[str]:
    paths: list[str] = driver.execute_script(
        """
        const store = window.app.extensionManager.workflow;
        await store.syncWorkflows();
        return store.workflows.filter(w => w.isPersisted).map(w => w.path);
        """
    )
    return paths


async def test_the_frontend_boots_without_errors_from_the_gateways_routes(
    cluster: Cluster, keys: KeyClients, browsers: Callable[[str], WebDriver]
) -> None:
    alice = await keys.make("alice")
    driver = browsers("alice")

    sign_in(driver, cluster.balancer.url, alice.key["key"])
    record = PageRecord().take(driver)

    (cookie,) = driver.get_cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == (
        "comfy_session",
        True,
        "Strict",
    )
    assert cookie["secure"] is False  # plain http here; https gets Secure
    assert cookie["value"] != alice.key["key"]
    origin = cluster.balancer.url
    answered = [answer for answer in record.answers if answer.url.startswith(origin)]
    assert {
        "/api/system_stats", "/api/settings", "/api/users", "/api/extensions",
        "/api/object_info", "/api/jobs",
    } <= {answer.path for answer in answered}  # fmt: skip
    failures = [
        answer
        for answer in answered
        if answer.status >= 500 or (answer.status >= 400 and not core_would_404(answer))
    ]
    assert failures == []
    console = [line for line in record.errors() if origin in line and "/api/userdata/" not in line]
    assert console == []
    assert [url for url, _ in record.failed if url.startswith(origin)] == []
    follow_a_link_from_another_site(driver, origin)


def follow_a_link_from_another_site(driver: WebDriver, origin: str) -> None:
    """The cookie is SameSite=Strict: a course page's link arrives without it, and the
    sign-in page fetches it with one reload of its own, then goes on to the UI."""
    driver.get(f'data:text/html,<a id="go" href="{origin}/">ComfyUI</a>')
    driver.find_element(By.ID, "go").click()

    wait_booted(driver)


async def test_settings_and_workflows_follow_the_user_across_restarts_and_browsers(
    cluster: Cluster,
    keys: KeyClients,
    browsers: Callable[[str], WebDriver],
    start_balancer: Callable[..., RunningComponent],
) -> None:
    alice = await keys.make("alice")
    alice_tablet = await keys.make("alice-tablet", tenant="alice")
    bob = await keys.make("bob")
    laptop = browsers("alice-laptop")
    sign_in(laptop, cluster.balancer.url, alice.key["key"])

    laptop.execute_script(
        "return window.app.extensionManager.setting.set(arguments[0], arguments[1])", *SETTING
    )
    laptop.execute_script(
        """
        const store = window.app.extensionManager.workflow;
        const workflow = store.createTemporary(arguments[0], arguments[1]);
        await store.openWorkflow(workflow);
        await store.saveWorkflow(workflow);
        """,
        f"{WORKFLOW}.json",
        LESSON,
    )
    await check_saved_on_the_server(alice)

    balancer = restart_balancer(cluster, start_balancer)
    laptop.refresh()  # the session cookie outlives the process: it lives in Redis
    wait_booted(laptop)
    assert setting(laptop, SETTING[0]) == SETTING[1]
    assert f"workflows/{WORKFLOW}.json" in workflow_paths(laptop)

    tablet = browsers("alice-tablet")
    sign_in(tablet, balancer.url, alice_tablet.key["key"])
    assert setting(tablet, SETTING[0]) == SETTING[1]
    assert f"workflows/{WORKFLOW}.json" in workflow_paths(tablet)

    bobs = browsers("bob")
    sign_in(bobs, balancer.url, bob.key["key"])
    assert setting(bobs, SETTING[0]) != SETTING[1]
    assert f"workflows/{WORKFLOW}.json" not in workflow_paths(bobs)


async def check_saved_on_the_server(alice: KeyClient) -> None:
    settings = (await alice.get("/api/settings")).json()
    saved = await alice.get(f"/api/userdata/workflows%2F{WORKFLOW}.json")

    assert settings[SETTING[0]] == SETTING[1]
    assert saved.status_code == 200
    assert saved.json()["extra"] == LESSON["extra"]


def restart_balancer(
    cluster: Cluster, start_balancer: Callable[..., RunningComponent]
) -> RunningComponent:
    """Stop the balancer and start a new process on the same port (a browser's cookie is
    for the host, so the page goes on as if nothing happened)."""
    port = urlsplit(cluster.balancer.url).port
    cluster.balancer.stop()
    return start_balancer("balancer-restarted", port=port)


PLACE_SHOWN = """
const node = window.app.graph.getNodeById(9);
const text = node && (node.widgets || []).find(w => w.name === '$$node-text-preview');
return text ? text.value : null;
"""
"""The progress text ComfyUI's frontend writes inside a node (here the default graph's Save
Image), where the gateway tells a waiting prompt its place."""


async def test_the_default_graph_waits_its_turn_then_runs_and_its_image_shows(
    cluster: Cluster, keys: KeyClients, browsers: Callable[[str], WebDriver]
) -> None:
    alice = await keys.make("alice")
    driver = browsers("alice")
    sign_in(driver, cluster.balancer.url, alice.key["key"])
    blockers = [await busy_the_fleet(cluster) for _ in range(4)]
    await wait_both_nodes_busy(cluster)

    # The frontend opens on an empty canvas and its template browser; "Load Default" loads
    # ComfyUI's default graph, then Run queues it.
    driver.execute_script("await window.app.loadGraphData(); return window.app.queuePrompt(0, 1)")
    place = WebDriverWait(driver, 30).until(lambda d: d.execute_script(PLACE_SHOWN))
    assert re.fullmatch(r"In the queue: (next to start|\d+ ahead of you)", place)
    for task_id in blockers:
        await cluster.api.delete(f"/api/v1/tasks/{task_id}")

    def image_shown(d: WebDriver) -> bool:
        return bool(
            d.execute_script(
                """
                return [...document.querySelectorAll('img')].some(
                    img => img.src.includes('/api/view?') && img.complete && img.naturalWidth > 0)
                """
            )
        )

    WebDriverWait(driver, 60).until(image_shown)
    assert driver.execute_script(PLACE_SHOWN) is None  # cleared when the prompt started
    record = PageRecord().take(driver)
    views = [a for a in record.answers if a.path == "/api/view"]
    assert views
    assert all(answer.status == 200 for answer in views)


async def busy_the_fleet(cluster: Cluster) -> str:
    """A long task of another tenant (the admin's), so that the next prompt waits."""
    task = await submit(cluster.api, graphs.txt2img(f"busy-{uuid.uuid4().hex[:8]}", steps=5000))
    return str(task["id"])


async def wait_both_nodes_busy(cluster: Cluster) -> None:
    async def running_on_both() -> bool:
        tasks = (await cluster.api.get("/api/v1/tasks", params={"status": "running"})).json()
        return len({task["node_id"] for task in tasks["tasks"]}) == 2

    await wait_for_condition(running_on_both, timeout_s=30, what="both nodes running a task")
