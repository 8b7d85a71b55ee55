"""``comfy-stack up`` as a user runs it: a real process tree, stopped with Ctrl-C (SIGINT)."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest
from PIL import Image

from comfy_shared.workflows import DEFAULT_TEMPLATES_DIR
from comfy_stack.credentials import API_KEY_ENV, KEY_ENV, URL_ENV
from comfy_stack.launcher import (
    LaunchError,
    StackPlan,
    connect_host,
    ensure_port_free,
    insecure_binding_warning,
)
from comfy_stack.ports import free_port
from comfy_stack.processes import start_python_module
from comfy_stack.waiting import wait_for_condition_sync
from comfy_testkit.line_listener import LineListener

BALANCER_HOST = "127.0.0.2"
"""``--host``: another loopback address, so the test shows the balancer binds it (and only the
balancer) without opening a port to the network."""


@pytest.mark.timeout(240)  # a whole stack of processes starts and stops, on a loaded machine too
def test_up_starts_redis_emulators_and_services_and_ctrl_c_stops_them_all(
    tmp_path: Path,
) -> None:
    port = free_port()
    data_dir = tmp_path / ".comfy-stack"
    (data_dir / "logs").mkdir(parents=True)
    (data_dir / "logs" / "node-1.log").write_text("a line of an earlier run\n")
    templates = _templates(tmp_path / "templates")
    logdy = LineListener()
    launcher = start_python_module(
        "launcher",
        "comfy_stack",
        ["up", "--emulators", "2", "--port", str(port), "--data-dir", str(data_dir),
         "--templates-dir", str(templates), "--logdy", f"127.0.0.1:{logdy.port}",
         "--host", BALANCER_HOST],
        log_dir=tmp_path,
    )  # fmt: skip
    try:
        wait_for_condition_sync(
            lambda: "comfy-stack is up" in launcher.output(), timeout_s=60, what="stack up"
        )
        assert "a line of an earlier run" not in launcher.output()  # not replayed ...
        assert (data_dir / "logs" / "node-1.previous.log").exists()  # ... but kept
        assert (data_dir / "url").read_text().strip() == f"http://{BALANCER_HOST}:{port}"
        assert f"logdy     logs shipped to 127.0.0.1:{logdy.port}" in launcher.output()
        children = psutil.Process(launcher.pid).children(recursive=True)
        services = re.findall(r"service\s+(http://\S+)", launcher.output())
        emulators = re.findall(r"comfyui\s+(http://\S+)", launcher.output())

        assert len(services) == 2
        assert len(emulators) == 2
        launcher.send_signal(signal.SIGUSR1)
        wait_for_condition_sync(
            lambda: launcher.output().count("comfy-stack is up") == 2, what="banner again"
        )
        assert len(children) == 6  # redis, two emulators, two services, the balancer
        for url in services:
            assert httpx.get(f"{url}/readyz", timeout=5).json()["status"] == "ready"
        _check_the_services_want_this_run_s_token(services, data_dir, launcher.output())
        api = f"http://{BALANCER_HOST}:{port}"
        with pytest.raises(httpx.ConnectError):  # only the balancer moved, and it did
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert all(url.startswith("http://127.0.0.1:") for url in services + emulators)
        assert f"api       {api}" in launcher.output()
        admin_key = (data_dir / "admin-key").read_text().strip()
        assert f"admin key {admin_key}" in launcher.output()
        assert (data_dir / "admin-key").stat().st_mode & 0o077 == 0  # owner only
        anonymous = httpx.get(f"{api}/api/v1/nodes", timeout=5)
        assert anonymous.status_code == 401  # authentication is on, even locally
        wait_for_condition_sync(
            lambda: _ready_nodes(api, admin_key) == 2, timeout_s=20, what="two ready nodes"
        )
        _check_the_client_against(api, tmp_path, admin_key)
        _check_the_client_needs_no_flags_in_the_stack_s_folder(tmp_path)
        assert "service-node-1" not in launcher.output()  # logs are labelled by component
        assert re.search(r"^node-1 +\| ", launcher.output(), re.MULTILINE)
        bars = [line for line in launcher.output().splitlines() if "it/s]" in line]
        assert 1 <= len(bars) <= 12  # one folded line per sampler run, not one per step
        assert all(line.count("%|") == 1 for line in bars)
        wait_for_condition_sync(lambda: _shipped_by(logdy, "balancer"), what="logs shipped")

        launcher.send_signal(signal.SIGINT)
        assert launcher.process.wait(timeout=30) == 0
        assert not [child for child in children if _alive(child)]
        assert not (data_dir / "url").exists()
    finally:
        launcher.kill()
        logdy.close()


def _templates(folder: Path) -> Path:
    """The shipped templates this test uses, and one of its own."""
    folder.mkdir()
    for name in ("txt2img-sdxl", "demo"):
        for suffix in (".json", ".yaml"):
            shutil.copy(DEFAULT_TEMPLATES_DIR / f"{name}{suffix}", folder)
    shutil.copy(DEFAULT_TEMPLATES_DIR / "demo.json", folder / "swatch.json")
    shutil.copy(DEFAULT_TEMPLATES_DIR / "demo.yaml", folder / "swatch.yaml")
    return folder


def _shipped_by(logdy: LineListener, node_id: str) -> bool:
    return any(json.loads(line).get("node") == node_id for line in logdy.lines)


def _check_the_client_needs_no_flags_in_the_stack_s_folder(folder: Path) -> None:
    """Run where ``up`` ran, the client finds the stack and its admin key by itself."""
    workflows = _local_client(folder, "workflows", "--json")
    assert workflows.returncode == 0, workflows.stderr
    assert sorted(flow["name"] for flow in json.loads(workflows.stdout)) == [
        "demo", "swatch", "txt2img-sdxl",
    ]  # fmt: skip
    first = _local_client(folder, "generate", "--workflow", "swatch", "-p", "width=64")
    second = _local_client(folder, "generate", "--workflow", "swatch", "-p", "width=64")
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert first.stdout != second.stdout  # the same name from ComfyUI: both files kept
    assert (folder / first.stdout.strip()).exists()
    assert (folder / second.stdout.strip()).exists()
    refused = _local_client(folder, "generate", "-w", "swatch", "-o", first.stdout.strip())
    assert refused.returncode == 2
    assert "exists" in refused.stderr

    listed = json.loads(_local_client(folder, "tasks", "--workflow", "swatch", "--json").stdout)
    task_id = listed["tasks"][0]["id"]
    assert [task["status"] for task in listed["tasks"]] == ["succeeded", "succeeded"]
    events = _local_client(folder, "events", task_id, "--json").stdout.splitlines()
    assert json.loads(events[-1])["data"]["task"]["status"] == "succeeded"
    readable = _local_client(folder, "events", task_id).stdout.splitlines()
    assert readable[-1] == f"state    {task_id} succeeded"
    log = _local_client(folder, "logs", task_id)
    assert log.returncode == 0
    assert "node-" in log.stdout
    missing = _local_client(folder, "status", "no-such-task", "--json")
    assert missing.returncode == 2
    assert json.loads(missing.stdout)["error"]["code"] == "task_not_found"


def _local_client(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "comfy_stack", *args]
    env = {name: value for name, value in os.environ.items()
           if name not in (URL_ENV, API_KEY_ENV, KEY_ENV)}  # fmt: skip
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, check=False, env=env, cwd=folder
    )


def test_binding_every_interface_without_authentication_is_warned_about() -> None:
    plan = StackPlan(data_dir=Path("stack"), host="0.0.0.0")

    assert "anyone who reaches this machine" in insecure_binding_warning(
        plan, {"COMFY_BALANCER_AUTH": "off"}
    )
    assert insecure_binding_warning(plan, {}) == ""  # authentication is on
    assert (
        insecure_binding_warning(StackPlan(data_dir=Path("stack")), {"COMFY_BALANCER_AUTH": "off"})
        == ""
    )
    assert connect_host("0.0.0.0") == "127.0.0.1"
    assert connect_host("::") == "[::1]"


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


def _check_the_client_against(api: str, tmp_path: Path, key: str) -> None:
    out = tmp_path / "lighthouse.png"
    size = ["--param", "width=512", "--param", "height=640", "--param", "steps=30"]
    generate = _client("generate", "a lighthouse", *size, "-o", str(out), "--url", api, key=key)
    assert generate.returncode == 0, generate.stderr
    assert generate.stdout.strip() == str(out)
    with Image.open(out) as image:
        assert image.size == (512, 640)
    assert "running on node-" in generate.stderr  # the progress line showed the steps

    nodes = _client("nodes", "--url", api, key=key)
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

    failed = _client("generate", "--workflow", "demo", "-p", "width=1", "--url", api, key=key)
    assert failed.returncode == 2
    assert "error (validation, invalid_params)" in failed.stderr

    slow = subprocess.Popen(
        [sys.executable, "-m", "comfy_stack", "generate", "x", "-p", "steps=150", "--url", api],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(key),
    )  # fmt: skip
    task_id = wait_for_condition_sync(lambda: _running_task(api, key), timeout_s=20, what="running")
    assert _client("cancel", task_id, "--url", api, key=key).returncode == 0
    _, stderr = slow.communicate(timeout=30)
    assert slow.returncode == 1
    assert f"task {task_id} was cancelled" in stderr
    assert "(service)" not in stderr  # a cancellation is not reported as an error

    created = _client(
        "keys", "create", "student", "--max-running", "1",
        "--webhook-url", "https://8.8.8.8/hooks", "--url", api, key=key,
    )  # fmt: skip
    key_id, secret = created.stdout.split()[0], created.stdout.splitlines()[1]
    assert created.stdout.splitlines()[2].startswith("webhook signing secret: whsec_")
    listed = _client("keys", "list", "--url", api, key=key)
    assert key_id in listed.stdout
    assert "max_running=1" in listed.stdout
    assert secret not in listed.stdout
    student_nodes = _client("nodes", "--url", api, key=secret)
    assert student_nodes.returncode == 0
    assert _client("keys", "list", "--url", api, key=secret).returncode == 2  # not an admin
    assert _client("nodes", "drain", "node-1", "--url", api, key=secret).returncode == 2
    drained = _client("nodes", "drain", "node-1", "--url", api, key=key)
    assert drained.stdout.split() == ["node-1", "drained"], drained.stderr
    assert " drained " in _client("nodes", "--url", api, key=key).stdout
    undrained = _client("nodes", "undrain", "node-1", "--url", api, key=key)
    assert undrained.stdout.split() == ["node-1", "ready"], undrained.stderr
    assert _client("keys", "revoke", key_id, "--url", api, key=key).returncode == 0


def _client(*args: str, key: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "comfy_stack", *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, check=False, env=_env(key)
    )


def _env(key: str) -> dict[str, str]:
    """The client reads the key from the environment (the stack's file is not in its folder)."""
    return {**os.environ, KEY_ENV: key}


def _running_task(api: str, key: str) -> str | None:
    tasks = httpx.get(
        f"{api}/api/v1/tasks", params={"status": "running"}, timeout=5, headers=_bearer(key)
    ).json()
    return str(tasks["tasks"][0]["id"]) if tasks["tasks"] else None


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _ready_nodes(api: str, key: str) -> int:
    nodes = httpx.get(f"{api}/api/v1/nodes", timeout=5, headers=_bearer(key)).json()
    return sum(node["state"] == "ready" for node in nodes)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_busy_port_on_an_ipv6_host_is_reported_too() -> None:
    with socket.socket(socket.AF_INET6) as taken:
        taken.bind(("::1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(LaunchError, match=f"port {port} on ::1 is already in use"):
            ensure_port_free("::1", port)
    ensure_port_free("::1", port)  # free again: no error
