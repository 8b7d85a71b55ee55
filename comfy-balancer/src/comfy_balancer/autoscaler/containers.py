"""Node containers through the Docker Engine API (the ``docker`` package): list, start, remove.

A node is one container (comfy-service, which then runs ComfyUI itself) or two: ComfyUI,
which gets the GPU, and comfy-service in ComfyUI's network namespace (it reaches ComfyUI on
127.0.0.1; the balancer reaches it under the node id, ComfyUI's alias on the network). Every
container carries the labels below; only containers with this autoscaler's ``scope`` are ever
listed or touched, and they are found again by those labels after any restart. The calls are
blocking (the ``docker`` package uses requests): the loop runs them in a thread.
"""

from __future__ import annotations

import socket
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import docker
from docker.models.containers import Container
from docker.types import DeviceRequest
from loguru import logger

from comfy_balancer.autoscaler.settings import AutoscalerSettings

SCOPE_LABEL: Final = "comfy-stack.autoscaler"
NODE_LABEL: Final = "comfy-stack.node"
GPU_LABEL: Final = "comfy-stack.gpu"
ROLE_LABEL: Final = "comfy-stack.role"
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
COMPOSE_PROJECT: Final = "{compose_project}"
"""Placeholder of the network, volume and environment settings: the compose project the
autoscaler itself runs in (its networks and volumes are named after it)."""


@dataclass(frozen=True, slots=True)
class NodeContainer:
    """A node as its containers show it."""

    node_id: str
    gpu: str
    running: bool
    """Every container of the node runs (and it has all of them)."""
    started_at: datetime
    """When its latest container (re)started; a never started one counts from its creation."""
    names: tuple[str, ...]
    stopped_at: datetime | None = None
    """Not running: when the last of its stopped containers stopped (the epoch when one is
    missing)."""


class NodeContainers(Protocol):
    """What the autoscaler does with containers; :class:`DockerNodes` does it for real."""

    def nodes(self) -> list[NodeContainer]: ...

    def start(self, node_id: str, gpu: str) -> None: ...

    def remove(self, node_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """One container of a node, ready for ``containers.run``."""

    role: str
    name: str
    options: dict[str, Any]
    network: str = ""
    shares_network: bool = False
    """It joins the network namespace of the node's first container."""


class DockerNodes:
    """Node containers of one scope on one Docker engine."""

    def __init__(
        self,
        connect: Callable[[], docker.DockerClient],
        settings: AutoscalerSettings,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """``connect`` is called at the first use: a client asks the engine its API version
        when it is made, and the engine may be down when the autoscaler starts. ``environ``:
        the autoscaler's environment, for ``--pass-env``."""
        self._connect = connect
        self._connected: docker.DockerClient | None = None
        self._settings = settings
        self._passed_env = settings.passed_env(environ or {})
        self._project: str | None = None

    @property
    def _client(self) -> docker.DockerClient:
        if self._connected is None:
            self._connected = self._connect()
        return self._connected

    def nodes(self) -> list[NodeContainer]:
        by_node: dict[str, list[Container]] = defaultdict(list)
        for container in self._client.containers.list(all=True, filters=self._scope_filter()):
            by_node[container.labels.get(NODE_LABEL, "")].append(container)
        roles = len(node_specs(self._settings, "n", "0", "redis://"))
        return [
            _node_of(node_id, containers, roles)
            for node_id, containers in sorted(by_node.items())
            if node_id
        ]

    def start(self, node_id: str, gpu: str) -> None:
        """Create and start the node's containers; on a failure, those already created are
        removed and the error raised."""
        started: list[Container] = []
        specs = node_specs(
            self._settings,
            node_id,
            gpu,
            self._settings.redis_url,
            self._compose_project(),
            self._passed_env,
        )
        try:
            for spec in specs:
                options = dict(spec.options)
                if spec.shares_network:
                    options["network_mode"] = f"container:{started[0].id}"
                started.append(self._run(spec, options))
        except Exception:
            for container in reversed(started):
                container.remove(force=True)
            raise

    def remove(self, node_id: str) -> None:
        """Stop (SIGTERM, then SIGKILL after --stop-timeout-s) and remove the node's
        containers, the service first."""
        filters = self._scope_filter(f"{NODE_LABEL}={node_id}")
        containers = self._client.containers.list(all=True, filters=filters)
        for container in sorted(containers, key=lambda c: c.labels.get(ROLE_LABEL) != "service"):
            container.stop(timeout=self._settings.stop_timeout_s)
            container.remove(force=True)

    def _compose_project(self) -> str:
        """The compose project the autoscaler runs in (read from its own container's labels
        once), for settings naming the project's network and volumes; "" when none does."""
        settings = self._settings
        named = [
            settings.network,
            *settings.volumes,
            *settings.env.values(),
            *settings.comfyui_env.values(),
        ]
        if self._project is None and any(COMPOSE_PROJECT in text for text in named):
            own = self._client.containers.get(socket.gethostname())
            self._project = own.labels.get("com.docker.compose.project", "")
        return self._project or ""

    def _run(self, spec: ContainerSpec, options: dict[str, Any]) -> Container:
        network = spec.network
        if network and "network_mode" not in options:
            alias = self._client.api.create_endpoint_config(aliases=[options["labels"][NODE_LABEL]])
            options |= {"network": network, "networking_config": {network: alias}}
        container: Container = self._client.containers.run(name=spec.name, detach=True, **options)
        logger.debug("container started", container=spec.name, role=spec.role)
        return container

    def _scope_filter(self, *more: str) -> dict[str, str | list[str] | bool]:
        return {"label": [f"{SCOPE_LABEL}={self._settings.scope}", *more]}


def node_specs(
    settings: AutoscalerSettings,
    node_id: str,
    gpu: str,
    redis_url: str,
    compose_project: str = "",
    passed_env: Mapping[str, str] | None = None,
) -> list[ContainerSpec]:
    """The containers of the node ``node_id`` on ``gpu``, in start order; the first one gets
    the GPU (and the network alias), a second one shares its network. The service's
    environment is ``passed_env`` (from the autoscaler's own) under the ``env`` templates."""
    values = {
        "{node_id}": node_id,
        "{gpu}": gpu,
        "{redis_url}": redis_url,
        COMPOSE_PROJECT: compose_project,
    }
    service = _spec(
        settings,
        "service",
        node_id,
        gpu,
        compose_project,
        image=settings.image,
        command=[_fill(arg, values) for arg in settings.command] or None,
        environment={
            key: _fill(value, values)
            for key, value in {**(passed_env or {}), **settings.env}.items()
        },
        volumes=[_fill(volume, values) for volume in settings.volumes],
        tmpfs=dict(settings.tmpfs),
    )
    if not settings.comfyui_image:
        return [_with_gpu(service, settings, gpu)]
    comfyui = _spec(
        settings,
        "comfyui",
        node_id,
        gpu,
        compose_project,
        image=settings.comfyui_image,
        command=[_fill(arg, values) for arg in settings.comfyui_command] or None,
        environment={key: _fill(value, values) for key, value in settings.comfyui_env.items()},
        tmpfs=dict(settings.comfyui_tmpfs),
    )
    return [_with_gpu(comfyui, settings, gpu), replace(service, shares_network=True)]


def _spec(
    settings: AutoscalerSettings,
    role: str,
    node_id: str,
    gpu: str,
    compose_project: str,
    **options: Any,
) -> ContainerSpec:
    labels = {
        **settings.labels,
        SCOPE_LABEL: settings.scope,
        NODE_LABEL: node_id,
        GPU_LABEL: gpu,
        ROLE_LABEL: role,
    }
    hardening = {
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        # The engine starts it again after a crash or its own restart; a stop by the
        # autoscaler is followed by a removal, so nothing comes back unasked.
        "restart_policy": {"Name": "unless-stopped"},
        "log_config": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}},
    }
    name = f"{settings.scope}-{node_id}-{role}"
    network = settings.network.replace(COMPOSE_PROJECT, compose_project)
    return ContainerSpec(role, name, {**hardening, **options, "labels": labels}, network)


def _with_gpu(spec: ContainerSpec, settings: AutoscalerSettings, gpu: str) -> ContainerSpec:
    if settings.gpu_driver == "nvidia":
        request = DeviceRequest(driver="nvidia", device_ids=[gpu], capabilities=[["gpu"]])
        spec.options["device_requests"] = [request]
    return spec


def _fill(template: str, values: Mapping[str, str]) -> str:
    """The template with its placeholders replaced (other braces, e.g. JSON, left alone)."""
    for placeholder, value in values.items():
        template = template.replace(placeholder, value)
    return template


def _node_of(node_id: str, containers: Sequence[Container], roles: int) -> NodeContainer:
    started = [_started_at(container) for container in containers]
    stopped = [_stopped_at(c) for c in containers if not c.attrs.get("State", {}).get("Running")]
    if len(containers) != roles:
        stopped.append(EPOCH)
    return NodeContainer(
        node_id=node_id,
        gpu=containers[0].labels.get(GPU_LABEL, ""),
        running=not stopped,
        started_at=max(started),
        names=tuple(sorted(container.name or "" for container in containers)),
        stopped_at=max(stopped) if stopped else None,
    )


def _stopped_at(container: Container) -> datetime:
    finished = container.attrs.get("State", {}).get("FinishedAt", "")
    if not finished or finished.startswith("0001-"):  # created, never started
        finished = container.attrs.get("Created", "")
    return parse_docker_time(finished)


def _started_at(container: Container) -> datetime:
    started = container.attrs.get("State", {}).get("StartedAt", "")
    if not started or started.startswith("0001-"):  # created, never started
        started = container.attrs.get("Created", "")
    return parse_docker_time(started)


def parse_docker_time(text: str) -> datetime:
    """Docker's RFC 3339 times carry nanoseconds, more than ``fromisoformat`` reads."""
    head, _, fraction = text.rstrip("Z").partition(".")
    digits = "".join(char for char in fraction if char.isdigit())[:6]
    moment = datetime.fromisoformat(f"{head}.{digits or '0'}")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
