"""What ``comfy-stack up`` tells its user: where everything is (the banner, printed at start
and again on request) and a short form of it pinned under the logs on a terminal."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from comfy_stack.credentials import ADMIN_KEY_FILE

if TYPE_CHECKING:
    from comfy_stack.launcher import RunningStack


def banner_lines(stack: RunningStack) -> list[str]:
    api = stack.balancer_url
    key_file = stack.data_dir / ADMIN_KEY_FILE
    return [
        "",
        "comfy-stack is up",
        f"  api       {api}   (docs: {api}/docs, nodes: {api}/api/v1/nodes)",
        *_listening(stack),
        f"  web UI    {api}/   (ComfyUI; sign in with an API key)",
        f"  console   {api}/console   (generate, tasks, nodes, queue, keys)",
        f"  admin key {stack.admin_key}   (kept in {key_file}; comfy-stack commands here use it)",
        *([f"  logdy     logs shipped to {stack.logdy}"] if stack.logdy else []),
        f"  redis     {stack.redis_url}",
        *(f"  comfyui   {url}" for url in stack.comfyui_urls),
        *(f"  service   {url}   (docs: {url}/docs)" for url in stack.service_urls),
        f"  services answer only with this run's internal token ({stack.internal_token_file})",
        f"  Enter (or kill -USR1 {os.getpid()}) prints this again; Ctrl-C stops everything",
        "",
    ]


def footer_line(stack: RunningStack) -> str:
    """The banner in one line, kept under the logs: what matters most first, as a narrow
    terminal cuts the end."""
    api = stack.balancer_url
    key_file = stack.data_dir / ADMIN_KEY_FILE
    with contextlib.suppress(ValueError):  # shown relative to here when it is below
        key_file = key_file.relative_to(Path.cwd())
    return f"{api}  /console  /docs  Enter: banner  Ctrl-C: stop  admin key: {key_file}"


def _listening(stack: RunningStack) -> list[str]:
    every = stack.bind_address.rpartition(":")[0] in ("0.0.0.0", "[::]")
    return [f"  listening {stack.bind_address}   (every interface)"] if every else []
