"""Recorded exchanges with a real ComfyUI, used as test fixtures.

See README.md beside this file for the format.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

_ROOT = files(__name__)


def capture_names() -> list[str]:
    """Names (without ``.json``) of every recorded HTTP exchange, in recording order."""
    names = [
        entry.name.removesuffix(".json")
        for entry in _ROOT.iterdir()
        if entry.name[:2].isdigit() and entry.name.endswith(".json")
    ]
    return sorted(names)


@cache
def load_capture(name: str) -> dict[str, Any]:
    """One HTTP exchange, e.g. ``load_capture("09-post-prompt-ok")``."""
    data: dict[str, Any] = json.loads(_ROOT.joinpath(f"{name}.json").read_text())
    return data


@cache
def load_ws_transcripts() -> dict[str, Any]:
    """Every recorded WebSocket scenario, keyed by scenario name."""
    data: dict[str, Any] = json.loads(_ROOT.joinpath("ws-transcripts.json").read_text())
    return data
