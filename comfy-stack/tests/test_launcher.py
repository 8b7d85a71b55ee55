"""``comfy-stack up`` as a user runs it: a real process tree, stopped with Ctrl-C (SIGINT)."""

import re
import signal
import socket
from pathlib import Path

import httpx
import psutil

from comfy_stack.ports import free_port
from comfy_stack.processes import start_python_module
from comfy_stack.waiting import wait_for_condition_sync


def test_up_starts_redis_emulators_and_services_and_ctrl_c_stops_them_all(
    tmp_path: Path,
) -> None:
    port = free_port()
    launcher = start_python_module(
        "launcher",
        "comfy_stack",
        ["up", "--emulators", "2", "--port", str(port), "--data-dir", str(tmp_path / "stack")],
        log_dir=tmp_path,
    )
    try:
        wait_for_condition_sync(
            lambda: "comfy-stack is up" in launcher.output(), timeout_s=60, what="stack up"
        )
        children = psutil.Process(launcher.pid).children(recursive=True)
        services = re.findall(r"service\s+(http://\S+)", launcher.output())
        emulators = re.findall(r"comfyui\s+(http://\S+)", launcher.output())

        assert len(services) == 2
        assert len(emulators) == 2
        assert len(children) == 6  # redis, two emulators, two services, the balancer
        for url in services:
            assert httpx.get(f"{url}/readyz", timeout=5).json()["status"] == "ready"
        api = f"http://127.0.0.1:{port}"
        assert f"api       {api}" in launcher.output()
        wait_for_condition_sync(
            lambda: _ready_nodes(api) == 2, timeout_s=20, what="two ready nodes"
        )
        assert "service-node-1" not in launcher.output()  # logs are labelled by component
        assert re.search(r"^node-1 +\| ", launcher.output(), re.MULTILINE)

        launcher.send_signal(signal.SIGINT)
        assert launcher.process.wait(timeout=30) == 0
        assert not [child for child in children if _alive(child)]
    finally:
        launcher.kill()


def test_a_busy_port_is_reported_clearly(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        launcher = start_python_module(
            "launcher", "comfy_stack", ["up", "--port", str(port), "--data-dir", str(tmp_path)],
            log_dir=tmp_path,
        )  # fmt: skip
        assert launcher.process.wait(timeout=30) == 2
    assert f"port {port} on 127.0.0.1 is already in use" in launcher.output()
    assert "--port" in launcher.output()


def _ready_nodes(api: str) -> int:
    nodes = httpx.get(f"{api}/api/v1/nodes", timeout=5).json()
    return sum(node["state"] == "ready" for node in nodes)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
