"""deploy/monitoring/, checked without running Prometheus: the alert rules pass
``promtool check rules`` and their unit tests (``promtool test rules``), the Alertmanager
example passes ``amtool check-config``. Skipped where Debian's prometheus and
prometheus-alertmanager are missing (``./dev test`` installs them as root)."""

from __future__ import annotations

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
TOKEN_FILE = "/run/prometheus/balancer-token"
"""Where the compose service writes the balancer's bearer token (METRICS_TOKEN)."""

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
