"""``comfy-stack up`` as a user runs it: a real process tree, stopped with Ctrl-C (SIGINT)."""

import re
import signal
from pathlib import Path

import httpx
import psutil

from comfy_stack.processes import start_python_module
from comfy_stack.waiting import wait_for_condition_sync


def test_up_starts_redis_emulators_and_services_and_ctrl_c_stops_them_all(
    tmp_path: Path,
) -> None:
    launcher = start_python_module(
        "launcher",
        "comfy_stack",
        ["up", "--emulators", "2", "--data-dir", str(tmp_path / "stack")],
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
        assert len(children) == 5  # redis, two emulators, two services
        for url in services:
            assert httpx.get(f"{url}/readyz", timeout=5).json()["status"] == "ready"
        assert "service-node-1" not in launcher.output()  # logs are labelled by component
        assert re.search(r"^node-1 +\| ", launcher.output(), re.MULTILINE)

        launcher.send_signal(signal.SIGINT)
        assert launcher.process.wait(timeout=30) == 0
        assert not [child for child in children if _alive(child)]
    finally:
        launcher.kill()


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
