"""``comfy-stack up``: a whole cluster on one machine.

Starts (unless told to use existing ones) an embedded Redis and N ComfyUI emulators, then one
comfy-service per ComfyUI and the balancer, waits until everything answers, prints the URLs,
shows every component's log in one view (this run's lines only: the previous run's files are
kept as ``<name>.previous.log``), and on Ctrl-C (SIGINT) or SIGTERM stops everything cleanly
(the balancer first, Redis last). Enter or SIGUSR1 prints the URLs again.

Only the balancer listens on ``--host``; the emulators, services and Redis stay on loopback,
where only the balancer reaches them. While the stack runs, ``<data dir>/url`` holds the
balancer's address for the command-line client run from the same folder.

Each run draws a new internal token: the services answer their API only to the balancer (and to
whoever reads ``<data dir>/internal-token``, a file only its owner can read).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from comfy_stack.credentials import STACK_URL_FILE, load_or_create_admin_key
from comfy_stack.embedded_redis import start_redis_server
from comfy_stack.logview import LogView
from comfy_stack.ports import free_port
from comfy_stack.processes import ManagedProcess, start_python_module, wait_until_http_ok

INTERNAL_TOKEN_ENV = "COMFY_INTERNAL_TOKEN"
"""Read by comfy-service and comfy-balancer (comfy_shared.settings, which we do not import)."""
LOOPBACK = "127.0.0.1"


class LaunchError(Exception):
    """The stack could not start; the message says why and what to do."""


@dataclass(frozen=True)
class StackPlan:
    data_dir: Path
    emulators: int = 2
    comfyui_urls: tuple[str, ...] = ()
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    step_time_s: float = 0.05
    templates_dir: Path | None = None
    logdy: str | None = None
    """HOST:PORT of an existing logdy's socket input, for the services and the balancer."""
    # The emulators' model load times as a share of real ones. A step of 0.05 s is about a third
    # of a real SDXL step (~0.15 s on a 4090), so loads get the same share: an SDXL switch takes
    # 2.4 s instead of 8 s, keeping switches as costly next to sampling as on a real GPU.
    load_scale: float = 0.3


@dataclass
class RunningStack:
    redis_url: str
    data_dir: Path
    bind_address: str = ""
    logdy: str | None = None
    balancer_url: str = ""
    admin_key: str = ""
    comfyui_urls: list[str] = field(default_factory=list)
    service_urls: list[str] = field(default_factory=list)
    processes: list[ManagedProcess] = field(default_factory=list)
    internal_token: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    internal_token_file: Path | None = None

    def first_dead(self) -> ManagedProcess | None:
        return next((p for p in self.processes if not p.is_running()), None)


def insecure_binding_warning(plan: StackPlan, environ: dict[str, str] | None = None) -> str:
    """Why binding the balancer as planned is risky, or "" when it is not: on an address
    other machines reach, with authentication turned off (``COMFY_BALANCER_AUTH=off``)."""
    auth = (environ if environ is not None else os.environ).get("COMFY_BALANCER_AUTH", "on")
    if auth.lower() != "off" or _is_loopback(plan.host):
        return ""
    return (
        f"the balancer listens on {plan.host} with COMFY_BALANCER_AUTH=off: anyone who "
        "reaches this machine can submit, cancel and read every task"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def connect_host(bind_host: str) -> str:
    """Where a client on this machine reaches a server bound to ``bind_host``."""
    if bind_host in ("0.0.0.0", ""):
        return LOOPBACK
    if bind_host == "::":
        return "[::1]"
    return f"[{bind_host}]" if ":" in bind_host else bind_host


def ensure_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise LaunchError(
                f"port {port} on {host} is already in use ({exc.strerror}); stop what listens "
                "there or choose another port with --port"
            ) from None


@contextmanager
def running_stack(plan: StackPlan, view: LogView) -> Iterator[RunningStack]:
    """Start every component; stop all of them on exit, whatever happened."""
    ensure_port_free(plan.host, plan.port)
    stack = RunningStack(redis_url=plan.redis_url or "", data_dir=plan.data_dir, logdy=plan.logdy)
    url_file = plan.data_dir / STACK_URL_FILE
    try:
        _start_components(plan, stack, view)
        url_file.write_text(stack.balancer_url + "\n")
        yield stack
    finally:
        url_file.unlink(missing_ok=True)
        for process in reversed(stack.processes):
            process.stop()


def rotate_logs(logs: Path) -> None:
    """Keep each component's previous log as ``<name>.previous.log``, so this run's view
    starts empty instead of replaying what earlier runs wrote."""
    for log in logs.glob("*.log"):
        if not log.name.endswith(".previous.log"):
            log.replace(log.with_name(f"{log.stem}.previous.log"))


def _start_components(plan: StackPlan, stack: RunningStack, view: LogView) -> None:
    logs = plan.data_dir / "logs"
    rotate_logs(logs)
    stack.internal_token_file = _write_private(
        plan.data_dir / "internal-token", stack.internal_token
    )
    if not plan.redis_url:
        redis_dir = plan.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        redis = start_redis_server(redis_dir, persistent=True)
        _track(stack, view, redis.process)
        stack.redis_url = redis.url
    stack.comfyui_urls = list(plan.comfyui_urls) or [
        _start_emulator(plan, stack, view, index) for index in range(plan.emulators)
    ]
    for index, comfyui_url in enumerate(stack.comfyui_urls):
        port = free_port(LOOPBACK)
        node_id = f"node-{index + 1}"
        args = [
            "--comfyui-url", comfyui_url,
            "--redis-url", stack.redis_url,
            "--node-id", node_id,
            "--host", LOOPBACK,
            "--port", str(port),
            "--outputs-dir", str(plan.data_dir / "outputs"),
            *_shared_flags(plan),
        ]  # fmt: skip
        process = start_python_module(
            node_id, "comfy_service", args, log_dir=logs, env=_token_env(stack)
        )
        _track(stack, view, process)
        url = f"http://{LOOPBACK}:{port}"
        wait_until_http_ok(process, f"{url}/healthz", timeout_s=60)
        stack.service_urls.append(url)
    _start_balancer(plan, stack, view)


def _start_balancer(plan: StackPlan, stack: RunningStack, view: LogView) -> None:
    args = [
        "--redis-url", stack.redis_url,
        "--node-id", "balancer",
        "--host", plan.host,
        "--port", str(plan.port),
        "--outputs-dir", str(plan.data_dir / "outputs"),
        *_shared_flags(plan),
    ]  # fmt: skip
    stack.admin_key = load_or_create_admin_key(plan.data_dir)
    process = start_python_module(
        "balancer", "comfy_balancer", args, log_dir=plan.data_dir / "logs",
        env=_token_env(stack) | {"COMFY_BALANCER_ADMIN_KEY": stack.admin_key},
    )  # fmt: skip
    _track(stack, view, process)
    stack.balancer_url = f"http://{connect_host(plan.host)}:{plan.port}"
    bound = f"[{plan.host}]" if ":" in plan.host else plan.host
    stack.bind_address = f"{bound}:{plan.port}"
    wait_until_http_ok(process, f"{stack.balancer_url}/readyz", timeout_s=60)


def _shared_flags(plan: StackPlan) -> list[str]:
    """Flags the services and the balancer take alike."""
    flags = ["--templates-dir", str(plan.templates_dir)] if plan.templates_dir else []
    return flags + (["--logdy", plan.logdy] if plan.logdy else [])


def _token_env(stack: RunningStack) -> dict[str, str | None]:
    """In the environment: a command line is visible to every user of the machine. A
    prefixed variable of the user's shell would win over it, so those are dropped."""
    return {
        INTERNAL_TOKEN_ENV: stack.internal_token,
        "COMFY_SERVICE_INTERNAL_TOKEN": None,
        "COMFY_BALANCER_INTERNAL_TOKEN": None,
    }


def _write_private(path: Path, text: str) -> Path:
    """Write a file only its owner can read, whatever it was before."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text + "\n")
    return path


def _start_emulator(plan: StackPlan, stack: RunningStack, view: LogView, index: int) -> str:
    port = free_port(LOOPBACK)
    name = f"comfyui-{index + 1}"
    args = [
        "--host", LOOPBACK,
        "--port", str(port),
        "--data-dir", str(plan.data_dir / name),
        "--step-time", str(plan.step_time_s),
        "--load-scale", str(plan.load_scale),
    ]  # fmt: skip
    process = start_python_module(name, "comfy_emulator", args, log_dir=plan.data_dir / "logs")
    _track(stack, view, process)
    url = f"http://{LOOPBACK}:{port}"
    wait_until_http_ok(process, f"{url}/system_stats", timeout_s=60)
    return url


def _track(stack: RunningStack, view: LogView, process: ManagedProcess) -> None:
    stack.processes.append(process)
    view.add(process)


def wait_for_stop_signal(stack: RunningStack, view: LogView) -> int:
    """Block until SIGINT/SIGTERM (exit code 0) or until a component dies (exit code 1);
    meanwhile SIGUSR1, or Enter on a terminal, prints the banner again."""
    stop = threading.Event()
    banner_asked = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        (banner_asked if signum == signal.SIGUSR1 else stop).set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, on_signal)
    if sys.stdin is not None and sys.stdin.isatty():
        threading.Thread(target=_read_enter, args=(banner_asked,), daemon=True).start()
    while not stop.wait(0.2):
        if banner_asked.is_set():
            banner_asked.clear()
            view.show_banner()
        dead = stack.first_dead()
        if dead is not None:
            print(f"\n{dead.name} exited with code {dead.process.returncode}; stopping the stack")
            return 1
    print("\nstopping the stack ...")
    return 0


def _read_enter(banner_asked: threading.Event) -> None:
    for _line in sys.stdin:
        banner_asked.set()
