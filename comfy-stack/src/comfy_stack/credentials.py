"""Where the command-line client sends its requests, and which key it sends.

``comfy-stack up`` keeps its balancer's admin key in ``<data dir>/admin-key`` (made on the first
run, readable by the owner only), prints it, and while it runs writes the balancer's address to
``<data dir>/url``. The client calls ``--url``, else ``COMFY_STACK_URL``, else the stack that
``comfy-stack up`` runs from this folder (``.comfy-stack/url``), else ``http://127.0.0.1:8000``.
It sends ``--key``, else ``COMFY_STACK_API_KEY`` (``COMFY_STACK_KEY``, its older name, still
counts), else, only when talking to this folder's stack, that stack's admin key: a key for this
machine's stack never goes to another server by accident.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Final

URL_ENV: Final = "COMFY_STACK_URL"
API_KEY_ENV: Final = "COMFY_STACK_API_KEY"
KEY_ENV: Final = "COMFY_STACK_KEY"
"""The older name of ``API_KEY_ENV``, still read."""
ADMIN_KEY_FILE: Final = "admin-key"
STACK_URL_FILE: Final = "url"
DEFAULT_DATA_DIR: Final = Path(".comfy-stack")
DEFAULT_URL: Final = "http://127.0.0.1:8000"


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


def local_stack_url(data_dir: Path = DEFAULT_DATA_DIR) -> str:
    """The balancer of the stack ``comfy-stack up`` runs from ``data_dir`` (the default
    address when none runs, or one started before it wrote its address)."""
    path = data_dir / STACK_URL_FILE
    url = path.read_text().strip() if path.exists() else ""
    return url or DEFAULT_URL


def client_url(explicit: str | None) -> str:
    return (explicit or os.environ.get(URL_ENV) or local_stack_url()).rstrip("/")


def client_key(explicit: str | None, url: str) -> str | None:
    if explicit:
        return explicit
    if from_env := os.environ.get(API_KEY_ENV) or os.environ.get(KEY_ENV):
        return from_env
    local = DEFAULT_DATA_DIR / ADMIN_KEY_FILE
    if url.rstrip("/") == local_stack_url() and local.exists():
        return local.read_text().strip()
    return None
