"""comfy-balancer settings: flags, ``COMFY_BALANCER_*`` variables or ``.env``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from comfy_shared.models import RetryPolicy
from comfy_shared.settings import CommonSettings

StrategyName = Literal["least-loaded", "round-robin", "random"]


class BalancerSettings(CommonSettings):
    model_config = SettingsConfigDict(
        env_prefix="COMFY_BALANCER_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    host: str = Field(default="127.0.0.1", description="Interface to listen on.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port to listen on.")
    strategy: StrategyName = Field(
        default="least-loaded", description="How to choose among nodes with a free slot."
    )
    slots_per_node: int = Field(
        default=2,
        ge=1,
        description="Tasks placed on one node at a time: 1 running + 1 waiting in ComfyUI's "
        "own queue, so the GPU never idles between tasks.",
    )
    max_queue: int = Field(
        default=10_000, ge=1, description="Pending tasks accepted; beyond, submit answers 429."
    )
    max_attempts: int = Field(
        default=3, ge=1, description="Placements a task gets before it fails (node lost, retry)."
    )
    retry_on: list[str] = Field(
        default_factory=lambda: ["OutOfMemoryError", "out of memory"],
        description="ComfyUI errors that are the node's fault, so the task runs again elsewhere "
        "(case-insensitive substrings of the exception type or message).",
    )
    dispatch_timeout_s: float = Field(
        default=30.0, gt=0, description="Timeout of one dispatch request to a node."
    )
    sweep_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between checks for dead nodes and stuck placements.",
    )
    lookahead: int = Field(
        default=64,
        ge=1,
        description="Queue head size considered per dispatch round (tasks no free node can "
        "run are skipped, so they do not block the ones behind them).",
    )
    nodes: list[str] = Field(
        default_factory=list,
        description="Optional static list of node ids to use; empty = every node that "
        "publishes health.",
    )
    retention_s: int = Field(
        default=24 * 3600, gt=0, description="Seconds a finished task is kept in Redis."
    )
    events_maxlen: int = Field(default=1000, ge=10, description="Events kept per task.")
    max_body_bytes: int = Field(
        default=50 * 1024 * 1024, gt=0, description="Largest request body accepted (413 above)."
    )
    shutdown_grace_s: float = Field(
        default=5.0, ge=0, description="Seconds to finish requests on shutdown."
    )

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_attempts=self.max_attempts, retry_on=self.retry_on)
