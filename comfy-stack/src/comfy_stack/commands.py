"""The client commands of ``comfy-stack``: generate, status, cancel, nodes (drain, undrain),
queue, usage, keys, groups.

Exit codes: 0 done, 1 the task failed (its error type and message printed) or was cancelled,
2 the request was refused (e.g. 422), 3 the stack could not be reached.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from comfy_stack.batch.command import add_batch_command
from comfy_stack.client import DEFAULT_URL, ApiError, StackClient
from comfy_stack.credentials import KEY_ENV, client_key
from comfy_stack.progress import ProgressLine

DEFAULT_WORKFLOW = "txt2img-sdxl"
BANDS = ["interactive", "standard", "batch"]
KEY_LIMITS = (
    "max_running", "max_queued", "submits_per_minute", "max_priority",
    "gpu_seconds_per_day", "gpu_seconds_per_month",
)  # fmt: skip


def add_client_commands(commands: Any) -> None:
    generate = commands.add_parser("generate", help="generate an image and save the outputs")
    generate.add_argument("text", nargs="?", help="the prompt (goes to the template's 'prompt')")
    generate.add_argument("--workflow", "-w", help=f"template name (default {DEFAULT_WORKFLOW})")
    generate.add_argument(
        "--param", "-p", action="append", default=[], metavar="NAME=VALUE",
        help="template parameter (repeatable); VALUE is JSON if it parses, else text; "
        "@FILE reads an image file",
    )  # fmt: skip
    generate.add_argument("--prompt-file", type=Path, help="an API-format graph to run instead")
    generate.add_argument("--priority", type=int, default=0, help="orders your own tasks")
    generate.add_argument("--band", choices=BANDS, help="default: your key's")
    generate.add_argument("--output", "-o", type=Path, help="file for the first output")
    generate.set_defaults(run=_generate)
    for name, handler, help_text in (
        ("status", _status, "show a task"),
        ("cancel", _cancel, "cancel a task"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("task_id")
        command.set_defaults(run=handler)
    _add_nodes_commands(commands)
    commands.add_parser("queue", help="the pending queue").set_defaults(run=_queue)
    usage = commands.add_parser("usage", help="tasks and GPU-seconds per tenant and UTC day")
    usage.add_argument("--tenant", help="one tenant (default: yours; an admin key: all)")
    usage.add_argument("--since", metavar="YYYY-MM-DD", help="default: the first of the month")
    usage.add_argument("--until", metavar="YYYY-MM-DD", help="default: today")
    usage.set_defaults(run=_usage)
    _add_keys_commands(commands)
    add_batch_command(commands)
    for name, command in commands.choices.items():
        if name not in ("up", "keys", "groups"):  # those: on each of their actions
            _add_connection_flags(command)


def _add_connection_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("--url", default=DEFAULT_URL, help=f"API base URL ({DEFAULT_URL})")
    command.add_argument(
        "--key",
        help=f"API key (default: ${KEY_ENV}; for the default URL, the local stack's admin key)",
    )


def _add_nodes_commands(commands: Any) -> None:
    """``nodes`` lists them; ``nodes drain ID`` / ``nodes undrain ID`` (an admin key) take a
    node out of rotation and put it back."""
    nodes = commands.add_parser("nodes", help="the nodes and their health; drain, undrain")
    nodes.set_defaults(run=_nodes)
    actions = nodes.add_subparsers(metavar="ACTION")
    for name, drained, help_text in (
        ("drain", True, "take a node out of rotation: it finishes its tasks, takes no new one"),
        ("undrain", False, "put a drained node back in rotation"),
    ):
        action = actions.add_parser(name, help=f"{help_text} (needs an admin key)")
        action.add_argument("node_id")
        action.set_defaults(run=_drain, drained=drained)
        _add_connection_flags(action)


def _add_keys_commands(commands: Any) -> None:
    keys = commands.add_parser("keys", help="API keys (needs an admin key)")
    actions = keys.add_subparsers(required=True, metavar="ACTION")
    create = actions.add_parser("create", help="make a key; its secret is printed once")
    create.add_argument("name")
    create.add_argument("--tenant", help="whose tasks it sees (default: the name)")
    create.add_argument(
        "--scope", action="append", choices=["submit", "read", "admin"],
        help="repeatable (default: submit and read)",
    )  # fmt: skip
    for limit in ("max-running", "max-queued", "submits-per-minute", "max-priority"):
        create.add_argument(f"--{limit}", type=int)
    for period in ("day", "month"):
        create.add_argument(
            f"--gpu-seconds-per-{period}", type=float,
            help=f"GPU-seconds its tasks may use per UTC {period}; then submits get 429",
        )  # fmt: skip
    create.add_argument("--band", choices=BANDS, help="its tasks' band (default standard)")
    create.add_argument("--max-band", choices=BANDS, help="the highest band it may ask for")
    create.add_argument("--weight", type=float, help="its share of a band (default 1)")
    create.add_argument("--group", help="a group of tenants capped together (see groups)")
    create.add_argument(
        "--webhook-url", help="where its tasks' ends are announced unless a request names one"
    )
    create.set_defaults(run=_create_key)
    actions.add_parser("list", help="every key, without secrets").set_defaults(run=_list_keys)
    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    revoke.set_defaults(run=_revoke_key)
    for action in actions.choices.values():
        _add_connection_flags(action)
    groups = commands.add_parser("groups", help="caps on groups of tenants (needs an admin key)")
    group_actions = groups.add_subparsers(required=True, metavar="ACTION")
    cap = group_actions.add_parser("set", help="cap the tasks a group runs at once")
    cap.add_argument("group")
    cap.add_argument("max_running", help="a number, or 'none' to lift the cap")
    cap.set_defaults(run=_set_group)
    group_actions.add_parser("list", help="every capped group").set_defaults(run=_list_groups)
    for action in group_actions.choices.values():
        _add_connection_flags(action)


def run_client_command(args: argparse.Namespace, handler: Callable[..., int]) -> int:
    client = StackClient.connect(args.url, client_key(args.key, args.url, DEFAULT_URL))
    try:
        return handler(client, args)
    except ApiError as exc:
        print(f"error ({exc.type}, {exc.code}): {exc}", file=sys.stderr)
        return 2
    except httpx.TransportError as exc:
        print(f"cannot reach {args.url}: {exc}", file=sys.stderr)
        return 3
    finally:
        client.close()


def _generate(client: StackClient, args: argparse.Namespace) -> int:
    task = client.generate(_request_body(args))
    progress = ProgressLine()
    final = client.follow(task["id"], progress.update)
    progress.finish()
    if final["status"] == "cancelled":
        print(f"task {final['id']} was cancelled", file=sys.stderr)  # not an error of its own
        return 1
    if final["status"] != "succeeded":
        error = final["error"]
        print(f"task {final['id']} failed: ({error['type']}) {error['message']}", file=sys.stderr)
        return 1
    for path in client.download(final, args.output):
        print(path)
    return 0


def _request_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"priority": args.priority}
    if args.band:
        body["band"] = args.band
    if args.prompt_file is not None:
        return body | {"prompt": json.loads(args.prompt_file.read_text())}
    params = dict(_parse_param(item) for item in args.param)
    if args.text is not None:
        params.setdefault("prompt", args.text)
    return body | {"workflow": args.workflow or DEFAULT_WORKFLOW, "params": params}


def _parse_param(item: str) -> tuple[str, Any]:
    name, separator, raw = item.partition("=")
    if not separator:
        raise SystemExit(f"--param {item!r}: expected NAME=VALUE")
    if raw.startswith("@"):
        return name, base64.b64encode(Path(raw[1:]).read_bytes()).decode()
    try:
        return name, json.loads(raw)
    except json.JSONDecodeError:
        return name, raw


def _status(client: StackClient, args: argparse.Namespace) -> int:
    print(json.dumps(client.task(args.task_id), indent=2))
    return 0


def _cancel(client: StackClient, args: argparse.Namespace) -> int:
    task = client.cancel(args.task_id)
    print(f"{task['id']} {task['status']}")
    return 0


def _nodes(client: StackClient, args: argparse.Namespace) -> int:
    rows = [["node", "state", "in flight", "comfyui", "queue", "s/step", "cpu %", "gpus", "url"]]
    for node in client.nodes():
        health = node.get("health") or {}
        comfy = health.get("comfyui") or {}
        speed = health.get("speed")
        rows.append([
            node["node_id"], node["state"], f"{node['in_flight']}/{node['slots']}",
            "up" if comfy.get("reachable") else "down",
            f"{comfy.get('queue_running', 0)}+{comfy.get('queue_pending', 0)}",
            f"{speed['seconds_per_step']:.3f}" if speed else "-",
            f"{health.get('cpu_percent', 0):.0f}", str(len(health.get("gpus", []))),
            node.get("url") or "-",
        ])  # fmt: skip
    _print_table(rows)
    return 0


def _drain(client: StackClient, args: argparse.Namespace) -> int:
    node = client.set_drained(args.node_id, drained=args.drained)
    print(f"{node['node_id']} {node['state']}")
    return 0


def _queue(client: StackClient, args: argparse.Namespace) -> int:
    queue = client.queue()
    wait = queue["oldest_wait_s"]
    print(f"pending: {queue['pending']}, oldest wait: {wait if wait is not None else '-'} s")
    for band, count in queue["by_band"].items():
        print(f"  {band}: {count}")
    if queue["aged"]:
        print(f"  batch tasks promoted after their longest wait: {queue['aged']}")
    return 0


def _usage(client: StackClient, args: argparse.Namespace) -> int:
    report = client.usage(args.tenant, args.since, args.until)
    print(f"usage from {report['since']} to {report['until']} (UTC days a task ended)")
    _print_table(usage_rows(report))
    return 0


def usage_rows(report: dict[str, Any]) -> list[list[str]]:
    """A usage report as table rows: each tenant's days, then its total."""
    rows = [
        ["tenant", "day", "succeeded", "failed", "cancelled", "gpu-s", "by workflow", "by node"]
    ]
    for tenant in report["tenants"]:
        for day in tenant["days"]:
            rows.append([tenant["tenant"], day["day"], *_usage_cells(day)])
        rows.append([tenant["tenant"], "total", *_usage_cells(tenant["totals"])])
    return rows


def _usage_cells(usage: dict[str, Any]) -> list[str]:
    tasks = usage["tasks"]
    return [
        str(tasks["succeeded"]), str(tasks["failed"]), str(tasks["cancelled"]),
        f"{usage['gpu_s']:.3f}", _amounts(usage["gpu_s_by_workflow"]),
        _amounts(usage["gpu_s_by_node"]),
    ]  # fmt: skip


def _amounts(by_name: dict[str, float]) -> str:
    return " ".join(f"{name}={amount:.3f}" for name, amount in by_name.items()) or "-"


def _create_key(client: StackClient, args: argparse.Namespace) -> int:
    limits = {name: getattr(args, name) for name in KEY_LIMITS if getattr(args, name) is not None}
    body: dict[str, Any] = {"name": args.name, "limits": limits}
    if args.tenant:
        body["tenant"] = args.tenant
    if args.scope:
        body["scopes"] = args.scope
    share = {
        name: getattr(args, name)
        for name in ("band", "max_band", "weight", "group")
        if getattr(args, name) is not None
    }
    if share:
        body["share"] = share
    if args.webhook_url:
        body["webhook_url"] = args.webhook_url
    key = client.create_key(body)
    print(f"{key['id']}  tenant {key['tenant']}  scopes {','.join(key['scopes'])}")
    print(key["key"])  # the secrets: shown this once
    print(f"webhook signing secret: {key['webhook_secret']}")
    return 0


def _list_keys(client: StackClient, args: argparse.Namespace) -> int:
    rows = [["id", "name", "tenant", "scopes", "limits", "share", "created"]]
    for key in client.api_keys():
        limits = ",".join(f"{k}={v}" for k, v in key["limits"].items() if v is not None)
        share = ",".join(f"{k}={v}" for k, v in key["share"].items() if v is not None)
        rows.append([
            key["id"], key["name"], key["tenant"], ",".join(key["scopes"]), limits or "-",
            share, key["created_at"][:19],
        ])  # fmt: skip
    _print_table(rows)
    return 0


def _set_group(client: StackClient, args: argparse.Namespace) -> int:
    most = None if args.max_running == "none" else int(args.max_running)
    client.set_group(args.group, most)
    print(f"group {args.group}: " + (f"at most {most} running" if most else "no cap"))
    return 0


def _list_groups(client: StackClient, args: argparse.Namespace) -> int:
    rows = [["group", "max running"]]
    rows += [[group, str(limit["max_running"])] for group, limit in client.groups().items()]
    _print_table(rows)
    return 0


def _revoke_key(client: StackClient, args: argparse.Namespace) -> int:
    key = client.revoke_key(args.key_id)
    print(f"{key['id']} ({key['name']}) revoked")
    return 0


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
