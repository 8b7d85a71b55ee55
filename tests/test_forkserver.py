"""The test kit's fork server starts components as ``python -m`` would, and a test drives
what it started as it drives a ``subprocess.Popen``."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from comfy_stack.ports import free_port
from comfy_stack.processes import wait_until_http_ok
from comfy_testkit import forkserver


@pytest.fixture(autouse=True)
def _forking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(forkserver.SWITCH, "1")


def test_a_forked_component_gets_its_arguments_environment_and_log(
    tmp_path: Path, redis_url: str
) -> None:
    port = free_port()
    started = forkserver.start_python_module(
        "balancer",
        "comfy_balancer",
        ["--host", "127.0.0.1", "--auth", "off"],
        log_dir=tmp_path,
        env={"COMFY_BALANCER_PORT": str(port), "COMFY_BALANCER_REDIS_URL": redis_url},
    )
    assert isinstance(started.process, forkserver.ForkedProcess)
    wait_until_http_ok(started, f"http://127.0.0.1:{port}/readyz")
    assert started.process.poll() is None

    assert started.stop() in (0, -signal.SIGTERM)
    assert "comfy-balancer ready" in started.output()  # its own lines, in its log


def test_exit_codes_and_signals_reach_the_test(tmp_path: Path) -> None:
    refused = forkserver.start_python_module(
        "balancer", "comfy_balancer", ["--port", "not-a-port"], log_dir=tmp_path
    )
    assert refused.process.wait(timeout=30) == 2
    assert "port" in refused.output()

    port = free_port()
    killed = forkserver.start_python_module(
        "emulator", "comfy_emulator", ["--port", str(port)], log_dir=tmp_path
    )
    wait_until_http_ok(killed, f"http://127.0.0.1:{port}/system_stats")
    with pytest.raises(subprocess.TimeoutExpired):
        killed.process.wait(timeout=0.1)
    killed.kill()
    assert killed.process.returncode == -signal.SIGKILL


def test_an_interpreter_setting_of_its_own_gets_a_new_interpreter() -> None:
    assert forkserver._forkable("comfy_service", {"COMFY_SERVICE_PORT": "1"})
    assert not forkserver._forkable("comfy_service", {"PYTHONPATH": "stand-ins"})
    assert not forkserver._forkable("comfy_stack", {})  # not preloaded
