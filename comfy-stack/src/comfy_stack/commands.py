"""The client commands of ``comfy-stack``: generate, status, cancel, tasks, logs, events,
workflows, nodes (drain, undrain), queue, usage, keys, groups, env.

Every command takes ``--url``, ``--key`` and ``--json`` (see ``credentials`` for the defaults).
With ``--json`` the standard output holds exactly one JSON document (``events``: one per
line), the result or ``{"error": {"status", "code", "type", "detail", ...}}``.

Exit codes: 0 done; 1 the task failed (its error type and message printed) or was cancelled;
2 the request was refused (by the API, e.g. 422, or here: a bad argument, an output file that
exists); 3 the stack could not be reached.
"""

from __future__ import annotations

import argparse
import base64
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from comfy_stack.batch.command import add_batch_command
from comfy_stack.client import ApiError, StackClient
from comfy_stack.credentials import (
    API_KEY_ENV,
    URL_ENV,
    client_key,
    client_url,
)
from comfy_stack.output import (
    describe_error,
    error_document,
    print_json,
    print_table,
    unreachable_document,
)
from comfy_stack.progress import ProgressLine, describe

DEFAULT_WORKFLOW = "txt2img-sdxl"
BANDS = ["interactive", "standard", "batch"]
STATUSES = ["queued", "dispatched", "running", "succeeded", "failed", "cancelled"]
KEY_LIMITS = (
    "max_running", "max_queued", "submits_per_minute", "max_priority",
    "gpu_seconds_per_day", "gpu_seconds_per_month",
)  # fmt: skip
EXIT_OK, EXIT_TASK_FAILED, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2, 3
_WITHOUT_CONNECTION = frozenset({"up", "keys", "groups", "completion"})
"""Commands that take no connection flags themselves (keys and groups: on each action)."""


class Refused(Exception):
    """The command refuses before asking the API (exit 2); the message says why."""


def add_client_commands(commands: Any) -> None:
    _add_generate_command(commands)
    for name, handler, help_text in (
        ("cancel", _cancel, "cancel a task"),
        ("logs", _logs, "a task's log lines from every process that handled it"),
        ("events", _events, "a task's events from its first, until it ends"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("task_id")
        command.set_defaults(run=handler)
    status = commands.add_parser("status", help="show a task; without one, the stack")
    status.add_argument("task_id", nargs="?")
    status.set_defaults(run=_status)
    _add_tasks_command(commands)
    workflows = commands.add_parser("workflows", help="the templates and their parameters")
    workflows.add_argument("name", nargs="?", help="show this one in full")
    workflows.set_defaults(run=_workflows)
    _add_nodes_commands(commands)
    commands.add_parser("queue", help="the pending queue").set_defaults(run=_queue)
    usage = commands.add_parser("usage", help="tasks and GPU-seconds per tenant and UTC day")
    usage.add_argument("--tenant", help="one tenant (default: yours; an admin key: all)")
    usage.add_argument("--since", metavar="YYYY-MM-DD", help="default: the first of the month")
    usage.add_argument("--until", metavar="YYYY-MM-DD", help="default: today")
    usage.set_defaults(run=_usage)
    _add_keys_commands(commands)
    env = commands.add_parser(
        "env", help=f"print shell lines that set {URL_ENV} and {API_KEY_ENV} for curl"
    )
    env.set_defaults(run=_env)
    add_batch_command(commands)
    for name, command in commands.choices.items():
        if name not in _WITHOUT_CONNECTION:
            add_connection_flags(command)


def add_connection_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--url", help=f"API base URL (default: ${URL_ENV}, else the stack `up` runs here)"
    )
    command.add_argument(
        "--key",
        help=f"API key (default: ${API_KEY_ENV}; for the stack `up` runs here, its admin key)",
    )
    command.add_argument("--json", action="store_true", help="print JSON for programs")


def _add_generate_command(commands: Any) -> None:
    generate = commands.add_parser("generate", help="generate an image and save the outputs")
    generate.add_argument("text", nargs="?", help="the prompt (goes to the template's 'prompt')")
    generate.add_argument("--workflow", "-w", help=f"template name (default {DEFAULT_WORKFLOW})")
    generate.add_argument(
        "--param", "-p", action="append", default=[], metavar="NAME=VALUE",
        help="template parameter (repeatable); VALUE is JSON if it parses, else text; "
        "@FILE reads an image file",
    )  # fmt: skip
    generate.add_argument("--prompt-file", type=Path, help="an API-format graph to run instead")
    generate.add_argument(
        "--task-id", help="your id for the task (the same id never runs twice; default: new)"
    )
    generate.add_argument(
        "--detach", action="store_true", help="print the task's id once accepted; do not wait"
    )
    generate.add_argument("--priority", type=int, default=0, help="orders your own tasks")
    generate.add_argument("--band", choices=BANDS, help="default: your key's")
    generate.add_argument(
        "--output", "-o", type=Path,
        help="file for the first output (refused if it exists, unless --overwrite)",
    )  # fmt: skip
    generate.add_argument(
        "--overwrite", action="store_true",
        help="replace existing files (default: -o refuses one, others get a free name)",
    )  # fmt: skip
    generate.set_defaults(run=_generate)


def _add_tasks_command(commands: Any) -> None:
    tasks = commands.add_parser("tasks", help="recent tasks, newest first, with filters")
    tasks.add_argument("--status", action="append", choices=STATUSES, help="repeatable")
    tasks.add_argument("--tenant", help="an admin key: this tenant's only")
    tasks.add_argument("--workflow", help="made from this template")
    tasks.add_argument("--node", help="placed last on this node")
    tasks.add_argument("--since", metavar="TIME", help="created at or after (ISO 8601)")
    tasks.add_argument("--until", metavar="TIME", help="created before (ISO 8601)")
    tasks.add_argument("--limit", type=int, default=20, help="1-500 (default 20)")
    tasks.add_argument("--cursor", help="the next page (printed after a full page)")
    tasks.set_defaults(run=_tasks)


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
        add_connection_flags(action)


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
        add_connection_flags(action)
    groups = commands.add_parser("groups", help="caps on groups of tenants (needs an admin key)")
    group_actions = groups.add_subparsers(required=True, metavar="ACTION")
    cap = group_actions.add_parser("set", help="cap the tasks a group runs at once")
    cap.add_argument("group")
    cap.add_argument("max_running", help="a number, or 'none' to lift the cap")
    cap.set_defaults(run=_set_group)
    group_actions.add_parser("list", help="every capped group").set_defaults(run=_list_groups)
    for action in group_actions.choices.values():
        add_connection_flags(action)


def run_client_command(args: argparse.Namespace, handler: Callable[..., int]) -> int:
    """Run ``handler(client, args)``; print an error the way ``--json`` asks, and turn it
    into the documented exit code."""
    url = client_url(args.url)
    args.url = url
    client = StackClient.connect(url, client_key(args.key, url))
    try:
        return handler(client, args)
    except ApiError as exc:
        return _fail(args, error_document(exc), describe_error(exc), EXIT_REFUSED)
    except httpx.TransportError as exc:
        document = unreachable_document(url, str(exc) or type(exc).__name__)
        return _fail(args, document, document["error"]["detail"], EXIT_UNREACHABLE)
    except Refused as exc:
        document = {"error": {"status": None, "code": "refused", "type": "validation",
                              "detail": str(exc)}}  # fmt: skip
        return _fail(args, document, f"comfy-stack: {exc}", EXIT_REFUSED)
    finally:
        client.close()


def _fail(args: argparse.Namespace, document: dict[str, Any], text: str, code: int) -> int:
    if args.json:
        print_json(document)
    else:
        print(text, file=sys.stderr)
    return code


def _generate(client: StackClient, args: argparse.Namespace) -> int:
    if args.output is not None and args.output.exists() and not args.overwrite:
        raise Refused(f"{args.output} exists: name another file, or add --overwrite")
    task = client.generate(_request_body(args))
    if args.detach:
        if args.json:
            print_json(task)
        else:
            print(task["id"])
        return EXIT_OK
    progress = ProgressLine()
    try:
        final = client.follow(task["id"], progress.update)
    finally:
        progress.finish()
    files = []
    if final["status"] == "succeeded":
        files = [
            str(path) for path in client.download(final, args.output, overwrite=args.overwrite)
        ]
    if args.json:
        print_json({"task": final, "files": files})
    elif final["status"] == "cancelled":
        print(f"task {final['id']} was cancelled", file=sys.stderr)  # not an error of its own
    elif final["status"] != "succeeded":
        error = final["error"]
        print(f"task {final['id']} failed: ({error['type']}) {error['message']}", file=sys.stderr)
    else:
        print("\n".join(files))
    return EXIT_OK if final["status"] == "succeeded" else EXIT_TASK_FAILED


def _request_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"priority": args.priority}
    if args.task_id:
        body["task_id"] = args.task_id
    if args.band:
        body["band"] = args.band
    if args.prompt_file is not None:
        return body | {"prompt": _read_json(args.prompt_file)}
    params = dict(_parse_param(item) for item in args.param)
    if args.text is not None:
        params.setdefault("prompt", args.text)
    return body | {"workflow": args.workflow or DEFAULT_WORKFLOW, "params": params}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise Refused(f"--prompt-file {path}: {exc}") from None


def _parse_param(item: str) -> tuple[str, Any]:
    name, separator, raw = item.partition("=")
    if not separator:
        raise Refused(f"--param {item!r}: expected NAME=VALUE")
    if raw.startswith("@"):
        try:
            return name, base64.b64encode(Path(raw[1:]).read_bytes()).decode()
        except OSError as exc:
            raise Refused(f"--param {name}: {exc}") from None
    try:
        return name, json.loads(raw)
    except json.JSONDecodeError:
        return name, raw


def _status(client: StackClient, args: argparse.Namespace) -> int:
    if args.task_id is None:
        return _stack_status(client, args)
    task = client.task(args.task_id)
    if args.json:
        print_json(task)
        return EXIT_OK
    print_table([[name, value] for name, value in task_summary(task)])
    return EXIT_OK


def task_summary(task: dict[str, Any]) -> list[tuple[str, str]]:
    """A task as (label, value) lines for people (``status TASK_ID``)."""
    progress = task.get("progress") or {}
    error = task.get("error")
    lines = [
        ("task", str(task["id"])),
        ("status", str(task["status"])),
        ("workflow", str(task.get("workflow") or "graph")),
        ("tenant", str(task.get("tenant") or "-")),
        ("node", str(task.get("node_id") or "-")),
        ("attempts", str(task.get("attempts", "-"))),
        ("created", str(task.get("created_at") or "-")),
        ("ended", str(task.get("finished_at") or "-")),
    ]
    if task.get("queue_position") is not None:
        lines.append(("position", str(task["queue_position"])))
    if task["status"] == "running" and progress.get("max"):
        lines.append(("progress", f"{progress['value']}/{progress['max']}"))
    if error:
        lines.append(("error", f"({error.get('type')}) {error.get('message')}"))
    lines += [(f"output {i}", f"{o.get('filename')}  {o.get('url')}")
              for i, o in enumerate(task.get("outputs") or [])]  # fmt: skip
    return lines


def _stack_status(client: StackClient, args: argparse.Namespace) -> int:
    """Where the client points, and whether the stack there is ready: nodes and queue."""
    nodes = client.nodes()
    queue = client.queue()
    ready = sum(node["state"] == "ready" for node in nodes)
    if args.json:
        print_json({"url": args.url, "nodes": nodes, "queue": queue})
        return EXIT_OK
    print_table([
        ["api", args.url],
        ["console", f"{args.url}/console"],
        ["docs", f"{args.url}/docs"],
        ["nodes", f"{len(nodes)} ({ready} ready)"],
        ["queue", f"{queue['pending']} pending"],
    ])  # fmt: skip
    return EXIT_OK


def _cancel(client: StackClient, args: argparse.Namespace) -> int:
    task = client.cancel(args.task_id)
    if args.json:
        print_json(task)
    else:
        print(f"{task['id']} {task['status']}")
    return EXIT_OK


def _tasks(client: StackClient, args: argparse.Namespace) -> int:
    filters = {
        name: getattr(args, name)
        for name in ("status", "tenant", "workflow", "node", "since", "until", "limit", "cursor")
    }
    page = client.tasks(filters)
    if args.json:
        print_json(page)
        return EXIT_OK
    rows = [["id", "status", "workflow", "node", "tenant", "created"]]
    rows += [
        [task["id"], task["status"], task.get("workflow") or "graph", task.get("node_id") or "-",
         task.get("tenant") or "-", str(task.get("created_at", ""))[:19]]
        for task in page["tasks"]
    ]  # fmt: skip
    print_table(rows)
    if page.get("next_cursor"):
        print(f"more: --cursor {page['next_cursor']}", file=sys.stderr)
    return EXIT_OK


def _logs(client: StackClient, args: argparse.Namespace) -> int:
    if args.json:
        print_json(client.task_log_records(args.task_id))
    else:
        sys.stdout.write(client.task_log(args.task_id))
    return EXIT_OK


def _events(client: StackClient, args: argparse.Namespace) -> int:
    """One line per event as it comes; ``--json``: one JSON object per line."""
    for event in client.events(args.task_id):
        if args.json:
            print(json.dumps(event, ensure_ascii=False), flush=True)
        else:
            print(f"{event['event']:<8} {_event_summary(event['data'])}", flush=True)
    return EXIT_OK


def _event_summary(data: Any) -> str:
    """A task event carries the whole task after it: its one-line description."""
    task = data.get("task") if isinstance(data, dict) else None
    if isinstance(task, dict):
        return describe(task)
    return data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)


def _workflows(client: StackClient, args: argparse.Namespace) -> int:
    if args.name is not None:
        flow = client.workflow(args.name)
        if args.json:
            print_json(flow)
            return EXIT_OK
        print(f"{flow['name']}: {flow['description']}")
        print_table(_parameter_rows(flow["parameters"]))
        return EXIT_OK
    flows = client.workflows()
    if args.json:
        print_json(flows)
        return EXIT_OK
    rows = [["workflow", "parameters", "description"]]
    rows += [
        [flow["name"], ",".join(flow["parameters"].get("properties", {})), flow["description"]]
        for flow in flows
    ]
    print_table(rows)
    return EXIT_OK


def _parameter_rows(schema: dict[str, Any]) -> list[list[str]]:
    """A template's parameters (its JSON Schema) as rows: name, type, default, description."""
    required = set(schema.get("required", []))
    rows = [["parameter", "type", "default", "description"]]
    for name, spec in schema.get("properties", {}).items():
        kind = "|".join(map(str, spec["enum"])) if "enum" in spec else str(spec.get("type", "-"))
        default = "required" if name in required else json.dumps(spec.get("default"))
        rows.append([name, kind, default, str(spec.get("description", ""))])
    return rows


def _nodes(client: StackClient, args: argparse.Namespace) -> int:
    nodes = client.nodes()
    if args.json:
        print_json(nodes)
        return EXIT_OK
    rows = [["node", "state", "in flight", "comfyui", "queue", "s/step", "cpu %", "gpus", "url"]]
    for node in nodes:
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
    print_table(rows)
    return EXIT_OK


def _drain(client: StackClient, args: argparse.Namespace) -> int:
    node = client.set_drained(args.node_id, drained=args.drained)
    if args.json:
        print_json(node)
    else:
        print(f"{node['node_id']} {node['state']}")
    return EXIT_OK


def _queue(client: StackClient, args: argparse.Namespace) -> int:
    queue = client.queue()
    if args.json:
        print_json(queue)
        return EXIT_OK
    wait = queue["oldest_wait_s"]
    print(f"pending: {queue['pending']}, oldest wait: {wait if wait is not None else '-'} s")
    for band, count in queue["by_band"].items():
        print(f"  {band}: {count}")
    if queue["aged"]:
        print(f"  batch tasks promoted after their longest wait: {queue['aged']}")
    return EXIT_OK


def _usage(client: StackClient, args: argparse.Namespace) -> int:
    report = client.usage(args.tenant, args.since, args.until)
    if args.json:
        print_json(report)
        return EXIT_OK
    print(f"usage from {report['since']} to {report['until']} (UTC days a task ended)")
    print_table(usage_rows(report))
    return EXIT_OK


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
    if args.json:
        print_json(key)
        return EXIT_OK
    print(f"{key['id']}  tenant {key['tenant']}  scopes {','.join(key['scopes'])}")
    print(key["key"])  # the secrets: shown this once
    print(f"webhook signing secret: {key['webhook_secret']}")
    return EXIT_OK


def _list_keys(client: StackClient, args: argparse.Namespace) -> int:
    keys = client.api_keys()
    if args.json:
        print_json(keys)
        return EXIT_OK
    rows = [["id", "name", "tenant", "scopes", "limits", "share", "created"]]
    for key in keys:
        limits = ",".join(f"{k}={v}" for k, v in key["limits"].items() if v is not None)
        share = ",".join(f"{k}={v}" for k, v in key["share"].items() if v is not None)
        rows.append([
            key["id"], key["name"], key["tenant"], ",".join(key["scopes"]), limits or "-",
            share, key["created_at"][:19],
        ])  # fmt: skip
    print_table(rows)
    return EXIT_OK


def _revoke_key(client: StackClient, args: argparse.Namespace) -> int:
    key = client.revoke_key(args.key_id)
    if args.json:
        print_json(key)
    else:
        print(f"{key['id']} ({key['name']}) revoked")
    return EXIT_OK


def _set_group(client: StackClient, args: argparse.Namespace) -> int:
    most = None if args.max_running == "none" else int(args.max_running)
    answer = client.set_group(args.group, most)
    if args.json:
        print_json(answer)
    else:
        print(f"group {args.group}: " + (f"at most {most} running" if most else "no cap"))
    return EXIT_OK


def _list_groups(client: StackClient, args: argparse.Namespace) -> int:
    groups = client.groups()
    if args.json:
        print_json(groups)
        return EXIT_OK
    rows = [["group", "max running"]]
    rows += [[group, str(limit["max_running"])] for group, limit in groups.items()]
    print_table(rows)
    return EXIT_OK


def _env(client: StackClient, args: argparse.Namespace) -> int:
    """``export`` lines for ``eval "$(comfy-stack env)"``: the URL and key this client uses."""
    values = {URL_ENV: args.url, API_KEY_ENV: client_key(args.key, args.url) or ""}
    if args.json:
        print_json(values)
    else:
        print("\n".join(f"export {name}={shlex.quote(value)}" for name, value in values.items()))
    return EXIT_OK
