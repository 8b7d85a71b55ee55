"""The compose files and Dockerfiles, checked without Docker: what they promise in the docs,
that every variable they set is one the programs read (so a typo fails here and not in
production), and the hardening: secrets required, one published port, locked-down containers.
`scripts/compose-e2e` runs them for real (too slow for CI)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from comfy_balancer.autoscaler.containers import node_specs
from comfy_balancer.autoscaler.settings import AutoscalerSettings
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
# Set for a setting another change adds to the balancer (API keys): until it lands the
# balancer ignores the variable (its settings ignore unknown ones).
NOT_YET_READ = {"Dockerfile.balancer": {"COMFY_BALANCER_ADMIN_KEY"}}
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}; `$$` is a literal dollar.
INTERPOLATION = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<operator>:?[-?])(?P<argument>[^}]*))?\}")
SECRETS = {"COMFY_INTERNAL_TOKEN", "REDIS_PASSWORD", "ADMIN_KEY"}
"""Required: compose refuses to start without them, and no file holds a default."""
SAMPLE_SECRET = "0123456789abcdef" * 4
MONITORING = {"prometheus", "alertmanager"}
"""The services of the `monitoring` profile (started only when it is asked for)."""
PROFILE_OF = {**dict.fromkeys(MONITORING, "monitoring"), "autoscaler": "autoscale"}
THIRD_PARTY = {"redis", "logdy", *MONITORING}
"""Images we do not build: their user is chosen here, not in a Dockerfile of ours."""


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
    """The value compose passes when only the required variables are set (to
    ``SAMPLE_SECRET``): every default applied."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if (match.group("operator") or "").endswith("?"):
            return SAMPLE_SECRET
        return match.group("argument") or ""

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
    return env_var_names(settings) | NOT_YET_READ.get(dockerfile.name, set())


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
        *MONITORING,
        "autoscaler",
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
        ("autoscaler", AutoscalerSettings),
    ],
)
def test_default_values_are_valid_settings(
    service: str, settings_cls: type[BaseSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = services(COMPOSE)[service]["environment"]
    for key, value in environment.items():
        monkeypatch.setenv(key, resolve(value))
    settings_cls(_env_file=None)  # raises on a bad default (JSON lists, numbers, patterns)


def test_the_autoscaler_reads_its_settings_and_passes_on_the_services(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environment = {k: resolve(v) for k, v in services(COMPOSE)["autoscaler"]["environment"].items()}
    ours = {name for name in environment if name.startswith("COMFY_AUTOSCALER_")}
    assert ours <= env_var_names(AutoscalerSettings)
    assert set(environment) - ours <= env_var_names(ServiceSettings)  # passed on to its nodes
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    settings = AutoscalerSettings(_env_file=None)
    _, service = node_specs(
        settings, "gpu-0", "0", settings.redis_url, "proj", settings.passed_env(environment)
    )
    for key, value in service.options["environment"].items():
        monkeypatch.setenv(key, value)

    node = ServiceSettings(_env_file=None)  # what one of its node containers reads

    assert (node.node_id, node.public_url) == ("gpu-0", "http://gpu-0:8100")
    assert str(node.comfyui_url).rstrip("/") == "http://127.0.0.1:8188"
    assert service.options["volumes"] == ["proj_outputs:/data/outputs"]
    assert service.network == "proj_default"


def test_the_autoscaler_reaches_the_docker_socket_as_its_group() -> None:
    autoscaler = services(COMPOSE)["autoscaler"]
    assert autoscaler["volumes"] == ["/var/run/docker.sock:/var/run/docker.sock"]
    assert autoscaler["group_add"] == ["${DOCKER_GID:-999}"]
    assert "user" not in autoscaler  # the image's, not root


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
    assert [resolve(port) for port in logdy["ports"]] == ["127.0.0.1:8080:8080"]


def test_only_the_balancer_is_published_beyond_the_docker_host() -> None:
    published = {
        name: [resolve(port) for port in service.get("ports", [])]
        for name, service in services(COMPOSE).items()
    }
    assert published.pop("balancer") == ["8000:8000"]
    assert published.pop("logdy") == ["127.0.0.1:8080:8080"]  # the host's loopback only
    assert published.pop("prometheus") == ["127.0.0.1:9090:9090"]
    assert published.pop("alertmanager") == ["127.0.0.1:9093:9093"]
    assert not any(published.values()), published  # Redis, services, ComfyUIs: none
    assert not any("ports" in service for service in services(GPU_OVERRIDE).values())
    for name, service in services(COMPOSE).items():
        assert "network_mode" not in service, name


def test_logdy_is_started_the_way_its_image_needs() -> None:
    logdy = services(COMPOSE)["logdy"]
    # The image runs `sh -c <command>`: one string, or only the first word would run.
    assert isinstance(logdy["command"], list)
    assert len(logdy["command"]) == 1
    command = resolve(logdy["command"][0])
    assert "; exec logdy socket 8233 " in command  # logdy replaces the shell: it gets SIGTERM
    assert "--ui-ip=0.0.0.0" in command
    assert "--config=/etc/logdy/logdy.config.json" in command
    assert "./logdy/logdy.config.json:/etc/logdy/logdy.config.json:ro" in logdy["volumes"]
    assert logdy["init"] is True


def test_logdy_ui_always_has_a_password_and_no_command_line_shows_it() -> None:
    logdy = services(COMPOSE)["logdy"]
    command = resolve(logdy["command"][0])
    assert resolve(logdy["environment"]["LOGDY_UI_PASS"]) == ""  # unset: drawn at start
    # Drawn by the container's shell when empty, printed for the operator, and handed to logdy
    # in its environment (logdy reads LOGDY_UI_PASS itself), never as --ui-pass.
    assert command.startswith('if [ -z "$LOGDY_UI_PASS" ]; then LOGDY_UI_PASS=$(')
    assert "/dev/urandom" in command
    assert 'echo "logdy UI password (generated' in command
    assert "export LOGDY_UI_PASS; exec logdy " in command
    assert "--ui-pass" not in command


def test_monitoring_profile_mounts_the_files_of_deploy_monitoring() -> None:
    all_services = services(COMPOSE)
    for name, service in all_services.items():
        profile = PROFILE_OF.get(name)
        assert service.get("profiles", []) == ([profile] if profile else []), name
    for name in MONITORING:
        service = all_services[name]
        # Pinned to the versions promtool and amtool check the files with (Debian bookworm's).
        assert service["image"] in {"prom/prometheus:v2.42.0", "prom/alertmanager:v0.25.0"}
        assert "depends_on" not in service  # it has to alert while the stack is down
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).is_file(), f"{name} mounts {source}, which is missing"
    prometheus = all_services["prometheus"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"]}
    config = load(ROOT / mounts["/etc/prometheus/prometheus.yml"])
    for rule_file in config["rule_files"]:  # relative to the configuration's folder
        assert f"/etc/prometheus/{rule_file}" in mounts, rule_file
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    balancer_job = jobs["comfy-balancer"]  # the name the alert rules use
    token_file = balancer_job["authorization"]["credentials_file"]
    command = resolve(prometheus["command"][0])
    assert f"""printf '%s' "$METRICS_TOKEN" > {token_file} && exec /bin/prometheus """ in command
    token_folder = str(Path(token_file).parent)
    assert any(mount.startswith(f"{token_folder}:size=") for mount in prometheus["tmpfs"])
    assert "--config.file=/etc/prometheus/prometheus.yml" in command
    assert resolve(prometheus["environment"]["METRICS_TOKEN"]) == SAMPLE_SECRET  # the admin key
    [target] = balancer_job["static_configs"][0]["targets"]
    assert target == "balancer:8000"


def test_redis_keeps_its_data() -> None:
    compose = load(COMPOSE)
    redis = compose["services"]["redis"]
    script = redis["command"][-1]
    assert redis["command"][:2] == ["sh", "-c"]
    assert script.startswith("exec redis-server --appendonly yes --appendfsync always - <<EOF")
    assert "redis-data:/data" in redis["volumes"]
    assert "redis-data" in compose["volumes"]


def test_redis_requires_the_password_and_every_url_carries_it() -> None:
    all_services = services(COMPOSE)
    redis = all_services["redis"]
    # From the environment into redis-server's stdin configuration: on no command line.
    assert "\nrequirepass $$REDISCLI_AUTH\n" in redis["command"][-1]
    assert resolve(redis["environment"]["REDISCLI_AUTH"]) == SAMPLE_SECRET
    # redis-cli exits 0 on "NOAUTH": the check must see PONG, and authenticates (REDISCLI_AUTH).
    assert redis["healthcheck"]["test"] == ["CMD-SHELL", "redis-cli ping | grep -qx PONG"]
    urls = {
        f"{name} {key}": resolve(value)
        for name, service in all_services.items()
        for key, value in service.get("environment", {}).items()
        if key.endswith("REDIS_URL")
    }
    # the balancer, both services, the autoscaler's own and the one it passes to its nodes
    assert len(urls) == 5
    for where, url in urls.items():
        assert url == f"redis://:{SAMPLE_SECRET}@redis:6379/0", where


def test_secrets_are_required_and_have_no_default_anywhere() -> None:
    for compose_file in (COMPOSE, GPU_OVERRIDE):
        for match in INTERPOLATION.finditer(compose_file.read_text()):
            if match.group("name") in SECRETS:
                assert match.group("operator") == ":?", match.group(0)  # empty counts as unset
                assert ".env.example" in match.group("argument")  # says where to look
    environments = {name: s.get("environment", {}) for name, s in services(COMPOSE).items()}
    for name in ("balancer", "service-1", "service-2"):
        assert resolve(environments[name]["COMFY_INTERNAL_TOKEN"]) == SAMPLE_SECRET, name
    assert resolve(environments["balancer"]["COMFY_BALANCER_ADMIN_KEY"]) == SAMPLE_SECRET
    example = (ROOT / ".env.example").read_text()
    for secret in SECRETS:
        assert re.search(rf"^{secret}=$", example, re.MULTILINE), secret  # empty: must be filled


def test_every_container_is_locked_down() -> None:
    for name, service in services(COMPOSE).items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert not {"cap_add", "privileged"} & set(service), name
        assert service["security_opt"] == ["no-new-privileges:true"], name
        assert re.fullmatch(r"\d+[mg]", resolve(service["mem_limit"])), name
        logging = service["logging"]
        assert logging["driver"] == "json-file", name
        assert resolve(logging["options"]["max-size"]) == "10m", name
        assert resolve(logging["options"]["max-file"]) == "3", name
        assert any(mount.startswith("/tmp:size=") for mount in service["tmpfs"]), name
        if name in THIRD_PARTY:  # ours run as the Dockerfiles' USER (checked below)
            assert service["user"] not in {"root", "0", "0:0"}, name


def test_gpu_comfyui_keeps_the_lock_down_with_room_to_write() -> None:
    base = services(COMPOSE)
    for name, service in services(GPU_OVERRIDE).items():
        assert not {"read_only", "cap_drop", "security_opt", "user"} & set(service), name
        if not name.startswith("comfyui-"):
            continue
        assert resolve(service["mem_limit"]) == "32g"
        # Compose joins the tmpfs lists of both files: one mount point may appear only once.
        mounts = [mount.split(":")[0] for mount in base[name]["tmpfs"] + service["tmpfs"]]
        assert len(mounts) == len(set(mounts)), mounts
        assert {"/opt/ComfyUI/input", "/opt/ComfyUI/temp", "/opt/ComfyUI/user"} <= set(mounts)
        assert f"{name}-output:/opt/ComfyUI/output" in service["volumes"]


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
    custom_nodes = (ROOT / "docker" / "comfyui" / "custom-nodes.txt").read_text()
    assert "github.com/smthemex/ComfyUI_StoryDiffusion" in custom_nodes
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
