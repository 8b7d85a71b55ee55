"""What comfy-service adds to a request, next to the same request sent straight to ComfyUI.

Starts Redis, one emulated ComfyUI and one comfy-service as separate processes; this process
only sends requests, one at a time, alternating between the two targets so that both see the
same machine load. Prints a table and a one-line summary.

    uv run python bench/service_overhead.py --requests 500
"""

from __future__ import annotations

import argparse
import resource
import time
import uuid
from collections.abc import Callable

import httpx
from _common import Latencies, local_stack, print_table

from comfy_testkit.graphs import solid_image
from comfy_testkit.stack import AUTH_HEADERS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="requests per target")
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured requests first")
    args = parser.parse_args()

    with local_stack() as stack, httpx.Client(timeout=30, headers=AUTH_HEADERS) as http:
        comfy, service = stack.emulator.url, stack.service.url
        # Sent to ComfyUI too, which ignores it: both sides pay for the same request size.
        http.headers.update(stack.service.auth_headers)

        def direct_submit(i: int) -> str:
            prompt_id = str(uuid.uuid4())
            body = {"prompt": solid_image(f"b/{i}"), "client_id": "bench", "prompt_id": prompt_id}
            http.post(f"{comfy}/prompt", json=body).raise_for_status()
            return prompt_id

        def service_submit(i: int) -> str:
            response = http.post(
                f"{service}/api/v1/generate", json={"prompt": solid_image(f"s/{i}")}
            )
            response.raise_for_status()
            return str(response.json()["id"])

        for i in range(args.warmup):
            direct_submit(-i)
            service_submit(-i)
        cpu_before = _cpu_s()
        direct, via_service, direct_ids, service_ids = _alternate(
            args.requests,
            ("ComfyUI POST /prompt", direct_submit),
            ("service POST /api/v1/generate", service_submit),
        )
        _wait_until_idle(http, comfy)
        history_urls = [f"{comfy}/history/{prompt_id}" for prompt_id in direct_ids]
        task_urls = [f"{service}/api/v1/tasks/{task_id}" for task_id in service_ids]
        history, task, _, _ = _alternate(
            args.requests,
            ("ComfyUI GET /history/{id}", lambda i: _get(http, history_urls[i])),
            ("service GET /api/v1/tasks/{id}", lambda i: _get(http, task_urls[i])),
        )
        client_cpu_s = _cpu_s() - cpu_before

    print_table([direct, via_service], direct)
    print()
    print_table([history, task], history)
    busy = client_cpu_s / (direct.wall_s + via_service.wall_s + history.wall_s + task.wall_s)
    print(f"\nload generator CPU: {busy:.0%} of one core (it is not the bottleneck below 100%)")
    print(
        f"summary: submit p50 {via_service.p50:.2f} ms via the service vs {direct.p50:.2f} ms "
        f"direct (+{via_service.p50 - direct.p50:.2f} ms, x{via_service.p50 / direct.p50:.1f}); "
        f"p99 {via_service.p99:.2f} vs {direct.p99:.2f} ms"
    )


Measured = tuple[str, Callable[[int], str]]


def _alternate(
    count: int, first: Measured, second: Measured
) -> tuple[Latencies, Latencies, list[str], list[str]]:
    samples: tuple[list[float], list[float]] = ([], [])
    results: tuple[list[str], list[str]] = ([], [])
    walls = [0.0, 0.0]
    for i in range(count):
        for side, (_, send) in enumerate((first, second)):
            started = time.perf_counter()
            results[side].append(send(i))
            elapsed = time.perf_counter() - started
            samples[side].append(elapsed * 1000)
            walls[side] += elapsed
    return (
        Latencies(first[0], samples[0], walls[0]),
        Latencies(second[0], samples[1], walls[1]),
        results[0],
        results[1],
    )


def _get(http: httpx.Client, url: str) -> str:
    http.get(url).raise_for_status()
    return url


def _wait_until_idle(http: httpx.Client, comfy: str) -> None:
    deadline = time.monotonic() + 120
    while http.get(f"{comfy}/prompt").json()["exec_info"]["queue_remaining"]:
        if time.monotonic() > deadline:
            raise SystemExit("ComfyUI did not drain its queue in time")
        time.sleep(0.05)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
