"""``comfy-stack batch ROOT... (--workflow NAME | --graph FILE) -o OUTPUT_ROOT``: the command
line over ``run_batch``.

Exit codes: 0 every file done, 1 some failed, 2 refused before anything was sent (parameters,
existing outputs, roots) or stopped by the API (the key), 3 the API cannot be reached (or
stopped answering: the same command resumes), 130 interrupted (Ctrl-C; the same command
resumes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from comfy_stack.batch.display import BatchDisplay
from comfy_stack.batch.mapping import (
    FOLDER_PARAMS_FILE,
    Mapping,
    MappingError,
    graph_mapping,
    template_mapping,
)
from comfy_stack.batch.report import BatchSummary
from comfy_stack.batch.runner import BatchSpec, OutputConflict, run_batch
from comfy_stack.batch.scan import DEFAULT_EXTENSIONS, ScanError, ScanFilter
from comfy_stack.client import AsyncStackClient, StackClient

INTERRUPTED = 130


def add_batch_command(commands: Any) -> None:
    # "resolve": a flag every command gets (--json, --url) may be added to this one too.
    batch = commands.add_parser(
        "batch", conflict_handler="resolve",
        help="run every image under folders through a workflow; results mirrored under -o",
    )  # fmt: skip
    batch.add_argument("roots", nargs="+", type=Path, metavar="ROOT", help="folders to scan")
    what = batch.add_mutually_exclusive_group(required=True)
    what.add_argument("--workflow", "-w", help="template whose image parameter takes each file")
    what.add_argument("--graph", type=Path, help="an API-format graph to run on each file")
    batch.add_argument("--image-param", help="the template's image parameter, if it has several")
    batch.add_argument(
        "--image-node", metavar="ID[.INPUT]", help="with --graph: where the image goes "
        "(default input 'image')",
    )  # fmt: skip
    batch.add_argument(
        "--param", "-p", action="append", default=[], metavar="NAME=VALUE",
        help="fixed parameter (repeatable), typed by the template's schema; with --graph "
        f"NODE.input=VALUE. A folder's {FOLDER_PARAMS_FILE} overrides them for its images",
    )  # fmt: skip
    batch.add_argument("--output", "-o", type=Path, required=True, metavar="OUTPUT_ROOT")
    batch.add_argument("--include-folder", action="append", default=[], metavar="WORD",
                       help="only folders whose name contains WORD (repeatable)")  # fmt: skip
    batch.add_argument("--exclude-folder", action="append", default=[], metavar="WORD",
                       help="skip folders whose name contains WORD (repeatable)")  # fmt: skip
    batch.add_argument(
        "--ext", action="append", metavar=".EXT",
        help=f"file types to take (repeatable; default {' '.join(DEFAULT_EXTENSIONS)})",
    )  # fmt: skip
    batch.add_argument("--concurrency", type=int, default=8, help="files in flight (default 8)")
    batch.add_argument(
        "--retries", type=int, default=2, help="further attempts of a failed file (default 2)"
    )
    batch.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    batch.add_argument("--json", action="store_true", help="print the summary as JSON")
    batch.set_defaults(run=run_batch_command)


def run_batch_command(client: StackClient, args: argparse.Namespace) -> int:
    """The ``batch`` command, on an async client like ``client`` (same URL and key)."""
    return asyncio.run(_batch(AsyncStackClient.like(client), args))


async def _batch(client: AsyncStackClient, args: argparse.Namespace) -> int:
    try:
        spec = BatchSpec(
            roots=tuple(args.roots), mapping=await _mapping(client, args), output_root=args.output,
            scan_filter=_scan_filter(args), concurrency=args.concurrency, retries=args.retries,
            overwrite=args.overwrite,
        )  # fmt: skip
        summary = await _run_until_interrupted(spec, client)
    except (MappingError, OutputConflict, ScanError) as exc:
        print(f"comfy-stack batch: {exc}", file=sys.stderr)
        return 2
    finally:
        await client.aclose()
    print(json.dumps(summary.to_json(), indent=2) if args.json else summary.text())
    return _exit_code(summary)


async def _mapping(client: AsyncStackClient, args: argparse.Namespace) -> Mapping:
    if args.graph is not None:
        if not args.image_node:
            raise MappingError("--graph needs --image-node ID[.INPUT] (where the image goes)")
        return graph_mapping(args.graph, args.image_node, args.param)
    return await template_mapping(client, args.workflow, args.param, args.image_param)


def _scan_filter(args: argparse.Namespace) -> ScanFilter:
    extensions = tuple(f".{ext.lstrip('.')}" for ext in args.ext) if args.ext else None
    return ScanFilter(
        include_folders=tuple(args.include_folder), exclude_folders=tuple(args.exclude_folder),
        extensions=extensions or DEFAULT_EXTENSIONS,
    )  # fmt: skip


async def _run_until_interrupted(spec: BatchSpec, client: AsyncStackClient) -> BatchSummary:
    """Run ``spec``; Ctrl-C (SIGINT) or SIGTERM ends it as ``run_batch``'s ``stop`` does."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        with BatchDisplay() as display:
            return await run_batch(spec, client, progress=display, stop=stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _exit_code(summary: BatchSummary) -> int:
    if summary.aborted:
        return 3 if summary.unreachable else 2
    if summary.interrupted:
        return INTERRUPTED
    return 1 if summary.failed else 0
