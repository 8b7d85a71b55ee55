"""``comfy-stack``: run the whole stack locally, and talk to it from the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from comfy_stack.commands import add_client_commands, run_client_command
from comfy_stack.credentials import ADMIN_KEY_FILE
from comfy_stack.launcher import (
    LaunchError,
    RunningStack,
    StackPlan,
    running_stack,
    wait_for_stop_signal,
)
from comfy_stack.logview import LogView


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.run is _up:
        raise SystemExit(_up(args))
    raise SystemExit(run_client_command(args, args.run))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="comfy-stack", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    up = commands.add_parser("up", help="start the whole stack on this machine")
    up.add_argument(
        "--emulators", type=int, default=2, help="emulated ComfyUI servers to start (default 2)"
    )
    up.add_argument(
        "--comfyui",
        action="append",
        default=[],
        metavar="URL",
        help="use this real ComfyUI instead of emulators (repeat for several)",
    )
    up.add_argument("--redis-url", help="use this Redis instead of starting an embedded one")
    up.add_argument("--port", type=int, default=8000, help="the balancer's port (default 8000)")
    up.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".comfy-stack"),
        help="where the embedded Redis, emulators and logs keep their files (default .comfy-stack)",
    )
    up.add_argument(
        "--step-time", type=float, default=0.05, help="emulated seconds per sampler step"
    )
    up.set_defaults(run=_up)
    add_client_commands(commands)
    return parser


def _up(args: argparse.Namespace) -> int:
    plan = StackPlan(
        data_dir=args.data_dir.resolve(),
        emulators=args.emulators,
        comfyui_urls=tuple(args.comfyui),
        redis_url=args.redis_url,
        port=args.port,
        step_time_s=args.step_time,
    )
    view = LogView([])
    view.start()
    try:
        with running_stack(plan, view) as stack:
            _print_summary(stack)
            return wait_for_stop_signal(stack)
    except LaunchError as exc:
        print(f"comfy-stack: {exc}", file=sys.stderr)
        return 2
    finally:
        view.stop()


def _print_summary(stack: RunningStack) -> None:
    lines = [
        "",
        "comfy-stack is up",
        f"  api       {stack.balancer_url}   (docs: {stack.balancer_url}/docs, "
        f"nodes: {stack.balancer_url}/api/v1/nodes)",
        f"  web UI    {stack.balancer_url}/   (ComfyUI; sign in with an API key)",
        f"  console   {stack.balancer_url}/console   (generate, tasks, nodes, queue, keys)",
        f"  admin key {stack.admin_key}   (kept in {ADMIN_KEY_FILE} of the data folder; "
        "comfy-stack commands here use it)",
        f"  redis     {stack.redis_url}",
        *(f"  comfyui   {url}" for url in stack.comfyui_urls),
        *(f"  service   {url}   (docs: {url}/docs)" for url in stack.service_urls),
        f"  services answer only with this run's internal token ({stack.internal_token_file})",
        "  Ctrl-C stops everything",
        "",
    ]
    print("\n".join(lines), flush=True)
