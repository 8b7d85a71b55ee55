"""A running cluster for tests: emulators, services, a balancer and clients to all of them."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from comfy_testkit.emulator_control import EmulatorControl
from comfy_testkit.stack import RunningComponent


@dataclass
class Node:
    node_id: str
    emulator: RunningComponent
    service: RunningComponent
    control: EmulatorControl

    def kill(self) -> None:
        self.service.kill()
        self.emulator.kill()


@dataclass
class Cluster:
    balancer: RunningComponent
    nodes: list[Node]
    api: httpx.AsyncClient

    def node(self, node_id: str) -> Node:
        return next(node for node in self.nodes if node.node_id == node_id)
