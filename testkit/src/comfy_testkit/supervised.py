"""A service that supervises its ComfyUI (``--comfyui-command``): the emulator as its child.

The service logs JSON lines, so a test reads what it logged, with every field."""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from comfy_stack.ports import free_port
from comfy_testkit.plugin import ServiceFactory
from comfy_testkit.stack import FAST_LOAD_SCALE, FAST_STEP_TIME_S, RunningComponent
from comfy_testkit.waiting import wait_for_condition


@dataclass
class Supervised:
    service: RunningComponent
    comfyui_url: str
    data_dir: Path
    """The emulator's data (``output/`` holds what every run saved, across its restarts)."""

    def comfyui(self) -> psutil.Process:
        """The service's one child: its ComfyUI."""
        (child,) = psutil.Process(self.service.process.pid).children()
        return child

    def log(self) -> list[dict[str, Any]]:
        """The service's log records."""
        lines = self.service.process.output().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def logged(self, message: str) -> list[dict[str, Any]]:
        return [record for record in self.log() if record["message"] == message]

    async def events_followed(self, connections: int = 1) -> None:
        """Wait until the service follows ComfyUI's events (``connections`` times so far): a
        task that runs before has nobody to name it on ComfyUI's lines."""

        async def connected() -> bool:
            return len(self.logged("comfyui websocket connected")) >= connections

        await wait_for_condition(connected, timeout_s=10, what="events followed")


async def start_supervised(
    start_service: ServiceFactory,
    data_dir: Path,
    *service_args: str,
    node_id: str = "node-a",
) -> Supervised:
    """A ready service whose ComfyUI (the emulator) it started, and follows the events of."""
    port = free_port()
    command = shlex.join(
        [
            sys.executable, "-m", "comfy_emulator",
            "--port", str(port),
            "--data-dir", str(data_dir),
            "--step-time", str(FAST_STEP_TIME_S),
            "--load-scale", str(FAST_LOAD_SCALE),
        ]
    )  # fmt: skip
    service = start_service(
        f"http://127.0.0.1:{port}",
        node_id=node_id,
        extra_args=["--comfyui-command", command, "--log-json", *service_args],
    )
    supervised = Supervised(service, f"http://127.0.0.1:{port}", data_dir)
    await supervised.events_followed()
    return supervised
