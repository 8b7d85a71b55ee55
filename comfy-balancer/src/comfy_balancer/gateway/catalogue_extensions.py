"""The custom nodes' frontend extensions, from the reference node (gateway spec §1.1, §3.9).

A ComfyUI lists the JavaScript of its custom nodes at ``/extensions`` and serves it under
``/extensions/<pack>/``; the frontend loads each at start. The fleet should run the same
custom nodes, so one node (``--ui-reference-node``, else the first live one) answers for all,
through its service (ComfyUI itself is reachable only from there).

Cached per process: the list for ``LIST_TTL_S``, files for ``FILE_TTL_S`` (at most
``MAX_CACHED_BYTES`` of them), keyed by node so that a new reference node is asked afresh. A
reference node that cannot answer makes an empty list (the frontend starts without custom
nodes' scripts) and 503 for a file, neither kept.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from loguru import logger

from comfy_balancer.gateway.catalogue_fleet import reference_node
from comfy_balancer.gateway.ui_static import UNKNOWN_MEDIA_TYPE, media_type_of
from comfy_balancer.registry import NodeRegistry
from comfy_balancer.service_client import NodeUnreachable, ServiceClient

LIST_TTL_S: Final = 30.0
FILE_TTL_S: Final = 300.0
MAX_CACHED_BYTES: Final = 32 * 1024 * 1024
MAX_FILE_BYTES: Final = 8 * 1024 * 1024
_REGISTRY_AGE_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class ExtensionFile:
    status: int
    content: bytes
    media_type: str


@dataclass(frozen=True, slots=True)
class _Cached:
    at: float
    file: ExtensionFile


class ExtensionCatalogue:
    def __init__(self, *, reference: str | None) -> None:
        self._reference = reference
        self._lists: dict[str, tuple[float, list[str]]] = {}
        self._files: OrderedDict[tuple[str, str], _Cached] = OrderedDict()
        self._held = 0

    async def listing(self, registry: NodeRegistry, client: ServiceClient) -> list[str]:
        node = reference_node(await registry.recent(_REGISTRY_AGE_S), self._reference)
        if node is None or node.url is None:
            return []
        cached = self._lists.get(node.node_id)
        if cached is not None and time.monotonic() - cached[0] < LIST_TTL_S:
            return cached[1]
        listed = await _fetch_listing(client, node.url)
        if listed is not None:
            self._lists[node.node_id] = (time.monotonic(), listed)
        return listed or []

    async def file(self, path: str, registry: NodeRegistry, client: ServiceClient) -> ExtensionFile:
        """``path`` below ``/extensions/`` ('/'-separated, decoded)."""
        node = reference_node(await registry.recent(_REGISTRY_AGE_S), self._reference)
        if node is None or node.url is None:
            return ExtensionFile(503, b"no live node serves extensions", "text/plain")
        key = (node.node_id, path)
        cached = self._files.get(key)
        if cached is not None and time.monotonic() - cached.at < FILE_TTL_S:
            self._files.move_to_end(key)
            return cached.file
        found = await _fetch_file(client, node.url, path)
        if found.status in (200, 404):
            self._keep(key, found)
        return found

    def _keep(self, key: tuple[str, str], found: ExtensionFile) -> None:
        old = self._files.pop(key, None)
        if old is not None:
            self._held -= len(old.file.content)
        self._files[key] = _Cached(time.monotonic(), found)
        self._held += len(found.content)
        while self._held > MAX_CACHED_BYTES:
            _, dropped = self._files.popitem(last=False)
            self._held -= len(dropped.file.content)


async def _fetch_listing(client: ServiceClient, node_url: str) -> list[str] | None:
    try:
        answer = await client.comfyui_file(node_url, "extensions")
    except NodeUnreachable as exc:
        logger.warning("reference node unreachable for extensions", error=str(exc))
        return None
    if answer.status != 200:
        logger.warning("reference node did not list its extensions", status=answer.status)
        return None
    try:
        listed = json.loads(answer.content)
    except ValueError:
        return None
    if not isinstance(listed, list) or not all(isinstance(item, str) for item in listed):
        return None
    return listed


async def _fetch_file(client: ServiceClient, node_url: str, path: str) -> ExtensionFile:
    quoted = "/".join(quote(part, safe="") for part in path.split("/"))
    try:
        answer = await client.comfyui_file(node_url, f"extensions/{quoted}")
    except NodeUnreachable:
        return ExtensionFile(503, b"the reference node cannot be reached", "text/plain")
    if answer.status == 404:
        return ExtensionFile(404, b"", "text/plain")
    if answer.status != 200 or len(answer.content) > MAX_FILE_BYTES:
        return ExtensionFile(502, b"the reference node did not serve the file", "text/plain")
    known = media_type_of(path)
    # By the name where it is known: a ComfyUI on a host whose media type table maps .js to
    # text/plain breaks every module script (browsers refuse them).
    media_type = known if known != UNKNOWN_MEDIA_TYPE else answer.media_type
    return ExtensionFile(200, answer.content, media_type)
