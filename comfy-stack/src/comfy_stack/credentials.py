"""The admin key of a local stack, and which key the command-line client sends.

``comfy-stack up`` keeps its balancer's admin key in ``<data dir>/admin-key`` (made on the first
run, readable by the owner only) and prints it. The client sends ``--key``, else
``COMFY_STACK_KEY``, else, only when talking to the local stack's default address, that file's
key: a key for this machine's stack never goes to another server by accident.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Final

KEY_ENV: Final = "COMFY_STACK_KEY"
ADMIN_KEY_FILE: Final = "admin-key"
DEFAULT_DATA_DIR: Final = Path(".comfy-stack")


def load_or_create_admin_key(data_dir: Path) -> str:
    path = data_dir / ADMIN_KEY_FILE
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(key + "\n")
    return key


def client_key(explicit: str | None, url: str, default_url: str) -> str | None:
    if explicit:
        return explicit
    if from_env := os.environ.get(KEY_ENV):
        return from_env
    local = DEFAULT_DATA_DIR / ADMIN_KEY_FILE
    if url.rstrip("/") == default_url and local.exists():
        return local.read_text().strip()
    return None
