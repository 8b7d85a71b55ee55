"""How fast the ComfyUI gateway lists a user's history, which some clients poll as a liveness
probe: ``GET /history`` (everything) with 1,000 finished prompts of one user.

Starts a 2-node cluster (Redis, 2 emulated ComfyUIs, 2 comfy-services, 1 balancer, each its own
process), sends ``--prompts`` prompts through the gateway's ``POST /prompt``, waits until all
have finished, then times ``--requests`` reads of each of: the whole ``GET /history``, a window
(``?max_items=20``), one entry, a jobs page (``/api/jobs?limit=200``), and as a yardstick the
whole ``GET /history`` of one of the emulated ComfyUIs (which holds about half the prompts, in
memory). Reads alternate between targets, so all see the same machine.

    ./dev bench gateway_history [--prompts 1000] [--requests 50]
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
from _common import alternating_reads, local_cluster, print_table

from comfy_testkit.graphs import solid_image
from comfy_testkit.stack import AUTH_HEADERS


def send_prompts(client: httpx.Client, count: int) -> list[str]:
    def send(_: int) -> str:
        graph = solid_image(f"bench/{uuid.uuid4().hex[:12]}", width=8, height=8)
        response = client.post("/prompt", json={"prompt": graph, "client_id": "bench"})
        response.raise_for_status()
        prompt_id: str = response.json()["prompt_id"]
        return prompt_id

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(send, range(count)))


def wait_until_done(client: httpx.Client, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while client.get("/prompt").json()["exec_info"]["queue_remaining"]:
        if time.monotonic() > deadline:
            raise TimeoutError("the prompts did not finish in time")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()

    with local_cluster(2) as cluster:
        gateway = httpx.Client(base_url=cluster.balancer.url, headers=AUTH_HEADERS, timeout=60)
        comfyui = httpx.Client(base_url=cluster.nodes[0].emulator.url, timeout=60)
        started = time.monotonic()
        ids = send_prompts(gateway, args.prompts)
        wait_until_done(gateway, timeout_s=600)
        print(f"{len(ids)} prompts sent and finished in {time.monotonic() - started:.1f} s")
        history = gateway.get("/history").json()
        assert len(history) == len(ids), f"history holds {len(history)} of {len(ids)} prompts"
        targets: dict[str, Callable[[], httpx.Response]] = {
            "ComfyUI GET /history (its own, in memory)": lambda: comfyui.get("/history"),
            "gateway GET /history (all)": lambda: gateway.get("/history"),
            "gateway GET /history?max_items=20": lambda: gateway.get(
                "/history", params={"max_items": 20}
            ),
            "gateway GET /history/{id}": lambda: gateway.get(f"/history/{ids[-1]}"),
            "gateway GET /api/jobs?limit=200": lambda: gateway.get(
                "/api/jobs", params={"limit": 200}
            ),
        }
        rows, sizes = alternating_reads(targets, args.requests)
        print_table(rows, rows[0])
        for name, size in sizes.items():
            print(f"{name}: {size / 1024:.0f} KiB")
        comfy_entries = len(comfyui.get("/history").json())
        full = rows[1]
        print(
            f"summary: GET /history of {len(ids)} prompts p50 {full.p50:.1f} ms "
            f"p99 {full.p99:.1f} ms (one ComfyUI with {comfy_entries}: p50 {rows[0].p50:.1f} ms)"
        )


if __name__ == "__main__":
    main()
