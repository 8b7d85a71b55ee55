"""How fast the web console paints and lists 10,000 tasks, in a real headless Chromium.

Starts two embedded Redis servers, each with one balancer (no node: the pages shown need
none): one holds ``--tasks`` task records, the other 100, stored as ``bench/task_list.py``
does (20 tenants, 10 nodes, 1 % failed). A Chromium signs in to both with the admin key,
then loads each page ``--loads`` times with the browser's cache off (every file fetched
again, as on a first visit), taking turns, and reads the browser's own clock from the
navigation's start:

- the console's first contentful paint;
- when the task list shows its first 50 rows, with 10,000 tasks stored and with 100;
- the same list filtered to the 1 % of failed tasks (the server reads further for a page);
- ComfyUI's frontend at ``/`` on the same balancer, for scale: its first paint.

Needs Debian's chromium and chromium-driver (``./dev test`` installs them as root).

    ./dev bench console_paint [--tasks 10000] [--loads 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from _common import QUIET_LOGS, local_redis, print_grid
from selenium.webdriver import Chrome as WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from task_list import seed

from comfy_testkit.browser import chromium
from comfy_testkit.stack import ADMIN_KEY, start_balancer_process

ROWS = 50
FIRST_PAINT = """
const paint = () => performance.getEntriesByName('first-contentful-paint')[0];
return await new Promise(resolve => {
  const check = () => paint() ? resolve(paint().startTime) : setTimeout(check, 5);
  check();
});
"""
ROWS_SHOWN = f"""
return await new Promise(resolve => {{
  const check = () => document.querySelectorAll('#task-list tr[data-task]').length >= {ROWS}
    ? resolve(performance.now()) : requestAnimationFrame(check);
  check();
}});
"""
FEW = 100
LARGE, SMALL = "large", "small"
PAGES = {
    # name: (which balancer, path, what to time once loaded)
    "console: first paint": (LARGE, "/console#/tasks", FIRST_PAINT),
    f"console: {ROWS} rows shown, {FEW} tasks stored": (SMALL, "/console#/tasks", ROWS_SHOWN),
    f"console: {ROWS} rows shown, many tasks stored": (LARGE, "/console#/tasks", ROWS_SHOWN),
    f"console: {ROWS} failed (1 %) shown": (LARGE, "/console#/tasks?status=failed", ROWS_SHOWN),
    "ComfyUI's frontend: first paint": (LARGE, "/", FIRST_PAINT),
}


def sign_in(driver: WebDriver, url: str, key: str) -> None:
    driver.get(f"{url}/signin?next=/console")
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#who strong"))


def load(driver: WebDriver, url: str, path: str, script: str) -> float:
    driver.get("about:blank")  # a real navigation each time, even to the same address
    driver.get(f"{url}{path}")
    milliseconds: float = driver.execute_script(script)
    return milliseconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=20)
    args = parser.parse_args()

    with (
        local_redis() as (root, large_redis),
        local_redis() as (_, small_redis),
        TemporaryDirectory() as profile,
    ):
        started = time.monotonic()
        asyncio.run(seed(large_redis.url, args.tasks))
        asyncio.run(seed(small_redis.url, FEW))
        print(f"{args.tasks} and {FEW} tasks stored in {time.monotonic() - started:.1f} s")
        balancers = {
            name: start_balancer_process(
                Path(root) / f"logs-{name}", redis_url=redis.url, extra_args=list(QUIET_LOGS)
            )
            for name, redis in ((LARGE, large_redis), (SMALL, small_redis))
        }
        # Cookies are per host, not per port: the small one is reached by another name.
        urls = {
            LARGE: balancers[LARGE].url,
            SMALL: balancers[SMALL].url.replace("127.0.0.1", "localhost"),
        }
        try:
            with chromium(Path(profile)) as driver:
                for url in urls.values():
                    sign_in(driver, url, ADMIN_KEY)
                driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
                samples: dict[str, list[float]] = {name: [] for name in PAGES}
                for _ in range(args.loads):
                    for name, (which, path, script) in PAGES.items():
                        samples[name].append(load(driver, urls[which], path, script))
        finally:
            for balancer in balancers.values():
                balancer.stop()
    report(samples)


def report(samples: dict[str, list[float]]) -> None:
    rows = []
    for name, values in samples.items():
        ordered = sorted(values)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        rows.append([name, f"{statistics.median(values):.0f}", f"{p95:.0f}", f"{max(values):.0f}"])
    print(f"\npage loads with the cache off, {len(next(iter(samples.values())))} of each")
    print_grid(["ms from the navigation's start", "median", "p95", "max"], rows)
    few = statistics.median(samples[f"console: {ROWS} rows shown, {FEW} tasks stored"])
    many = statistics.median(samples[f"console: {ROWS} rows shown, many tasks stored"])
    print(f"\nthe task list with 10,000 tasks stored against {FEW}: {many / few:.2f}x the time")


if __name__ == "__main__":
    main()
