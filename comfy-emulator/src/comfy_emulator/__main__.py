"""Command line: `comfy-emulator [options]` or `python -m comfy_emulator [options]`.

Serves one emulator until SIGINT/SIGTERM. The log ring buffer is echoed to stdout (plain text,
as ComfyUI prints it) unless `--quiet`; the line "To see the GUI go to: http://HOST:PORT" tells
which port was bound (useful with `--port 0`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from comfy_emulator.config import (
    DEFAULT_CHECKPOINTS,
    DEFAULT_LORAS,
    EmulatorConfig,
    ModelCost,
    default_models,
)
from comfy_emulator.model_memory import ModelCatalogue
from comfy_emulator.runner import start_emulator
from comfy_emulator.versions import COMFYUI_VERSIONS, DEFAULT_COMFYUI_VERSION


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="comfy-emulator", description="A GPU-free ComfyUI emulator (HTTP + WebSocket)."
    )
    parser.add_argument("--host", "--listen", default="127.0.0.1", help="bind address")
    parser.add_argument("--port", type=int, default=8188, help="TCP port (0 = any free port)")
    parser.add_argument(
        "--data-dir", type=Path, help="root of input/, output/, temp/ (default: a temp dir)"
    )
    parser.add_argument("--input-dir", type=Path)
    parser.add_argument("--output-dir", type=Path)
    parser.add_argument("--temp-dir", type=Path)
    parser.add_argument("--step-time", type=float, default=0.05, help="seconds per KSampler step")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="speed factor (2.0 = twice as fast)"
    )
    parser.add_argument(
        "--node-time",
        action="append",
        default=[],
        metavar="CLASS=SECONDS",
        help="extra simulated seconds for a node class (repeatable)",
    )
    parser.add_argument(
        "--load-scale",
        type=float,
        default=1.0,
        metavar="X",
        help="multiplies every model load time (default 1.0: real switch costs, e.g. 8 s for "
        "SDXL; 0.01 for fast tests)",
    )
    parser.add_argument(
        "--model-cost",
        action="append",
        default=[],
        metavar="FILE=SECONDS[:MB]",
        help="load time (at speed and load scale 1.0) and VRAM of an installed model file "
        "(repeatable; default: by file family, see comfy_emulator.model_memory)",
    )
    parser.add_argument(
        "--vram-total-mb", type=int, default=24564, help="VRAM of the emulated GPU in MB"
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME",
        help=f"installed checkpoint (repeatable; default: {', '.join(DEFAULT_CHECKPOINTS)})",
    )
    parser.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="NAME",
        help=f"installed LoRA (repeatable; default: {', '.join(DEFAULT_LORAS)})",
    )
    parser.add_argument(
        "--max-upload-mb", type=float, help="request body limit in MB (default 100)"
    )
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="device reported")
    parser.add_argument(
        "--preview-method", choices=["none", "auto", "latent2rgb", "taesd"], default="none"
    )
    parser.add_argument(
        "--fail-next", type=int, default=0, metavar="N", help="next N prompts fail (CUDA OOM)"
    )
    parser.add_argument("--hang-next", type=int, default=0, metavar="N", help="next N prompts hang")
    parser.add_argument("--cache-none", action="store_true", help="disable the output cache")
    parser.add_argument("--disable-metadata", action="store_true", help="no PNG text chunks")
    parser.add_argument("--no-origin-check", action="store_true", help="skip the Host/Origin check")
    parser.add_argument("--quiet", action="store_true", help="do not echo the log to stdout")
    parser.add_argument(
        "--comfyui-version",
        choices=COMFYUI_VERSIONS,
        default=DEFAULT_COMFYUI_VERSION,
        help="the ComfyUI to behave like: 0.8.0 (default, as recorded) or 0.26.0 (prompt_id must"
        " be a canonical UUID, cancel by job id, /api/jobs with 'cancelled')",
    )
    parser.add_argument(
        "--web-extensions",
        type=Path,
        metavar="DIR",
        help="custom nodes' web directories, one subfolder per pack: listed by /extensions, "
        "served under /extensions/<pack>/",
    )
    return parser


def _node_times(values: Sequence[str]) -> dict[str, float]:
    times = {}
    for value in values:
        name, sep, seconds = value.partition("=")
        if not sep:
            raise SystemExit(f"--node-time expects CLASS=SECONDS, got {value!r}")
        times[name] = float(seconds)
    return times


def _model_costs(
    values: Sequence[str], models: Mapping[str, tuple[str, ...]]
) -> dict[str, ModelCost]:
    defaults = ModelCatalogue(models, {})
    costs = {}
    for value in values:
        file, sep, cost = value.partition("=")
        seconds, _, mb = cost.partition(":")
        spec = defaults.spec(file)
        try:
            if not sep or spec is None:
                raise ValueError(file)
            costs[file] = ModelCost(float(seconds), int(mb) if mb else spec.cost.vram_mb)
        except ValueError:
            raise SystemExit(
                f"--model-cost expects FILE=SECONDS[:MB] of an installed file, got {value!r}"
            ) from None
    return costs


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    models = default_models() | {
        "checkpoints": tuple(args.model) or DEFAULT_CHECKPOINTS,
        "loras": tuple(args.lora) or DEFAULT_LORAS,
    }
    optional: dict[str, Any] = {}
    if args.max_upload_mb is not None:
        optional["max_upload_mb"] = args.max_upload_mb
    return EmulatorConfig(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        input_dir=args.input_dir,
        output_dir=args.output_dir,
        temp_dir=args.temp_dir,
        models=models,
        step_time=args.step_time,
        speed=args.speed,
        node_time=_node_times(args.node_time),
        vram_total_mb=args.vram_total_mb,
        model_costs=_model_costs(args.model_cost, models),
        load_scale=args.load_scale,
        device=args.device,
        preview_method=args.preview_method,
        fail_next=args.fail_next,
        hang_next=args.hang_next,
        cache_enabled=not args.cache_none,
        metadata_enabled=not args.disable_metadata,
        origin_check=not args.no_origin_check,
        log_to_stdout=not args.quiet,
        comfyui_version=args.comfyui_version,
        web_extensions=args.web_extensions,
        **optional,
    )


async def serve(config: EmulatorConfig) -> None:
    """Run until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    running = await start_emulator(config)
    try:
        await stop.wait()
    finally:
        await running.stop()


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config_from_args(args)))


if __name__ == "__main__":
    main()
