"""``comfy-stack up`` as a user runs it: a real process tree, stopped with Ctrl-C (SIGINT)."""

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
from PIL import Image

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
        _check_the_services_want_this_run_s_token(services, tmp_path / "stack", launcher.output())
        api = f"http://127.0.0.1:{port}"
        assert f"api       {api}" in launcher.output()
        wait_for_condition_sync(
            lambda: _ready_nodes(api) == 2, timeout_s=20, what="two ready nodes"
        )
        _check_the_client_against(api, tmp_path)
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


def _check_the_services_want_this_run_s_token(
    services: list[str], data_dir: Path, output: str
) -> None:
    token_file = data_dir / "internal-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 32
    assert token not in output
    assert str(token_file) in output  # the summary says where it is
    for url in services:
        assert httpx.get(f"{url}/api/v1/workflows", timeout=5).status_code == 401
        authorized = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{url}/api/v1/workflows", headers=authorized, timeout=5).is_success


def _check_the_client_against(api: str, tmp_path: Path) -> None:
    out = tmp_path / "lighthouse.png"
    size = ["--param", "width=512", "--param", "height=640", "--param", "steps=30"]
    generate = _client("generate", "a lighthouse", *size, "-o", str(out), "--url", api)
    assert generate.returncode == 0, generate.stderr
    assert generate.stdout.strip() == str(out)
    with Image.open(out) as image:
        assert image.size == (512, 640)
    assert "running on node-" in generate.stderr  # the progress line showed the steps

    nodes = _client("nodes", "--url", api)
    assert nodes.returncode == 0
    assert sorted(line.split()[:2][0] for line in nodes.stdout.splitlines()[1:]) == [
        "node-1",
        "node-2",
    ]
    assert nodes.stdout.count(" ready ") == 2
    assert "s/step" in nodes.stdout.splitlines()[0]
    for row in nodes.stdout.splitlines()[1:]:
        step_time = row.split()[5]  # measured once a node has run a task and published it
        assert step_time == "-" or float(step_time) > 0

    failed = _client("generate", "--workflow", "demo", "--param", "width=1", "--url", api)
    assert failed.returncode == 2
    assert "error (validation, invalid_params)" in failed.stderr

    slow = subprocess.Popen(
        [sys.executable, "-m", "comfy_stack", "generate", "x", "-p", "steps=150", "--url", api],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    task_id = wait_for_condition_sync(lambda: _running_task(api), timeout_s=20, what="running")
    assert _client("cancel", task_id, "--url", api).returncode == 0
    _, stderr = slow.communicate(timeout=30)
    assert slow.returncode == 1
    assert f"task {task_id} was cancelled" in stderr
    assert "(service)" not in stderr  # a cancellation is not reported as an error


def _client(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "comfy_stack", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def _running_task(api: str) -> str | None:
    tasks = httpx.get(f"{api}/api/v1/tasks", params={"status": "running"}, timeout=5).json()
    return str(tasks["tasks"][0]["id"]) if tasks["tasks"] else None


def _ready_nodes(api: str) -> int:
    nodes = httpx.get(f"{api}/api/v1/nodes", timeout=5).json()
    return sum(node["state"] == "ready" for node in nodes)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
