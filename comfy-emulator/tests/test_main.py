"""The command line: argument mapping, and a real `python -m comfy_emulator` process."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import pytest

from comfy_emulator.__main__ import build_parser, config_from_args
from comfy_emulator.config import DEFAULT_CHECKPOINTS, ModelCost
from comfy_emulator.testing import EmulatorClient


def test_flags_map_to_the_config(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        [
            "--listen", "0.0.0.0", "--port", "0", "--data-dir", str(tmp_path),
            "--step-time", "0.2", "--speed", "4",
            "--model", "a.safetensors", "--model", "b.safetensors",
            "--node-time", "ImageBlur=0.5", "--fail-next", "2", "--hang-next", "1",
            "--max-upload-mb", "5", "--device", "cpu", "--cache-none", "--quiet",
            "--comfyui-version", "0.26.0",
        ]
    )  # fmt: skip
    config = config_from_args(args)
    assert (config.host, config.port, config.data_dir) == ("0.0.0.0", 0, tmp_path)
    assert (config.step_time, config.speed, config.node_time) == (0.2, 4.0, {"ImageBlur": 0.5})
    assert config.models["checkpoints"] == ("a.safetensors", "b.safetensors")
    assert (config.fail_next, config.hang_next, config.max_upload_mb) == (2, 1, 5.0)
    assert (config.device, config.cache_enabled, config.log_to_stdout) == ("cpu", False, False)
    assert config.comfyui_version == "0.26.0"


def test_defaults() -> None:
    config = config_from_args(build_parser().parse_args([]))
    assert (config.port, config.step_time, config.speed, config.max_upload_mb) == (
        8188,
        0.05,
        1.0,
        100,
    )
    assert config.models["checkpoints"] == DEFAULT_CHECKPOINTS
    assert config.log_to_stdout
    assert config.comfyui_version == "0.8.0"
    assert (config.load_scale, config.model_costs, config.vram_total_mb) == (1.0, {}, 24564)


def test_model_costs_and_load_scale() -> None:
    sdxl, sd15 = "juggernautXL_v8Rundiffusion.safetensors", "v1-5-pruned-emaonly.safetensors"
    args = build_parser().parse_args(
        [
            "--model-cost", f"{sdxl}=12.5:7000", "--model-cost", f"{sd15}=3",
            "--load-scale", "0.3", "--vram-total-mb", "12288",
        ]
    )  # fmt: skip
    config = config_from_args(args)
    # Without MB the file keeps its family's VRAM size (SD1.5: 2,000 MB).
    assert config.model_costs == {sdxl: ModelCost(12.5, 7000), sd15: ModelCost(3.0, 2000)}
    assert (config.load_scale, config.vram_total_mb) == (0.3, 12288)


@pytest.mark.parametrize(
    "value",
    [
        "no-such-file.safetensors=2",
        "v1-5-pruned-emaonly.safetensors",
        "v1-5-pruned-emaonly.safetensors=x",
    ],
)
def test_a_bad_model_cost_is_refused(value: str) -> None:
    with pytest.raises(SystemExit, match="--model-cost expects FILE=SECONDS"):
        config_from_args(build_parser().parse_args(["--model-cost", value]))


def test_an_unknown_comfyui_version_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--comfyui-version", "0.9.0"])
    assert exited.value.code == 2
    assert "invalid choice: '0.9.0'" in capsys.readouterr().err


async def test_module_serves_until_sigterm(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "comfy_emulator", "--port", "0", "--data-dir", str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        url = await _announced_url(process)
        async with EmulatorClient(url) as client:
            assert (await client.get_json("/system_stats"))["system"]["comfyui_version"] == "0.8.0"
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _announced_url(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    async with asyncio.timeout(20):
        while True:
            line = (await process.stdout.readline()).decode()
            match = re.search(r"To see the GUI go to: (http://\S+)", line)
            if match:
                return match.group(1)
            assert line, "the emulator exited before announcing its port"
