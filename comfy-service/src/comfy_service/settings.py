"""comfy-service settings: flags, ``COMFY_SERVICE_*`` variables or ``.env``."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AliasChoices, BeforeValidator, Field, model_validator
from pydantic_settings import SettingsConfigDict

from comfy_shared.settings import ApiServerSettings, InternalToken, internal_token_field

ENV_PREFIX = "COMFY_SERVICE_"


def _json_object(value: Any) -> Any:
    """A flag's value is text: JSON for an object (the environment's is decoded already)."""
    return json.loads(value) if isinstance(value, str) else value


class ServiceSettings(ApiServerSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    comfyui_url: str = Field(
        default="http://127.0.0.1:8188",
        pattern=r"^https?://",
        validation_alias=AliasChoices(f"{ENV_PREFIX}COMFYUI_URL", "COMFYUI_URL"),
        description="Base URL of the one ComfyUI this service wraps (also read from COMFYUI_URL).",
    )
    port: int = Field(default=8100, ge=0, le=65535, description="Port to listen on.")
    internal_token: InternalToken | None = internal_token_field(
        ENV_PREFIX,
        "Bearer token every /api/v1 request must carry (the balancer sends it); /healthz and "
        "/readyz stay open. Unset: the API is open to anyone who can reach the port (fine on "
        "127.0.0.1 or a private network; a WARNING at start otherwise). Pass it in the "
        "environment: a command line is visible to every user of the machine.",
    )
    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="URL under which the balancer reaches this service (default http://HOST:PORT).",
    )
    health_interval_s: float = Field(
        default=2.0, gt=0, description="Seconds between two health documents in Redis."
    )
    comfyui_timeout_s: float = Field(
        default=30.0, gt=0, description="Timeout of one HTTP request to ComfyUI."
    )
    max_concurrent_submits: int = Field(
        default=32,
        ge=1,
        description="Submits handled at once; more answer 503 overloaded with Retry-After "
        "right away instead of queueing until something times out.",
    )
    start_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="Fail a task that has not started this long after reaching the queue head.",
    )
    stall_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="Fail a running task that shows no progress (node or step) for this long.",
    )
    task_timeout_s: float = Field(
        default=3600.0, gt=0, description="Fail a task that is not finished this long after submit."
    )
    comfyui_down_grace_s: float = Field(
        default=10.0,
        gt=0,
        description="Fail a task submitted straight to this node once its ComfyUI has been "
        "unreachable this long (the balancer takes its own tasks back at its own setting).",
    )
    ws_silence_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Reconnect a WebSocket that sent no frame this long while tasks run.",
    )
    reconcile_interval_s: float = Field(
        default=15.0,
        gt=0,
        description="Seconds between two safety-net reconciliations with ComfyUI's queue/history.",
    )

    # --- warm-up (comfy_service/warmup.py) ---
    warmup_workflow: str | None = Field(
        default=None,
        description="Workflow the node runs before it takes any task, at start and after "
        "every ComfyUI restart: a template name (see --templates-dir), or the path of an "
        "API-format graph ending in .json. The node is not ready until it passed; a failure "
        "shows as warm-up-failed and is tried again. Unset: ready at once.",
    )
    warmup_params: Annotated[dict[str, Any], BeforeValidator(_json_object)] = Field(
        default_factory=dict,
        description="The warm-up template's parameters as a JSON object, e.g. '{\"width\": 64}'.",
    )
    warmup_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="A warm-up not finished this long after it was queued has failed.",
    )

    @model_validator(mode="after")
    def _default_public_url(self) -> ServiceSettings:
        if self.public_url is None:
            self.public_url = f"http://{self.host}:{self.port}"
        return self

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def health_ttl_s(self) -> int:
        """About three intervals: one lost write does not make the node look dead."""
        return max(2, round(self.health_interval_s * 3))
