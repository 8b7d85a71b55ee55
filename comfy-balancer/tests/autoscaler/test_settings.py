"""The autoscaler's settings from flags and environment."""

import pytest

from comfy_balancer.autoscaler.settings import AutoscalerSettings
from comfy_shared.errors import SettingsError
from comfy_shared.settings import settings_from_argv


def parse(*argv: str) -> AutoscalerSettings:
    return settings_from_argv(AutoscalerSettings, list(argv), prog="t", description="t")


def test_lists_repeat_and_mappings_are_json_on_the_command_line() -> None:
    settings = parse("--gpus", "0", "--gpus", "GPU-1a", "--env", '{"A": "{node_id}"}')

    assert settings.gpus == ["0", "GPU-1a"]
    assert settings.env == {"A": "{node_id}"}


def test_both_are_json_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFY_AUTOSCALER_GPUS", '["2", "3"]')
    monkeypatch.setenv("COMFY_AUTOSCALER_LABELS", '{"team": "gpu"}')

    settings = AutoscalerSettings(_env_file=None)

    assert (settings.gpus, settings.labels) == (["2", "3"], {"team": "gpu"})


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--min-nodes", "3", "--max-nodes", "2"], "min_nodes is larger than max_nodes"),
        (["--gpus", "0", "--gpus", "0"], "gpus lists a GPU twice"),
        (["--env", "{not json"], "--env"),
        (["--node-prefix", "a b"], "--node-prefix"),
    ],
)
def test_bad_settings_are_refused_with_what_is_wrong(argv: list[str], problem: str) -> None:
    with pytest.raises(SettingsError, match=problem):
        parse(*argv)


def test_the_limits_carry_every_policy_setting() -> None:
    settings = parse("--min-nodes", "2", "--restart-grace-s", "5", "--node-prefix", "n-")
    limits = settings.limits

    assert (limits.min_nodes, limits.restart_grace_s, limits.node_id_for("7")) == (2, 5.0, "n-7")
