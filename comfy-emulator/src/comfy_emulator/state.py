"""Process state of the emulated ComfyUI, split by lifetime.

`Services` lives as long as the emulator (configuration, node catalogue, folders, log buffer,
fault switches, statistics, model costs). `ComfyState` is what a ComfyUI process holds in memory
and loses when it restarts: the queue and history, the output cache, the models resident in
VRAM, the open sockets, the prompt counter, the interrupt flag and log subscriptions. An
emulated restart replaces the whole `ComfyState`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from comfy_emulator.cache import OutputCache
from comfy_emulator.config import EmulatorConfig
from comfy_emulator.faults import Faults, Stats
from comfy_emulator.files import Folders
from comfy_emulator.hub import SocketHub
from comfy_emulator.logbuffer import LogBuffer
from comfy_emulator.model_memory import ModelCatalogue, ResidentModels
from comfy_emulator.nodes.base import NodeEnv, NodeRegistry
from comfy_emulator.prompt_queue import PromptQueue


class InterruptProcessing(Exception):
    """Raised at a node start or progress step when an interrupt is pending."""


class InterruptFlag:
    """comfy.model_management's interrupt flag, plus a way to wait for it."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """throw_exception_if_processing_interrupted: raise once and reset."""
        if self._event.is_set():
            self._event.clear()
            raise InterruptProcessing()

    async def wait(self) -> None:
        await self._event.wait()


@dataclass
class Timing:
    """Simulated durations, adjustable at run time through /emulator/timing."""

    speed: float  # multiplies speed: 2.0 halves every simulated duration
    step_time: float  # seconds per KSampler step at speed 1.0
    node_time: dict[str, float]  # class_type -> extra seconds per execution at speed 1.0
    load_scale: float  # multiplies every model load time

    @classmethod
    def from_config(cls, config: EmulatorConfig) -> Timing:
        return cls(config.speed, config.step_time, dict(config.node_time), config.load_scale)

    def snapshot(self) -> dict[str, Any]:
        return {
            "speed": self.speed,
            "step_time": self.step_time,
            "node_time": dict(self.node_time),
            "load_scale": self.load_scale,
        }

    def load_seconds(self, load_s: float) -> float:
        """The time a model load of `load_s` (at scale and speed 1.0) takes now."""
        return load_s * self.load_scale / self.speed


@dataclass
class Services:
    config: EmulatorConfig
    registry: NodeRegistry
    env: NodeEnv
    logs: LogBuffer
    faults: Faults
    stats: Stats
    timing: Timing
    catalogue: ModelCatalogue

    @property
    def folders(self) -> Folders:
        return self.env.folders


class LogSubscriptions:
    """The terminal service: sids that asked for `logs` messages, and the reported size."""

    def __init__(self, hub: SocketHub) -> None:
        self._hub = hub
        self.sids: set[str] = set()
        self._size: tuple[int, int] | None = None

    def size_change(self) -> dict[str, int] | None:
        """{"cols", "rows"} the first time (the terminal size "changed"), then None."""
        if self._size is not None:
            return None
        self._size = (80, 24)
        return {"cols": 80, "rows": 24}

    def current_size(self) -> dict[str, int]:
        self.size_change()
        return {"cols": 80, "rows": 24}

    def on_entries(self, entries: list[Any]) -> None:
        if not self.sids:
            return
        size = self.size_change()
        for sid in list(self.sids):
            if sid not in self._hub.connections:
                self.sids.discard(sid)  # the socket is gone: unsubscribe automatically
                continue
            self._hub.emit("logs", {"entries": entries, "size": size}, sid)


@dataclass
class ComfyState:
    queue: PromptQueue
    hub: SocketHub
    cache: OutputCache
    models: ResidentModels
    log_subscriptions: LogSubscriptions
    interrupt: InterruptFlag = field(default_factory=InterruptFlag)
    number: int = 0  # PromptServer.number: bumped for every POST /prompt without "number"
    client_id: str | None = None  # client of the running prompt
    last_node_id: str | None = None  # node the running prompt is executing
    free_flags: dict[str, bool] = field(default_factory=dict)
    worker_busy: bool = False
