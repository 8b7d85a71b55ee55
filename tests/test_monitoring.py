"""deploy/monitoring/, checked without running Prometheus or Grafana: the alert rules pass
``promtool check rules`` and their unit tests (``promtool test rules``), the Alertmanager
example passes ``amtool check-config`` (those skipped where Debian's prometheus and
prometheus-alertmanager are missing; ``./dev test`` installs them as root), and the rules and
the Grafana dashboard query only the metrics comfy-stack exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parents[1]
MONITORING = ROOT / "deploy" / "monitoring"
PROMETHEUS = MONITORING / "prometheus"
ALERTMANAGER = MONITORING / "alertmanager"
GRAFANA = MONITORING / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
TOKEN_FILE = "/run/prometheus/balancer-token"
"""Where the compose service writes the balancer's bearer token (the admin key)."""

EXPORTED = {
    # the balancer: the fleet (read from Redis, by the replica holding the lease) ...
    "comfy_queue_depth",
    "comfy_queue_oldest_age_seconds",
    "comfy_nodes",
    "comfy_node_up",
    "comfy_node_slots",
    "comfy_node_tasks_in_flight",
    "comfy_node_gpu_info",
    "comfy_node_vram_used_bytes",
    "comfy_node_vram_total_bytes",
    "comfy_node_gpu_temperature_celsius",
    "comfy_node_gpu_utilization_ratio",
    "comfy_node_gpu_power_watts",
    "comfy_node_gpu_power_limit_watts",
    "comfy_node_gpu_xid_errors_total",
    "comfy_node_gpu_last_xid",
    "comfy_budget_gpu_seconds",
    "comfy_budget_used_gpu_seconds",
    # ... and each replica's own counters (the histograms below too)
    "comfy_tasks_submitted_total",
    "comfy_admission_rejected_total",
    "comfy_idempotent_hits_total",
    "comfy_tasks_finished_total",
    "comfy_task_retries_total",
    "comfy_lease_expired_total",
    "comfy_dispatch_total",
    "comfy_webhook_dead_letters",
    "comfy_redis_up",
    # each comfy-service
    "comfy_node_queue_remaining",
    "comfy_node_ram_rss_bytes",
    "comfy_node_restarts_total",
    "comfy_node_loaded_model_info",
    "comfy_node_out_of_memory_frees_total",
    # every process
    "comfy_stream_clients",
    # Prometheus' own, per target
    "up",
}
HISTOGRAMS = {
    "comfy_task_queue_wait_seconds",
    "comfy_task_run_seconds",
    "comfy_task_e2e_seconds",
    "comfy_model_switch_seconds",
}
KNOWN_METRICS = EXPORTED | {
    f"{h}_{part}" for h in HISTOGRAMS for part in ("bucket", "sum", "count")
}
NOT_METRICS = re.compile(
    r'"[^"]*"'  # strings
    r"|\{[^}]*\}"  # label matchers
    r"|\[[^]]*\]"  # ranges
    r"|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"  # label lists
    r"|\b[a-z_]+\s*\("  # function and aggregation calls
    r"|\b(?:and|or|unless|bool|offset|group_left|group_right)\b"  # these two may take no list
)
"""What in a PromQL expression is not a metric name (good enough for the ones here)."""


def metrics_in(expr: str) -> set[str]:
    """The metric names an expression selects."""
    while (shorter := NOT_METRICS.sub(" ", expr)) != expr:  # `sum by (x) (` takes two rounds
        expr = shorter
    return set(re.findall(r"[A-Za-z_:][\w:]*", expr))


def recorded_names() -> set[str]:
    groups = yaml_of(PROMETHEUS / "rules.yml")["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in panels_of(dashboard) for target in panel["targets"]]


def panels_of(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """The dashboard's panels that query (rows only group them)."""
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is missing (Debian's prometheus package; ./dev test installs it as root)",
)
needs_amtool = pytest.mark.skipif(
    shutil.which("amtool") is None,
    reason="amtool is missing (Debian's prometheus-alertmanager; ./dev test installs it as root)",
)


def yaml_of(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def run_tool(*command: str, cwd: Path) -> str:
    """Run a Prometheus tool; fail the test with its whole output unless it exits 0."""
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{output}"
    return output


@needs_promtool
def test_rules_are_valid() -> None:
    output = run_tool("promtool", "check", "rules", "rules.yml", cwd=PROMETHEUS)
    assert "SUCCESS" in output


@needs_promtool
def test_rules_pass_their_unit_tests() -> None:
    output = run_tool("promtool", "test", "rules", "rules_test.yml", cwd=PROMETHEUS)
    assert "SUCCESS" in output


def test_every_alert_has_a_unit_test_and_severity() -> None:
    rules = yaml_of(PROMETHEUS / "rules.yml")
    alerts = [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]
    tested = {
        check["alertname"]
        for test in yaml_of(PROMETHEUS / "rules_test.yml")["tests"]
        for check in test.get("alert_rule_test", [])
        if check["exp_alerts"]  # one that fires: each also has checks where it must not
    }
    for alert in alerts:
        assert alert["alert"] in tested, alert["alert"]
        assert alert["labels"]["severity"] in {"warning", "critical"}, alert["alert"]
        assert {"summary", "description"} <= set(alert["annotations"]), alert["alert"]
        assert "for" in alert, alert["alert"]


@needs_promtool
def test_prometheus_config_is_valid(tmp_path: Path) -> None:
    # Checked whole (rule files too) where the token file it names exists: the compose service
    # writes that file at start.
    token = tmp_path / "balancer-token"
    token.write_text("sample-token")
    config = (PROMETHEUS / "prometheus.yml").read_text()
    assert config.count(TOKEN_FILE) == 1
    (tmp_path / "prometheus.yml").write_text(config.replace(TOKEN_FILE, str(token)))
    shutil.copy(PROMETHEUS / "rules.yml", tmp_path / "rules.yml")
    output = run_tool("promtool", "check", "config", "prometheus.yml", cwd=tmp_path)
    assert "SUCCESS: 1 rule files found" in output


@needs_amtool
def test_alertmanager_config_is_valid() -> None:
    output = run_tool("amtool", "check-config", "alertmanager.yml", cwd=ALERTMANAGER)
    assert "SUCCESS" in output


def test_rules_query_only_exported_metrics() -> None:
    allowed = KNOWN_METRICS | recorded_names()
    for group in yaml_of(PROMETHEUS / "rules.yml")["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule["record"]
            assert metrics_in(rule["expr"]), name
            assert metrics_in(rule["expr"]) <= allowed, (name, metrics_in(rule["expr"]) - allowed)


def test_metric_names_are_found_in_expressions() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(comfy_task_run_seconds_bucket{node="a"}[5m])))'
        " / on (node) group_left (gpu_model) comfy_node_gpu_info unless on () up == 0"
    )
    assert metrics_in(expr) == {"comfy_task_run_seconds_bucket", "comfy_node_gpu_info", "up"}
    assert metrics_in("a / ignoring (reason) group_left sum by (w) (b)") == {"a", "b"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_dashboard_queries_only_exported_metrics(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    for expr in dashboard_exprs(dashboard):
        assert metrics_in(expr), expr
        assert metrics_in(expr) <= KNOWN_METRICS, (expr, metrics_in(expr) - KNOWN_METRICS)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_dashboard_panels_have_titles_and_the_provisioned_datasource(path: Path) -> None:
    [datasource] = yaml_of(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")[
        "datasources"
    ]
    expected = {"type": datasource["type"], "uid": datasource["uid"]}
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"]
    assert dashboard["title"]
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in dashboard["panels"]:
        assert panel["title"].strip(), panel["id"]
    for panel in panels_of(dashboard):
        assert panel["datasource"] == expected, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected, panel["title"]
    covered = {metric for expr in dashboard_exprs(dashboard) for metric in metrics_in(expr)}
    # The service-only metrics repeat what the balancer shows fleet-wide; the dead letters,
    # total VRAM and the latest XID code are for alerts.
    left_out = {
        "comfy_node_queue_remaining",
        "comfy_node_ram_rss_bytes",
        "comfy_webhook_dead_letters",
        "comfy_node_gpu_last_xid",
        "comfy_node_vram_total_bytes",
        "up",
    }
    assert covered >= EXPORTED - left_out


@needs_promtool
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_dashboard_queries_are_valid_promql(path: Path, tmp_path: Path) -> None:
    # promtool parses PromQL in rule files: each query becomes a recording rule, with the
    # range Grafana fills in ($__rate_interval) set to one Prometheus accepts.
    exprs = dashboard_exprs(json.loads(path.read_text()))
    rules = [
        {"record": f"dashboard:query_{index}", "expr": expr.replace("$__rate_interval", "5m")}
        for index, expr in enumerate(exprs)
    ]
    (tmp_path / "queries.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "q", "rules": rules}]})
    )
    output = run_tool("promtool", "check", "rules", "queries.yml", cwd=tmp_path)
    assert f"SUCCESS: {len(exprs)} rules found" in output


@needs_amtool
@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=ComfyTasksQueuedNoNode", "severity=critical"], "pager"),
        (["alertname=ComfyNodeDown", "severity=warning", "node=node-1"], "warnings"),
    ],
)
def test_alertmanager_routes_by_severity(labels: list[str], receiver: str) -> None:
    output = run_tool(
        "amtool",
        "config",
        "routes",
        "test",
        "--config.file=alertmanager.yml",
        *labels,
        cwd=ALERTMANAGER,
    )
    assert output.splitlines()[0].strip() == receiver


def test_alertmanager_routes_every_severity_the_rules_use() -> None:
    groups = yaml_of(PROMETHEUS / "rules.yml")["groups"]
    used = {rule["labels"]["severity"] for g in groups for rule in g["rules"] if "alert" in rule}
    routed = {
        matcher
        for route in yaml_of(ALERTMANAGER / "alertmanager.yml")["route"]["routes"]
        for matcher in route["matchers"]
    }
    assert used == {"critical", "warning"}  # warning: the default route
    assert 'severity="critical"' in routed
