"""How fast the ComfyUI gateway answers ``GET /object_info`` (the frontend reads it at every
page load; scripts and node packs read it too), from the fleet catalogue's cache.

Starts a 2-node cluster (Redis, 2 emulated ComfyUIs, 2 comfy-services, 1 balancer, each its own
process), waits until both nodes published their object_info, then times ``--requests`` reads
of each of: the whole ``GET /object_info`` and one class (``/object_info/KSampler``) from the
gateway, and as the yardstick the same two reads from one emulated ComfyUI (which builds its
answer from its node classes at each request, as ComfyUI does). Reads alternate between
targets, so all see the same machine. Then ``--concurrency`` clients read the whole document at
once, to see the cache under a crowd (a class's page loads after a restart).

    ./dev bench gateway_object_info [--requests 200] [--concurrency 20]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
from _common import Latencies, alternating_reads, local_cluster, print_table, timed

from comfy_testkit.stack import AUTH_HEADERS

READY_TIMEOUT_S = 60.0


def wait_for_the_fleet(gateway: httpx.Client, comfyui: httpx.Client) -> None:
    """Until the gateway's catalogue holds every class the node declares."""
    wanted = set(comfyui.get("/object_info").json())
    deadline = time.monotonic() + READY_TIMEOUT_S
    while set(gateway.get("/object_info").json()) != wanted:
        if time.monotonic() > deadline:
            raise TimeoutError("the nodes' object_info never reached the gateway")
        time.sleep(0.2)


def crowd(gateway: httpx.Client, clients: int) -> Latencies:
    """``clients`` readers at once, each reading the whole document five times."""

    def read(_: int) -> list[float]:
        return [timed(lambda: gateway.get("/object_info"))[0] for _ in range(5)]

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        samples = [ms for batch in pool.map(read, range(clients)) for ms in batch]
    return Latencies(
        f"gateway GET /object_info, {clients} at once", samples, time.monotonic() - started
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()

    with local_cluster(2) as cluster:
        limits = httpx.Limits(max_connections=args.concurrency)
        gateway = httpx.Client(
            base_url=cluster.balancer.url, headers=AUTH_HEADERS, timeout=60, limits=limits
        )
        comfyui = httpx.Client(base_url=cluster.nodes[0].emulator.url, timeout=60)
        wait_for_the_fleet(gateway, comfyui)
        targets: dict[str, Callable[[], httpx.Response]] = {
            "ComfyUI GET /object_info (one node)": lambda: comfyui.get("/object_info"),
            "gateway GET /object_info (the fleet's)": lambda: gateway.get("/object_info"),
            "ComfyUI GET /object_info/KSampler": lambda: comfyui.get("/object_info/KSampler"),
            "gateway GET /object_info/KSampler": lambda: gateway.get("/object_info/KSampler"),
        }
        rows, sizes = alternating_reads(targets, args.requests)
        print_table([*rows, crowd(gateway, args.concurrency)], rows[0])
        for name, size in sizes.items():
            print(f"{name}: {size / 1024:.1f} KiB")
        comfy, fleet = rows[0], rows[1]
        print(
            f"summary: gateway GET /object_info p50 {fleet.p50:.2f} ms p99 {fleet.p99:.2f} ms "
            f"({len(gateway.get('/object_info').json())} classes); one ComfyUI's own answer "
            f"p50 {comfy.p50:.2f} ms p99 {comfy.p99:.2f} ms"
        )


if __name__ == "__main__":
    main()
