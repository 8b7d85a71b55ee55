"""HTTP client for the comfy-services the balancer places tasks on.

Low-level httpx errors become :class:`NodeUnreachable` at this boundary; answers are passed
back as (status, body) so the caller decides what each status means for the task. Every
request carries the internal token when one is set (``--internal-token``), which services
started with the same token require.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from comfy_shared.api.schemas import API_PREFIX


class NodeUnreachable(Exception):
    def __init__(self, url: str, exc: Exception) -> None:
        super().__init__(f"node at {url} unreachable: {exc!r}")
        self.url = url


@dataclass(frozen=True, slots=True)
class NodeAnswer:
    status: int
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NodeFile:
    status: int
    content: bytes
    media_type: str


class ServiceClient:
    def __init__(self, http: httpx.AsyncClient, *, internal_token: str | None = None) -> None:
        self._http = http
        self._auth = {} if internal_token is None else {"authorization": f"Bearer {internal_token}"}

    async def generate(self, node_url: str, body: bytes) -> NodeAnswer:
        """POST a JSON body (already encoded) to the node's generate route."""
        return await self._send(
            "POST",
            f"{node_url}{API_PREFIX}/generate",
            content=body,
            headers={"content-type": "application/json"},
        )

    async def cancel(self, node_url: str, task_id: str) -> NodeAnswer:
        return await self._send("DELETE", f"{node_url}{API_PREFIX}/tasks/{task_id}")

    @asynccontextmanager
    async def output(
        self, node_url: str, task_id: str, index: int
    ) -> AsyncIterator[httpx.Response]:
        url = f"{node_url}{API_PREFIX}/tasks/{task_id}/outputs/{index}"
        try:
            async with self._http.stream("GET", url, headers=self._auth) as response:
                yield response
        except httpx.TransportError as exc:
            raise NodeUnreachable(node_url, exc) from exc

    @asynccontextmanager
    async def file(
        self, node_url: str, task_id: str, folder: str, filename: str, subfolder: str
    ) -> AsyncIterator[httpx.Response]:
        """A file the node's ComfyUI made for a task running there, by ComfyUI's name."""
        url = f"{node_url}{API_PREFIX}/tasks/{task_id}/files/{folder}"
        params = {"filename": filename, "subfolder": subfolder}
        try:
            async with self._http.stream("GET", url, params=params, headers=self._auth) as answer:
                yield answer
        except httpx.TransportError as exc:
            raise NodeUnreachable(node_url, exc) from exc

    async def comfyui_file(self, node_url: str, path: str) -> NodeFile:
        """A file the node's ComfyUI serves, through its service (``path`` under
        ``/comfyui/``, already quoted), e.g. ``extensions/pack/x.js``."""
        url = f"{node_url}{API_PREFIX}/comfyui/{path}"
        try:
            response = await self._http.get(url, headers=self._auth)
        except httpx.TransportError as exc:
            raise NodeUnreachable(node_url, exc) from exc
        media_type = response.headers.get("content-type", "application/octet-stream")
        return NodeFile(response.status_code, response.content, media_type)

    async def _send(
        self, method: str, url: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> NodeAnswer:
        try:
            response = await self._http.request(
                method, url, headers={**(headers or {}), **self._auth}, **kwargs
            )
        except httpx.TransportError as exc:
            raise NodeUnreachable(url, exc) from exc
        try:
            body = response.json()
        except ValueError:
            body = {"detail": response.text}
        return NodeAnswer(response.status_code, body if isinstance(body, dict) else {"body": body})
