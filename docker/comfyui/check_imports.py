"""Fails the image build when ComfyUI cannot import one of its nodes.

ComfyUI logs a node pack that fails to import and carries on without it, so an image whose
custom nodes lack a library (``import cv2`` on a slim base) starts, answers its health check
and only fails the first task that needs those nodes. ComfyUI's ``--quick-test-for-ci`` start
imports every node, built-in and custom, then exits; this runs it, passes its output through
and exits non-zero when

- a line reports ``IMPORT FAILED`` (a custom node pack in the import-times table, or a
  ``comfy_extras``/``comfy_api_nodes`` file in the warning that lists them), or ComfyUI says
  it ``Cannot import`` or had to ``Skip`` a custom node module;
- a custom node pack named in the list (``--custom-nodes custom-nodes.txt``) is missing from
  the import-times table: never loaded at all;
- ComfyUI itself exited non-zero (it could not start: torch missing, a broken core import).

    check_imports.py --custom-nodes custom-nodes.txt -- python main.py --quick-test-for-ci --cpu

Standard library only: it runs with the image's Python before anything else is there.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

FAILURE_MARKERS = (
    "IMPORT FAILED",
    "Cannot import ",  # "Cannot import <path> module for custom nodes: <error>"
    "module for custom nodes due to the lack of",  # "Skip <path> module ... NODE_CLASS_MAPPINGS"
)
IMPORT_TIMES_HEADER = "Import times for custom nodes:"
IMPORT_TIME_LINE = re.compile(
    r"^\s*\d+(?:\.\d+)?\s+seconds(?P<failed> \(IMPORT FAILED\))?: (?P<path>.+)$"
)
"""A row of ComfyUI's table (nodes.py, ``init_external_custom_nodes``):
``   0.4 seconds: /opt/ComfyUI/custom_nodes/X`` or ``   0.0 seconds (IMPORT FAILED): ...``."""


def custom_node_names(listing: str) -> list[str]:
    """The pack folders of a custom-nodes.txt (first word of each line that is not a comment)."""
    names = []
    for line in listing.splitlines():
        words = line.split()
        if words and not words[0].startswith("#"):
            names.append(words[0])
    return names


def imported_packs(lines: Iterable[str]) -> set[str]:
    """Folder names of the custom node packs the import-times table lists as imported."""
    packs = set()
    for line in lines:
        match = IMPORT_TIME_LINE.match(line)
        if match and not match["failed"]:
            packs.add(Path(match["path"].strip()).name)
    return packs


def problems(lines: Sequence[str], expected_packs: Iterable[str], exit_code: int) -> list[str]:
    """Why the start-up failed the check, one sentence each; empty when every node imported."""
    found = [
        f"ComfyUI: {line.strip()}" for line in lines if any(m in line for m in FAILURE_MARKERS)
    ]
    loaded = imported_packs(lines)
    found += [
        f"custom node pack {pack} is not among the imported ones (table: {sorted(loaded)})"
        for pack in expected_packs
        if pack not in loaded
    ]
    if exit_code != 0:
        found.append(f"ComfyUI exited with code {exit_code}")
    return found


def run(command: Sequence[str]) -> tuple[list[str], int]:
    """Runs ComfyUI, echoing its output (stdout and stderr, merged) as it comes."""
    lines = []
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            lines.append(line.rstrip("\n"))
    return lines, process.returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--custom-nodes", type=Path, help="custom-nodes.txt: packs that must load")
    parser.add_argument("command", nargs="+", help="ComfyUI's command line, after --")
    args = parser.parse_args(argv)
    expected = custom_node_names(args.custom_nodes.read_text()) if args.custom_nodes else []
    lines, exit_code = run(args.command)
    found = problems(lines, expected, exit_code)
    for problem in found:
        print(f"check_imports: {problem}", file=sys.stderr)
    if found:
        print("check_imports: FAILED: some nodes did not import (see above)", file=sys.stderr)
        return 1
    print(f"check_imports: every node imported; custom node packs: {', '.join(expected) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
