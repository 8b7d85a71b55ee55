"""Does shipping logs to logdy cost requests anything, even when logdy is away or stalled?

Starts Redis, one emulated ComfyUI and four comfy-services on it, identical but for logging:
shipping off, logdy absent (nothing listens on the port), logdy stalled (accepts but never
reads, so socket buffers fill up) and logdy live. This process sends the same submits to the
four services in turn (so all see the same machine load) and compares their latencies; every
submit makes each service write several log lines (its own and ComfyUI's).

    ./dev bench logging_overhead --requests 300
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
from _common import Latencies, print_table

from comfy_stack.embedded_redis import start_redis_server
from comfy_stack.ports import free_port
from comfy_testkit.graphs import solid_image
from comfy_testkit.line_listener import LineListener
from comfy_testkit.stack import (
    TEST_INTERNAL_TOKEN,
    RunningComponent,
    start_emulator_process,
    start_service_process,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="submits per configuration")
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args()

    auth = {"Authorization": f"Bearer {TEST_INTERNAL_TOKEN}"}  # what every service requires
    with services_by_logging() as services, httpx.Client(timeout=30, headers=auth) as http:
        for index in range(args.warmup):
            for url in services.values():
                _submit(http, url, f"w{index}")
        samples: dict[str, list[float]] = {name: [] for name in services}
        for index in range(args.requests):
            for name, url in services.items():
                started = time.perf_counter()
                _submit(http, url, str(index))
                samples[name].append((time.perf_counter() - started) * 1000)
    rows = [Latencies(name, values, sum(values) / 1000) for name, values in samples.items()]
    print_table(rows, rows[0])
    off = rows[0]
    worst = max(rows[1:], key=lambda row: row.p99)
    print(
        f"summary: submit p50/p99 with shipping off {off.p50:.2f}/{off.p99:.2f} ms; worst "
        f"logdy case ({worst.name}) {worst.p50:.2f}/{worst.p99:.2f} ms "
        f"(p50 x{worst.p50 / off.p50:.2f})"
    )


def _submit(http: httpx.Client, service_url: str, tag: str) -> None:
    body = {"prompt": solid_image(f"log/{tag}-{uuid.uuid4().hex[:6]}")}
    http.post(f"{service_url}/api/v1/generate", json=body).raise_for_status()


@contextmanager
def services_by_logging() -> Iterator[dict[str, str]]:
    with tempfile.TemporaryDirectory(prefix="comfy-bench-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        redis = start_redis_server(root)
        stack.callback(redis.stop)
        emulator = start_emulator_process(root / "logs", root / "emu", extra_args=["--quiet"])
        stack.callback(emulator.stop)
        stalled = stack.enter_context(LineListener(read=False))
        live = stack.enter_context(LineListener())
        targets = {
            "logdy off": None,
            "logdy absent (port closed)": f"127.0.0.1:{free_port()}",
            "logdy stalled (never reads)": f"127.0.0.1:{stalled.port}",
            "logdy live": f"127.0.0.1:{live.port}",
        }
        services: dict[str, str] = {}
        for index, (name, logdy) in enumerate(targets.items()):
            service = _service(root, redis.url, emulator, f"node-{index}", logdy)
            stack.callback(service.stop)
            services[name] = service.url
        yield services


def _service(
    root: Path, redis_url: str, emulator: RunningComponent, node_id: str, logdy: str | None
) -> RunningComponent:
    return start_service_process(
        root / "logs",
        redis_url=redis_url,
        comfyui_url=emulator.url,
        node_id=node_id,
        extra_args=["--logdy", logdy] if logdy else [],
    )


if __name__ == "__main__":
    main()
