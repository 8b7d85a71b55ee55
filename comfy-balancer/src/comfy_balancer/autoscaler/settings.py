"""Autoscaler settings: flags, ``COMFY_AUTOSCALER_*`` variables or ``.env``.

List and mapping settings are JSON in the environment (``COMFY_AUTOSCALER_GPUS='["0","1"]'``);
as flags, a list is repeated (``--gpus 0 --gpus 1``) and a mapping is JSON (``--env '{...}'``).
The container templates (``command``, ``env``, ``comfyui_command``, ``comfyui_env``) may hold
``{node_id}``, ``{gpu}`` and ``{redis_url}``, replaced for each node; those and ``network`` and
``volumes`` may hold ``{compose_project}``, the compose project the autoscaler runs in (read
from its own container's labels), whose network and volumes are named after it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from comfy_balancer.autoscaler.policy import ScalingLimits
from comfy_shared.settings import CommonSettings

ENV_PREFIX = "COMFY_AUTOSCALER_"


class AutoscalerSettings(CommonSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    # --- policy
    gpus: list[str] = Field(
        default=["0"],
        min_length=1,
        description="GPU device ids (indexes or GPU-UUIDs) to hand out, one per node, in this "
        "order; a node's id is --node-prefix and its GPU id.",
    )
    min_nodes: int = Field(default=1, ge=0, description="Nodes kept running even when idle.")
    max_nodes: int = Field(default=4, ge=1, description="Most nodes run at once.")
    target_wait_s: float = Field(
        default=60.0,
        gt=0,
        description="Predicted queue wait (the balancer's ETA of the last waiting task) above "
        "which nodes are started.",
    )
    idle_s: float = Field(
        default=300.0, ge=0, description="How long a node is idle before it is drained."
    )
    up_cooldown_s: float = Field(
        default=60.0, ge=0, description="Seconds after a scale-up before the next one."
    )
    down_cooldown_s: float = Field(
        default=300.0, ge=0, description="Seconds after a scale-down before the next one."
    )
    boot_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="A started node not live (warm-up passed) after this many seconds is "
        "removed and its GPU handed out again.",
    )
    restart_grace_s: float = Field(
        default=60.0,
        ge=0,
        description="A node whose container stopped is removed (its GPU handed out again) "
        "only after this many seconds: the engine restarts crashed containers, and all of "
        "them after its own restart.",
    )
    interval_s: float = Field(default=5.0, gt=0, description="Seconds between two decisions.")
    slots_per_node: int = Field(
        default=2, ge=1, description="The balancer's --slots-per-node (busy vs ready)."
    )
    node_prefix: str = Field(
        default="gpu-",
        pattern=r"^[A-Za-z0-9_.-]{0,32}$",
        description="Prefix of the node ids the autoscaler gives its nodes.",
    )

    # --- Docker
    docker_url: str | None = Field(
        default=None,
        description="Docker Engine API (unix:///var/run/docker.sock, tcp://HOST:2375); unset: "
        "DOCKER_HOST or the local socket.",
    )
    scope: str = Field(
        default="comfy-stack",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Value of the label comfy-stack.autoscaler on every container it creates: "
        "it only ever touches containers with this label and value, and finds them again "
        "after its own restart by it. Also the start of their names.",
    )
    image: str = Field(
        default="comfy-stack/service:latest", description="Image of a node's comfy-service."
    )
    command: list[str] = Field(
        default=[], description="comfy-service's arguments (template; []: the image's)."
    )
    env: dict[str, str] = Field(
        default={}, description="comfy-service's environment (template values)."
    )
    pass_env: list[str] = Field(
        default=["COMFY_SERVICE_", "COMFY_INTERNAL_TOKEN"],
        description="Variables of the autoscaler's own environment copied into every "
        "comfy-service container (a name, or a prefix ending in _), under --env: one block "
        "of service settings serves the fixed nodes and the autoscaled ones.",
    )
    comfyui_image: str = Field(
        default="",
        description="Image of a node's ComfyUI, run beside the service, which shares its "
        "network (the service reaches it on 127.0.0.1); it gets the GPU. Empty: a node is the "
        "service container alone, which gets the GPU (e.g. with --comfyui-command).",
    )
    comfyui_command: list[str] = Field(default=[], description="ComfyUI's command (template).")
    comfyui_env: dict[str, str] = Field(default={}, description="ComfyUI's environment (template).")
    network: str = Field(
        default="",
        description="Docker network the nodes join, with their node id as host name (the "
        "balancer's and Redis's network). Empty: Docker's default bridge.",
    )
    volumes: list[str] = Field(
        default=[],
        description="Volumes of the service container, as VOLUME:/PATH[:ro] (e.g. the output "
        "store the balancer reads).",
    )
    tmpfs: dict[str, str] = Field(
        default={"/tmp": "size=64m,mode=1777"},
        description="tmpfs mounts of the service container (its root is read-only): path -> "
        "options.",
    )
    comfyui_tmpfs: dict[str, str] = Field(
        default={"/tmp": "size=64m,mode=1777"}, description="tmpfs mounts of the ComfyUI one."
    )
    labels: dict[str, str] = Field(default={}, description="Further labels of every container.")
    gpu_driver: Literal["nvidia", "none"] = Field(
        default="nvidia",
        description="nvidia: each node's GPU container gets its GPU as a Docker device "
        "request; none: only through the templates' {gpu} (machines without a GPU runtime).",
    )
    stop_timeout_s: int = Field(
        default=30,
        ge=0,
        description="Seconds a container has to stop (SIGTERM) before it is killed; its node is "
        "drained and idle by then.",
    )

    @field_validator("env", "comfyui_env", "tmpfs", "comfyui_tmpfs", "labels", mode="before")
    @classmethod
    def _mapping_from_json(cls, value: object) -> object:
        """A flag passes a mapping as JSON text (the environment is parsed by pydantic)."""
        return json.loads(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _min_below_max(self) -> AutoscalerSettings:
        if self.min_nodes > self.max_nodes:
            raise ValueError("min_nodes is larger than max_nodes")
        if len(set(self.gpus)) != len(self.gpus):
            raise ValueError("gpus lists a GPU twice")
        return self

    def passed_env(self, environ: Mapping[str, str]) -> dict[str, str]:
        """What of ``environ`` (the autoscaler's) goes into a service container."""
        prefixes = tuple(name for name in self.pass_env if name.endswith("_"))
        return {
            name: value
            for name, value in environ.items()
            if name in self.pass_env or name.startswith(prefixes)
        }

    @property
    def limits(self) -> ScalingLimits:
        return ScalingLimits(
            min_nodes=self.min_nodes,
            max_nodes=self.max_nodes,
            target_wait_s=self.target_wait_s,
            idle_s=self.idle_s,
            up_cooldown_s=self.up_cooldown_s,
            down_cooldown_s=self.down_cooldown_s,
            boot_timeout_s=self.boot_timeout_s,
            restart_grace_s=self.restart_grace_s,
            node_prefix=self.node_prefix,
        )
