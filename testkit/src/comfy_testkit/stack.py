"""Start our components as real processes on free ports, for integration and end-to-end tests.

Services and balancers get :data:`TEST_INTERNAL_TOKEN` unless told otherwise
(``internal_token=None`` starts them open), so every test runs them as a deployment does: a
client that calls a service directly sends :attr:`RunningComponent.auth_headers`.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from comfy_shared.settings import INTERNAL_TOKEN_ENV
from comfy_stack.ports import free_port
from comfy_stack.processes import ManagedProcess, wait_until_http_ok
from comfy_stack.waiting import ConditionTimeout
from comfy_testkit.forkserver import start_python_module

ADMIN_KEY = "testkit-admin-key-0123456789abcdef"
"""The admin key of every balancer the test kit starts (authentication is on, as deployed)."""
AUTH_HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}


def basic_auth(key: str = ADMIN_KEY, user: str = "me") -> dict[str, str]:
    """HTTP Basic with the key as the password: what ComfyUI scripts and libraries send."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


FAST_STEP_TIME_S = 0.01
"""Emulated sampler step time in tests: fast, yet long enough to see progress events."""
FAST_LOAD_SCALE = 0.01
"""Emulated model load times in tests, as a share of the real ones: an SDXL switch (8 s) takes
80 ms, so switches stay visible without slowing the suite. `--load-scale` in `extra_args` wins."""

SERVICE_PREFIX = "COMFY_SERVICE_"
BALANCER_PREFIX = "COMFY_BALANCER_"
"""Their settings' env_prefix (testkit does not import the apps it starts)."""

TEST_INTERNAL_TOKEN = secrets.token_urlsafe(32)
"""The internal token of every service and balancer started here, new for each test run."""


@dataclass
class RunningComponent:
    process: ManagedProcess
    url: str
    name: str
    auth_headers: dict[str, str] = field(default_factory=dict, repr=False)
    """What a client calling this process's API directly must send: a service's internal
    token, a balancer's admin key."""

    def stop(self) -> int:
        return self.process.stop()

    def kill(self) -> None:
        self.process.kill()


def start_emulator_process(
    log_dir: Path,
    data_dir: Path,
    *,
    name: str = "emulator",
    port: int | None = None,
    step_time_s: float = FAST_STEP_TIME_S,
    extra_args: Sequence[str] = (),
) -> RunningComponent:
    def start(port: int) -> RunningComponent:
        args = [
            "--host", "127.0.0.1",
            "--port", str(port),
            "--data-dir", str(data_dir),
            "--step-time", str(step_time_s),
            *([] if "--load-scale" in extra_args else ["--load-scale", str(FAST_LOAD_SCALE)]),
            *extra_args,
        ]  # fmt: skip
        process = start_python_module(name, "comfy_emulator", args, log_dir=log_dir)
        url = f"http://127.0.0.1:{port}"
        wait_until_http_ok(process, f"{url}/system_stats")
        return RunningComponent(process, url, name)

    return _on_port(port, start)


def start_service_process(
    log_dir: Path,
    *,
    redis_url: str,
    comfyui_url: str,
    node_id: str = "node-a",
    port: int | None = None,
    extra_args: Sequence[str] = (),
    wait_ready: bool = True,
    internal_token: str | None = TEST_INTERNAL_TOKEN,
    env: Mapping[str, str] | None = None,
) -> RunningComponent:
    """``env``: more environment for the process (e.g. a fake NVML, ``fake_nvml``)."""

    def start(port: int) -> RunningComponent:
        args = [
            "--redis-url", redis_url,
            "--comfyui-url", comfyui_url,
            "--node-id", node_id,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--health-interval-s", "0.5",
            "--outputs-dir", str(outputs_dir_for(log_dir)),
            *extra_args,
        ]  # fmt: skip
        process = start_python_module(
            f"service-{node_id}",
            "comfy_service",
            args,
            log_dir=log_dir,
            env={**_token_env(internal_token, SERVICE_PREFIX), **(env or {})},
        )
        url = f"http://127.0.0.1:{port}"
        wait_until_http_ok(process, f"{url}/readyz" if wait_ready else f"{url}/healthz")
        return RunningComponent(process, url, f"service-{node_id}", _bearer(internal_token))

    return _on_port(port, start)


def start_balancer_process(
    log_dir: Path,
    *,
    redis_url: str,
    name: str = "balancer",
    port: int | None = None,
    extra_args: Sequence[str] = (),
    admin_key: str | None = ADMIN_KEY,
    internal_token: str | None = TEST_INTERNAL_TOKEN,
) -> RunningComponent:
    """A balancer with authentication on and ``admin_key`` (None: authentication off)."""
    env = _token_env(internal_token, BALANCER_PREFIX)
    if admin_key is not None:
        env["COMFY_BALANCER_ADMIN_KEY"] = admin_key

    def start(port: int) -> RunningComponent:
        args = [
            "--redis-url", redis_url,
            "--node-id", name,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--sweep-interval-s", "0.2",
            "--outputs-dir", str(outputs_dir_for(log_dir)),
            *(["--auth", "off"] if admin_key is None else []),
            *extra_args,
        ]  # fmt: skip
        process = start_python_module(name, "comfy_balancer", args, log_dir=log_dir, env=env)
        url = f"http://127.0.0.1:{port}"
        wait_until_http_ok(process, f"{url}/readyz")
        return RunningComponent(process, url, name, _bearer(admin_key))

    return _on_port(port, start)


PORT_PICKS = 3


def _on_port(port: int | None, start: Callable[[int], RunningComponent]) -> RunningComponent:
    """Start on ``port``, or on a free one. Another test's listener may bind a free port in
    the moment between our pick and our child's bind: the child then exits at once (it binds
    before it starts up), and the next pick is tried. A port the test chose is its own."""
    if port is not None:
        return start(port)
    for _ in range(PORT_PICKS - 1):
        try:
            return start(free_port())
        except ConditionTimeout as exc:
            if "address already in use" not in str(exc).lower():
                raise
    return start(free_port())


def outputs_dir_for(log_dir: Path) -> Path:
    """The output store of the processes a test starts: one per test (beside their logs),
    shared by its services and balancers as a deployment's volume is."""
    return log_dir.parent / "outputs"


def _bearer(secret: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"} if secret else {}


def _token_env(internal_token: str | None, env_prefix: str) -> dict[str, str | None]:
    """The token goes in the environment, not on the command line (which every local user
    can read). Whatever this process's environment says is dropped: the test decides."""
    return {INTERNAL_TOKEN_ENV: internal_token, f"{env_prefix}INTERNAL_TOKEN": None}
