"""Node containers on a real Docker engine (skipped when none answers, as in CI); what the
containers are made of (``node_specs``) is checked everywhere."""

from __future__ import annotations

import gc
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import docker
import pytest
from docker.errors import DockerException, NotFound
from requests import RequestException

from comfy_balancer.autoscaler.containers import (
    GPU_LABEL,
    NODE_LABEL,
    SCOPE_LABEL,
    DockerNodes,
    node_specs,
    parse_docker_time,
)
from comfy_balancer.autoscaler.settings import AutoscalerSettings

IMAGE = "python:3.11-slim"
SLEEP = ["python3", "-c", "import time; time.sleep(3600)"]


def make_settings(**changes: Any) -> AutoscalerSettings:
    fields: dict[str, Any] = {
        "scope": f"test-{uuid.uuid4().hex[:8]}",
        "image": IMAGE,
        "command": SLEEP,
        "env": {"NODE": "{node_id}", "GPU": "{gpu}", "REDIS": "{redis_url}", "JSON": '{"a": 1}'},
        "gpu_driver": "none",
        "stop_timeout_s": 1,
        "redis_url": "redis://:secret@redis:6379/0",
        **changes,
    }
    return AutoscalerSettings(**fields)


# ---------------------------------------------------------------- specs (no engine needed)


def test_a_single_container_node_gets_the_gpu_and_the_filled_templates() -> None:
    settings = make_settings(gpu_driver="nvidia", labels={"team": "gpu"})

    (spec,) = node_specs(settings, "gpu-3", "3", settings.redis_url)

    assert spec.name == f"{settings.scope}-gpu-3-service"
    assert spec.options["environment"] == {
        "NODE": "gpu-3",
        "GPU": "3",
        "REDIS": "redis://:secret@redis:6379/0",
        "JSON": '{"a": 1}',
    }
    assert spec.options["labels"] == {
        "team": "gpu",
        SCOPE_LABEL: settings.scope,
        NODE_LABEL: "gpu-3",
        GPU_LABEL: "3",
        "comfy-stack.role": "service",
    }
    (request,) = spec.options["device_requests"]
    assert (request["Driver"], request["DeviceIDs"], request["Capabilities"]) == (
        "nvidia",
        ["3"],
        [["gpu"]],
    )
    assert spec.options["read_only"] is True
    assert spec.options["cap_drop"] == ["ALL"]
    assert spec.options["restart_policy"] == {"Name": "unless-stopped"}


def test_a_two_container_node_gives_the_gpu_to_comfyui_and_its_network_to_the_service() -> None:
    settings = make_settings(
        gpu_driver="nvidia", comfyui_image="comfyui:x", comfyui_command=["--cuda-device", "{gpu}"]
    )

    comfyui, service = node_specs(settings, "gpu-1", "1", settings.redis_url)

    assert (comfyui.role, comfyui.options["command"]) == ("comfyui", ["--cuda-device", "1"])
    assert "device_requests" in comfyui.options
    assert "device_requests" not in service.options
    assert (comfyui.shares_network, service.shares_network) == (False, True)


def test_without_a_gpu_runtime_no_device_is_requested() -> None:
    (spec,) = node_specs(make_settings(), "gpu-0", "0", "redis://")
    assert "device_requests" not in spec.options


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2026-12-01T13:44:22.123456789Z", datetime(2026, 12, 1, 13, 44, 22, 123456, UTC)),
        ("2026-12-01T13:44:22Z", datetime(2026, 12, 1, 13, 44, 22, tzinfo=UTC)),
    ],
)
def test_docker_times_are_read_to_the_microsecond(text: str, moment: datetime) -> None:
    assert parse_docker_time(text) == moment


# ---------------------------------------------------------------- a real engine


def why_no_engine() -> str | None:
    """Why no Docker engine with the image answers, or None when one does."""
    # A pinned API version makes no request yet, so the probe's client can be closed whatever
    # happens. docker's unix-socket connection does not close its socket when connecting
    # fails: it is collected here, with its ResourceWarning silenced, and not in a later test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        probe = docker.from_env(timeout=10, version="1.41")
        try:
            probe.ping()
            probe.images.get(IMAGE)
            reason = None
        except (DockerException, RequestException) as exc:
            reason = str(exc)
        finally:
            probe.close()
        gc.collect()
    return reason


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.DockerClient]:
    reason = why_no_engine()
    if reason is not None:
        pytest.skip(f"no Docker engine with {IMAGE}: {reason}")
    client = docker.from_env(timeout=10)
    yield client
    client.close()


@pytest.fixture
def settings(engine: docker.DockerClient) -> Iterator[AutoscalerSettings]:
    settings = make_settings()
    yield settings
    scope = f"{SCOPE_LABEL}={settings.scope}"
    for container in engine.containers.list(all=True, filters={"label": scope}):
        container.remove(force=True)


@pytest.fixture
def network(engine: docker.DockerClient) -> Iterator[str]:
    created = engine.networks.create(f"autoscaler-test-{uuid.uuid4().hex[:8]}")
    yield str(created.name)
    created.remove()


def test_a_started_node_is_listed_running_and_removed_with_its_containers(
    engine: docker.DockerClient, settings: AutoscalerSettings, network: str
) -> None:
    settings = settings.model_copy(update={"comfyui_image": IMAGE, "comfyui_command": SLEEP})
    settings = settings.model_copy(update={"network": network})
    nodes = DockerNodes(lambda: engine, settings)

    nodes.start("gpu-7", "7")

    (node,) = nodes.nodes()
    assert (node.node_id, node.gpu, node.running) == ("gpu-7", "7", True)
    assert abs(datetime.now(UTC) - node.started_at) < timedelta(seconds=30)
    comfyui, service = (engine.containers.get(name) for name in sorted(node.names))
    assert comfyui.name == f"{settings.scope}-gpu-7-comfyui"
    assert service.attrs["HostConfig"]["NetworkMode"] == f"container:{comfyui.id}"
    assert "gpu-7" in comfyui.attrs["NetworkSettings"]["Networks"][network]["Aliases"]
    assert "NODE=gpu-7" in service.attrs["Config"]["Env"]
    assert service.attrs["HostConfig"]["ReadonlyRootfs"] is True

    nodes.remove("gpu-7")

    assert nodes.nodes() == []
    for container in (comfyui, service):
        with pytest.raises(NotFound):
            container.reload()


def test_only_containers_of_its_own_scope_are_seen_or_touched(
    engine: docker.DockerClient, settings: AutoscalerSettings
) -> None:
    other = make_settings()  # another stack's autoscaler on the same engine
    theirs = DockerNodes(lambda: engine, other)
    stranger = engine.containers.run(IMAGE, SLEEP, detach=True, labels={NODE_LABEL: "gpu-1"})
    try:
        theirs.start("gpu-1", "1")
        ours = DockerNodes(lambda: engine, settings)

        assert ours.nodes() == []
        ours.remove("gpu-1")

        assert [node.node_id for node in theirs.nodes()] == ["gpu-1"]
        stranger.reload()
        assert stranger.status == "running"
    finally:
        stranger.remove(force=True)
        theirs.remove("gpu-1")


def test_a_restarted_autoscaler_finds_its_nodes_and_sees_a_stopped_one(
    engine: docker.DockerClient, settings: AutoscalerSettings
) -> None:
    DockerNodes(lambda: engine, settings).start("gpu-2", "2")
    (node,) = DockerNodes(lambda: engine, settings).nodes()  # a new process, same labels
    engine.containers.get(node.names[0]).stop(timeout=1)

    (stopped,) = DockerNodes(lambda: engine, settings).nodes()

    assert (stopped.node_id, stopped.gpu, stopped.running) == ("gpu-2", "2", False)
    assert stopped.stopped_at is not None
    assert abs(datetime.now(UTC) - stopped.stopped_at) < timedelta(seconds=30)


def test_a_node_that_cannot_start_leaves_no_container_behind(
    engine: docker.DockerClient, settings: AutoscalerSettings
) -> None:
    broken = settings.model_copy(update={"comfyui_image": IMAGE, "image": "no-such/image:x"})
    nodes = DockerNodes(lambda: engine, broken)

    with pytest.raises(DockerException):
        nodes.start("gpu-4", "4")

    assert nodes.nodes() == []


def test_the_engine_is_first_asked_when_first_used() -> None:
    def unreachable() -> docker.DockerClient:
        raise DockerException("engine down")

    nodes = DockerNodes(unreachable, make_settings())  # made while the engine is down

    with pytest.raises(DockerException, match="engine down"):
        nodes.nodes()


def test_the_service_gets_the_passed_environment_under_its_templates() -> None:
    settings = make_settings(env={"COMFY_SERVICE_NODE_ID": "{node_id}"})
    environ = {
        "COMFY_SERVICE_PORT": "8100",
        "COMFY_SERVICE_NODE_ID": "autoscaler",  # the template wins
        "COMFY_INTERNAL_TOKEN": "t" * 32,
        "COMFY_INTERNAL_TOKEN_FILE": "/x",  # a name without _ at the end is exact
        "HOME": "/root",
    }

    (spec,) = node_specs(settings, "gpu-0", "0", "redis://", "", settings.passed_env(environ))

    assert spec.options["environment"] == {
        "COMFY_SERVICE_PORT": "8100",
        "COMFY_SERVICE_NODE_ID": "gpu-0",
        "COMFY_INTERNAL_TOKEN": "t" * 32,
    }


def test_network_and_volumes_may_name_the_compose_project() -> None:
    settings = make_settings(
        network="{compose_project}_default", volumes=["{compose_project}_outputs:/data/outputs"]
    )

    (spec,) = node_specs(settings, "gpu-0", "0", "redis://", compose_project="stack")

    assert spec.network == "stack_default"
    assert spec.options["volumes"] == ["stack_outputs:/data/outputs"]
