"""comfy-balancer settings: flags, ``COMFY_BALANCER_*`` variables or ``.env``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from comfy_balancer.object_info_merge import MergeMode
from comfy_balancer.webhooks.signing import check_signing_secret
from comfy_shared.models import RetryPolicy
from comfy_shared.net_guard import AllowList
from comfy_shared.settings import ApiServerSettings, InternalToken, internal_token_field
from comfy_shared.task_queue import Replication

StrategyName = Literal[
    "earliest-finish",
    "earliest-finish-by-speed",
    "model-pressure",
    "least-loaded",
    "round-robin",
    "random",
]


ENV_PREFIX = "COMFY_BALANCER_"


class BalancerSettings(ApiServerSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    port: int = Field(default=8000, ge=0, le=65535, description="Port to listen on.")
    internal_token: InternalToken | None = internal_token_field(
        ENV_PREFIX,
        "Bearer token sent with every request to a comfy-service (placements, cancels, "
        "output downloads): the services' own --internal-token. Pass it in the environment: "
        "a command line is visible to every user of the machine.",
    )
    strategy: StrategyName = Field(
        default="earliest-finish",
        description="How to choose a node: earliest-finish (where the task would end first: "
        "the node's queued work, a model switch if its models will not be loaded, its learned "
        "run time there), earliest-finish-by-speed (the same without models), model-pressure "
        "(SwarmUI's rule: an idle node with the model, else load the most wanted model after "
        "1.5 s), least-loaded, round-robin, random.",
    )
    affinity_window_s: float = Field(
        default=20.0,
        ge=0,
        description="earliest-finish: the longest a task waits for a node that has its model "
        "loaded when that is sooner than loading it elsewhere; a node that would start it "
        "later gets no credit for its models.",
    )
    slots_per_node: int = Field(
        default=2,
        ge=1,
        description="Tasks placed on one node at a time: 1 running + 1 waiting in ComfyUI's "
        "own queue, so the GPU never idles between tasks.",
    )
    prefetch_lead_s: float = Field(
        default=0.5,
        ge=0,
        description="A busy node's extra slots take a task only once the work placed on it is "
        "expected to end within this many seconds: prefetch still hides the hand-over, and a "
        "task is bound to a node as late as possible, so a tenant who arrives meanwhile gets "
        "its turn. A large value fills the slots at once.",
    )
    max_queue: int = Field(
        default=10_000, ge=1, description="Pending tasks accepted; beyond, submit answers 429."
    )
    submit_replicas: int = Field(
        default=0,
        ge=0,
        description="Redis replicas that must hold a submitted task before the submit is "
        "answered (Redis WAIT, up to --submit-replication-timeout-ms): a promoted replica "
        "then has every task answered 202. Fewer in time: 503 not_replicated (the task was "
        "written and may run; submit again with the same id or Idempotency-Key). 0: answered "
        "once the primary has it.",
    )
    submit_replication_timeout_ms: int = Field(
        default=1000, ge=1, description="How long a submit waits for --submit-replicas."
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
    comfyui_down_grace_s: float = Field(
        default=10.0,
        gt=0,
        description="Take a node's tasks back (an attempt spent) once its ComfyUI has been "
        "unreachable this long; they run elsewhere.",
    )
    sweep_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between checks for dead nodes and stuck placements.",
    )
    queue_policy: Literal["fair", "fifo"] = Field(
        default="fair",
        description="Order inside a band: fair (tenants take turns weighted by predicted "
        "GPU-seconds and their key's weight) or fifo (priority, then arrival, for everyone).",
    )
    batch_max_wait_s: float = Field(
        default=600.0,
        gt=0,
        description="A batch task that waited this long is placed before every band: batch "
        "work never starves.",
    )
    outputs_redirect: bool = Field(
        default=False,
        description="Answer an output download with a redirect to a presigned URL when the "
        "store offers one (S3), instead of streaming it through the balancer.",
    )
    lookahead: int = Field(
        default=64,
        ge=1,
        description="Queue head size considered per dispatch round (tasks no free node can "
        "run are skipped, so they do not block the ones behind them).",
    )
    dispatch: bool = Field(
        default=True,
        description="Place queued tasks on nodes from this process. --no-dispatch makes a "
        "replica that only serves the API; at least one replica on the same Redis must place.",
    )
    comfyui_gateway: bool = Field(
        default=True,
        description="Also answer ComfyUI's own protocol at the root (/prompt, /queue, /history, "
        "/api/jobs, /view, /upload/image...), per API key's tenant, so ComfyUI clients run "
        "unchanged against the fleet. --no-comfyui-gateway serves /api/v1 only.",
    )
    object_info_merge: MergeMode = Field(
        default="union",
        description="How the nodes' object_info make the fleet's, which a graph is validated "
        "against at submit (422 prompt_rejected, as ComfyUI words it): union (every class "
        "and combo option, model files included, that some live node offers; a graph must "
        "still run whole on one node) or intersection (what every live node offers).",
    )
    nodes: list[str] = Field(
        default_factory=list,
        description="Optional static list of node ids to use; empty = every node that "
        "publishes health.",
    )

    auth: Literal["on", "off"] = Field(
        default="on",
        description="Require an API key on every /api/v1 route (health and docs stay open). "
        "'on' needs --admin-key; 'off' only for a trusted network, never published.",
    )
    admin_key: SecretStr | None = Field(
        default=None,
        description="The first admin key (creates the others: POST /api/v1/keys). Generate it "
        "with e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`.",
    )

    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Signing secret of the webhooks of tasks with no API key of their own "
        "(authentication off, or the admin key), Standard Webhooks format: whsec_ + base64 "
        "of 24 or more random bytes. Without it such tasks cannot have webhooks (422 "
        "webhook_unsigned). Pass it in the environment.",
    )
    webhook_allow: str = Field(
        default="",
        description="Comma-separated hosts and CIDR ranges webhooks may reach although they "
        "are not public (loopback, private, link-local...), and over plain http; e.g. "
        "'10.0.0.0/8,hooks.lan'. Empty: public https URLs only.",
    )
    webhook_retry_delays_s: list[Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 300.0, 600.0, 900.0, 1800.0],
        min_length=1,
        description="Waits between the delivery attempts of a webhook, one flag per wait "
        "(each with up to a tenth of jitter); after the last attempt fails, it is a dead "
        "letter. Default 5 30 120 300 600 900 1800: 8 attempts over about an hour.",
    )
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, description="Timeout of one webhook delivery attempt."
    )
    webhook_poll_s: float = Field(
        default=0.5, gt=0, description="Seconds between looks at the webhook outbox."
    )
    ws_queue_frames: int = Field(
        default=1024,
        ge=16,
        le=1_000_000,
        description="Frames waiting for one client of the ComfyUI WebSocket (/ws): a client "
        "further behind is closed (code 1013) rather than sent a stream with gaps; previews "
        "are dropped for a client half this far behind.",
    )

    ui: bool = Field(
        default=True,
        description="Serve ComfyUI's web frontend at / (the pinned comfyui-frontend-package) "
        "and a sign-in page that trades an API key for a session cookie. --no-ui turns both "
        "off; the ComfyUI routes (each tenant's settings and workflows included) stay.",
    )
    console: bool = Field(
        default=True,
        description="Serve the web console at /console: generate from a template, follow "
        "tasks, nodes, the queue and usage, and (admin) API keys, with the sign-in page. "
        "--no-console turns it off.",
    )
    ui_cookie_secure: Literal["auto", "always"] = Field(
        default="auto",
        description="The Secure flag of the sign-in cookie: auto sets it on requests that came "
        "over https (as uvicorn sees them: a TLS proxy on another host must be trusted for its "
        "X-Forwarded-Proto, else use always); plain http (development) gets a cookie without it.",
    )
    ui_session_s: int = Field(
        default=12 * 3600,
        ge=60,
        le=90 * 24 * 3600,
        description="How long a browser sign-in lasts, in seconds (signing out ends it sooner; "
        "revoking the key ends it within two seconds).",
    )
    ui_reference_node: str | None = Field(
        default=None,
        description="The node whose ComfyUI serves the frontend extensions (custom nodes' "
        "JavaScript, /extensions/...); unset: the first live node in id order. Every node "
        "should run the same custom nodes.",
    )
    ui_userdata_max_file_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest userdata file (a saved workflow, a template) a tenant may store.",
    )
    ui_userdata_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="Bytes of userdata files one tenant may keep in Redis, all together.",
    )
    ui_userdata_max_files: int = Field(
        default=1000, ge=1, description="Userdata files one tenant may keep."
    )

    @field_validator("webhook_secret")
    @classmethod
    def _standard_webhooks_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None:
            check_signing_secret(secret.get_secret_value())
        return secret

    @field_validator("webhook_allow")
    @classmethod
    def _allow_list(cls, allow: str) -> str:
        AllowList.parse(allow)
        return allow

    def webhook_allow_list(self) -> AllowList:
        return AllowList.parse(self.webhook_allow)

    @model_validator(mode="after")
    def _a_way_in(self) -> BalancerSettings:
        if self.auth == "on" and self.admin_key is None:
            raise ValueError(
                "authentication is on but no admin key is set: set COMFY_BALANCER_ADMIN_KEY, "
                "or COMFY_BALANCER_AUTH=off on a trusted network"
            )
        if self.admin_key is not None and len(self.admin_key.get_secret_value()) < 16:
            raise ValueError("the admin key must be at least 16 characters")
        return self

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_attempts=self.max_attempts, retry_on=self.retry_on)

    def replication(self) -> Replication | None:
        """What a submit waits for (None: no replica)."""
        if not self.submit_replicas:
            return None
        return Replication(self.submit_replicas, self.submit_replication_timeout_ms)
