"""The compose files and Dockerfiles, checked without Docker: what they promise in the docs,
and that every variable they set is one the programs read, so a typo fails here and not in
production. `scripts/compose-e2e` runs them for real (too slow for CI)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from comfy_balancer.settings import BalancerSettings
from comfy_service.settings import ServiceSettings
from comfy_shared.settings import env_var_names
from comfy_shared.workflows import DEFAULT_TEMPLATES_DIR

ROOT = Path(__file__).parents[1]
COMPOSE = ROOT / "docker-compose.yml"
GPU_OVERRIDE = ROOT / "docker-compose.gpu.yml"
DOCKERFILES = [
    ROOT / "Dockerfile.service",
    ROOT / "Dockerfile.balancer",
    ROOT / "Dockerfile.emulator",
    ROOT / "docker" / "comfyui" / "Dockerfile",
]
SETTINGS_FOR: dict[str, type[BaseSettings]] = {
    "Dockerfile.service": ServiceSettings,
    "Dockerfile.balancer": BalancerSettings,
}
# The service also reads the plain name ComfyUI's own tools use (see ServiceSettings).
EXTRA_NAMES = {"Dockerfile.service": {"COMFYUI_URL"}}
# ${VAR}, ${VAR:-default}, ${VAR-default}; `$$` is a literal dollar.
INTERPOLATION = re.compile(r"\$\$|\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}")


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def services(path: Path) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = load(path)["services"]
    return result


def dockerfile_of(service: dict[str, Any], compose_file: Path) -> Path | None:
    build = service.get("build")
    if build is None:
        return None
    context = compose_file.parent / str(build["context"])
    return context / str(build.get("dockerfile", "Dockerfile"))


def resolve(value: object) -> str:
    """The value compose passes when no variable is set: every default applied."""

    def substitute(match: re.Match[str]) -> str:
        return "$" if match.group(0) == "$$" else match.group("default") or ""

    return INTERPOLATION.sub(substitute, str(value))


def referenced_variables(text: str) -> set[str]:
    return {m.group("name") for m in INTERPOLATION.finditer(text) if m.group("name")}


def dockerfile_env_names(path: Path) -> set[str]:
    """Names set by ENV instructions (`ENV A=1 \\` continued over several lines)."""
    text = path.read_text().replace("\\\n", " ")
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("ENV "):
            names.update(re.findall(r"(\w+)=", line))
    return names


def known_names(dockerfile: Path) -> set[str]:
    settings = SETTINGS_FOR.get(dockerfile.name)
    if settings is None:
        return dockerfile_env_names(dockerfile)
    return env_var_names(settings) | EXTRA_NAMES.get(dockerfile.name, set())


# ------------------------------------------------------------------ docker-compose.yml


def test_compose_has_the_documented_services() -> None:
    assert set(services(COMPOSE)) == {
        "redis",
        "logdy",
        "balancer",
        "service-1",
        "service-2",
        "comfyui-1",
        "comfyui-2",
    }
    assert "version" not in load(COMPOSE)  # docker-compose 1.29 and Compose v2 alike


@pytest.mark.parametrize("compose_file", [COMPOSE, GPU_OVERRIDE], ids=lambda p: p.name)
def test_every_built_image_has_a_dockerfile_with_a_healthcheck(compose_file: Path) -> None:
    for name, service in services(compose_file).items():
        dockerfile = dockerfile_of(service, compose_file)
        if dockerfile is not None:
            assert dockerfile.is_file(), name
            assert "\nHEALTHCHECK " in dockerfile.read_text(), name


def test_every_service_has_a_healthcheck_and_restarts() -> None:
    for name, service in services(COMPOSE).items():
        dockerfile = dockerfile_of(service, COMPOSE)
        assert "healthcheck" in service or dockerfile is not None, name
        assert service["restart"] == "unless-stopped", name


def test_dependencies_wait_until_healthy() -> None:
    all_services = services(COMPOSE)
    for name, service in all_services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on needs the mapping form"
        for dependency, condition in depends_on.items():
            assert dependency in all_services, name
            assert condition == {"condition": "service_healthy"}, f"{name} -> {dependency}"
    assert set(all_services["balancer"]["depends_on"]) >= {"redis"}
    assert set(all_services["service-1"]["depends_on"]) >= {"redis", "comfyui-1"}
    assert set(all_services["service-2"]["depends_on"]) >= {"redis", "comfyui-2"}


@pytest.mark.parametrize("compose_file", [COMPOSE, GPU_OVERRIDE], ids=lambda p: p.name)
def test_every_variable_set_is_one_the_program_reads(compose_file: Path) -> None:
    base = services(COMPOSE)
    for name, service in services(compose_file).items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: environment needs the mapping form"
        dockerfile = dockerfile_of(service, compose_file) or dockerfile_of(base[name], COMPOSE)
        if dockerfile is None:  # third-party images (redis, logdy)
            continue
        unknown = set(environment) - known_names(dockerfile)
        assert not unknown, f"{name} sets variables {dockerfile.name} does not read: {unknown}"


@pytest.mark.parametrize(
    ("service", "settings_cls"),
    [
        ("balancer", BalancerSettings),
        ("service-1", ServiceSettings),
        ("service-2", ServiceSettings),
    ],
)
def test_default_values_are_valid_settings(
    service: str, settings_cls: type[BaseSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = services(COMPOSE)[service]["environment"]
    for key, value in environment.items():
        monkeypatch.setenv(key, resolve(value))
    settings_cls(_env_file=None)  # raises on a bad default (JSON lists, numbers, patterns)


def test_nodes_are_distinct_and_reachable_by_the_balancer() -> None:
    all_services = services(COMPOSE)
    node_ids, urls = set(), set()
    for index in (1, 2):
        environment = all_services[f"service-{index}"]["environment"]
        node_ids.add(resolve(environment["COMFY_SERVICE_NODE_ID"]))
        urls.add(environment["COMFY_SERVICE_PUBLIC_URL"])
        assert environment["COMFY_SERVICE_PUBLIC_URL"] == f"http://service-{index}:8100"
        assert resolve(environment["COMFY_SERVICE_PORT"]) == "8100"
        assert resolve(environment["COMFY_SERVICE_HOST"]) == "0.0.0.0"
        url = environment["COMFY_SERVICE_COMFYUI_URL"]
        assert f"SERVICE_{index}_COMFYUI_URL" in url  # an operator can point at a host ComfyUI
        assert resolve(url) == f"http://comfyui-{index}:8188"
        extra_hosts = all_services[f"service-{index}"]["extra_hosts"]
        assert "host.docker.internal:host-gateway" in extra_hosts
    assert len(node_ids) == 2
    assert len(urls) == 2


def test_logs_ship_to_logdy_socket_that_is_not_published() -> None:
    all_services = services(COMPOSE)
    assert all_services["balancer"]["environment"]["COMFY_BALANCER_LOGDY"] == "logdy:8233"
    for name in ("service-1", "service-2"):
        assert all_services[name]["environment"]["COMFY_SERVICE_LOGDY"] == "logdy:8233"
    logdy = all_services["logdy"]
    assert not any("8233" in port for port in logdy["ports"])
    assert [resolve(port) for port in logdy["ports"]] == ["8080:8080"]
    assert resolve(all_services["balancer"]["ports"][0]) == "8000:8000"


def test_logdy_is_started_the_way_its_image_needs() -> None:
    logdy = services(COMPOSE)["logdy"]
    # The image runs `sh -c <command>`: one string, or only the first word would run.
    assert isinstance(logdy["command"], list)
    assert len(logdy["command"]) == 1
    command = resolve(logdy["command"][0])
    assert command.startswith("logdy socket 8233 ")
    assert "--ui-ip=0.0.0.0" in command
    assert "--config=/etc/logdy/logdy.config.json" in command
    assert "${LOGDY_UI_PASS:+--ui-pass=$LOGDY_UI_PASS}" in command  # expanded by the container
    assert "LOGDY_UI_PASS" in logdy["environment"]
    assert "./logdy/logdy.config.json:/etc/logdy/logdy.config.json:ro" in logdy["volumes"]


def test_redis_keeps_its_data() -> None:
    compose = load(COMPOSE)
    redis = compose["services"]["redis"]
    assert "--appendonly" in redis["command"]
    assert "redis-data:/data" in redis["volumes"]
    assert "redis-data" in compose["volumes"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


# ------------------------------------------------------------------ docker-compose.gpu.yml


def test_gpu_override_gives_each_comfyui_its_own_gpu_and_the_models() -> None:
    override = load(GPU_OVERRIDE)
    assert set(override["services"]) <= set(services(COMPOSE))
    gpus = []
    for name in ("comfyui-1", "comfyui-2"):
        service = override["services"][name]
        assert dockerfile_of(service, GPU_OVERRIDE) == ROOT / "docker" / "comfyui" / "Dockerfile"
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia"
        assert device["capabilities"] == ["gpu"]
        assert "count" not in device  # exclusive with device_ids
        (gpu,) = device["device_ids"]
        gpus.append(resolve(gpu))
        assert any(volume.endswith(":/opt/ComfyUI/models") for volume in service["volumes"])
    assert len(set(gpus)) == 2


def test_gpu_image_has_what_the_shipped_templates_need() -> None:
    dockerfile = (ROOT / "docker" / "comfyui" / "Dockerfile").read_text()
    assert "github.com/smthemex/ComfyUI_StoryDiffusion" in dockerfile
    assert "github.com/comfyanonymous/ComfyUI" in dockerfile
    documented = GPU_OVERRIDE.read_text()
    for checkpoint in template_checkpoints():
        assert checkpoint in documented, f"{checkpoint} is not documented in {GPU_OVERRIDE.name}"


def template_checkpoints() -> set[str]:
    names: set[str] = set()
    for graph_file in DEFAULT_TEMPLATES_DIR.glob("*.json"):
        for node in json.loads(graph_file.read_text()).values():
            if "ckpt_name" in node["inputs"]:
                names.add(node["inputs"]["ckpt_name"])
    assert names, "the shipped templates load no checkpoint?"
    return names


# ------------------------------------------------------------------ Dockerfiles and env files


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dockerfile_builds_behind_a_mirror_as_non_root(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    instructions = [line for line in text.replace("\\\n", " ").splitlines() if line.strip()]
    first = next(line for line in instructions if not line.startswith("#"))
    assert first == "ARG BASE_IMAGE=python:3.11-slim"  # before FROM: usable in every FROM
    froms = [line for line in instructions if line.startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage: build tools stay in the builder"
    assert all(line.split()[1] == "${BASE_IMAGE}" for line in froms)
    assert re.search(r"^ARG PIP_INDEX_URL$", text, re.MULTILINE)
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users, "no USER"
    assert users[-1] not in {"root", "0", "0:0"}
    assert "\nHEALTHCHECK " in text
    assert "curl" not in text.split("\nHEALTHCHECK ")[1]  # slim images have none


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dockerfile_uses_only_classic_builder_syntax(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    assert "--mount" not in text
    assert "<<" not in text  # heredocs
    assert not re.search(r"^(COPY|ADD)\s.*--(chmod|link)", text, re.MULTILINE)


@pytest.mark.parametrize("dockerfile", DOCKERFILES[:3], ids=lambda p: p.name)
def test_workspace_dockerfile_installs_from_the_lock(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert "--frozen" in text
    assert "--require-hashes" in text
    assert "COPY pyproject.toml uv.lock ./" in text
    # uv loads the whole workspace: a member added later must be copied here too.
    members = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]
    for member in members["members"]:
        assert f"COPY {member}/pyproject.toml {member}/" in text, member


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().splitlines())
    assert {".git", ".venv", ".tools", ".comfy-stack", ".env", "**/__pycache__"} <= ignored
    assert {"**/.pytest_cache", "**/.mypy_cache", "**/.ruff_cache"} <= ignored


def test_env_example_documents_every_variable_the_compose_files_read() -> None:
    documented = set(re.findall(r"^#? ?(\w+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    for compose_file in (COMPOSE, GPU_OVERRIDE):
        # Comments are skipped: they may quote variables of the containers' own shells.
        text = "\n".join(line.split(" #")[0] for line in compose_file.read_text().splitlines())
        missing = referenced_variables(text) - documented
        assert not missing, f"{compose_file.name} reads variables .env.example lacks: {missing}"
