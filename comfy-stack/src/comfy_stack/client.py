"""The command-line client's calls to a balancer (or a single service): the same public API."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class ApiError(Exception):
    """The API answered with an error body; ``type`` says who is at fault, ``retry_after_s``
    when to come back (its ``Retry-After``, on a 429 or 503)."""

    def __init__(
        self, status: int, body: dict[str, Any], retry_after_s: float | None = None
    ) -> None:
        self.status = status
        self.type = str(body.get("type", "service"))
        self.code = str(body.get("code", "error"))
        super().__init__(str(body.get("detail", f"HTTP {status}")))
        self.body = body
        self.retry_after_s = retry_after_s


@dataclass
class StackClient:
    http: httpx.Client

    @classmethod
    def connect(cls, url: str, key: str | None = None) -> StackClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return cls(httpx.Client(base_url=url.rstrip("/"), timeout=30, headers=headers))

    def close(self) -> None:
        self.http.close()

    def generate(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("POST", "/api/v1/generate", json=body)

    def task(self, task_id: str) -> dict[str, Any]:
        return self._object("GET", f"/api/v1/tasks/{task_id}")

    def cancel(self, task_id: str) -> dict[str, Any]:
        return self._object("DELETE", f"/api/v1/tasks/{task_id}")

    def nodes(self) -> list[dict[str, Any]]:
        nodes = self._json("GET", "/api/v1/nodes")
        return [node for node in nodes if isinstance(node, dict)]

    def set_drained(self, node_id: str, *, drained: bool) -> dict[str, Any]:
        """Drain the node or undrain it; the node as listed after."""
        action = "drain" if drained else "undrain"
        return self._object("POST", f"/api/v1/nodes/{node_id}/{action}")

    def queue(self) -> dict[str, Any]:
        return self._object("GET", "/api/v1/queue")

    def create_key(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("POST", "/api/v1/keys", json=body)

    def api_keys(self) -> list[dict[str, Any]]:
        return [key for key in self._json("GET", "/api/v1/keys") if isinstance(key, dict)]

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        return self._object("DELETE", f"/api/v1/keys/{key_id}")

    def set_group(self, group: str, max_running: int | None) -> dict[str, Any]:
        return self._object("PUT", f"/api/v1/groups/{group}", json={"max_running": max_running})

    def groups(self) -> dict[str, Any]:
        return self._object("GET", "/api/v1/groups")

    def usage(
        self, tenant: str | None = None, since: str | None = None, until: str | None = None
    ) -> dict[str, Any]:
        given = {"tenant": tenant, "since": since, "until": until}
        params = {name: value for name, value in given.items() if value is not None}
        return self._object("GET", "/api/v1/usage", params=params)

    def workflow(self, name: str) -> dict[str, Any]:
        return self._object("GET", f"/api/v1/workflows/{name}")

    def workflows(self) -> list[dict[str, Any]]:
        return [flow for flow in self._json("GET", "/api/v1/workflows") if isinstance(flow, dict)]

    def tasks(self, filters: dict[str, Any]) -> dict[str, Any]:
        """One page of ``GET /tasks`` (filters as its query parameters; a list repeats one)."""
        given = {name: value for name, value in filters.items() if value not in (None, [])}
        return self._object("GET", "/api/v1/tasks", params=given)

    def task_log(self, task_id: str) -> str:
        response = self.http.get(f"/api/v1/tasks/{task_id}/logs")
        _raise_for_error(response)
        return response.text

    def task_log_records(self, task_id: str) -> list[Any]:
        records = self._json("GET", f"/api/v1/tasks/{task_id}/logs", params={"format": "json"})
        return records if isinstance(records, list) else []

    def events(self, task_id: str) -> Iterator[dict[str, Any]]:
        """The task's event stream from its first event, until the server ends it (the task
        ended): each event as ``{"id", "event", "data"}``, ``data`` parsed when it is JSON."""
        headers = {"Last-Event-ID": "0-0"}
        path = f"/api/v1/tasks/{task_id}/events"
        timeout = httpx.Timeout(30, read=None)  # a queued task may wait long between events
        with self.http.stream("GET", path, headers=headers, timeout=timeout) as response:
            if response.is_error:
                response.read()
                _raise_for_error(response)
            yield from parse_sse(response.iter_lines())

    def follow(
        self, task_id: str, on_update: Callable[[dict[str, Any]], None], poll_s: float = 0.25
    ) -> dict[str, Any]:
        """Poll the task until it ends, reporting every change; returns the final task."""
        while True:
            task = self.task(task_id)
            on_update(task)
            if task["status"] in TERMINAL:
                return task
            time.sleep(poll_s)

    def download(
        self, task: dict[str, Any], target: Path | None, *, overwrite: bool = False
    ) -> list[Path]:
        """Save every output; ``target`` names the first file (others get -1, -2 ...). An
        existing file is kept: the output gets the next free name (``name-1.png`` ...), unless
        ``overwrite``. Two outputs with the same name both survive."""
        saved: list[Path] = []
        for output in task["outputs"]:
            wanted = _output_path(target, output, len(saved))
            with self.http.stream("GET", output["url"]) as response:
                if response.status_code != 200:
                    raise ApiError(response.status_code, json.loads(response.read() or b"{}"))
                wanted.parent.mkdir(parents=True, exist_ok=True)
                path, file = create_file(wanted, overwrite=overwrite and wanted not in saved)
                with file:
                    for chunk in response.iter_bytes():
                        file.write(chunk)
            saved.append(path)
        return saved

    def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body = self._json(method, path, **kwargs)
        return body if isinstance(body, dict) else {}

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        _raise_for_error(response)
        return response.json() if response.content else {}


def _raise_for_error(response: httpx.Response) -> None:
    if response.is_error:
        raise _api_error(response)


def parse_sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Server-sent events from their text lines; comments (heartbeats) are skipped."""
    event: dict[str, Any] = {}
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield {"id": event.get("id"), "event": event.get("event", "message"),
                       "data": _maybe_json("\n".join(data))}  # fmt: skip
            event, data = {}, []
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                data.append(value)
            elif field in ("id", "event"):
                event[field] = value


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def create_file(path: Path, *, overwrite: bool = False) -> tuple[Path, IO[bytes]]:
    """Open a new file for writing at ``path``, else at the first free ``stem-N.suffix``
    (created exclusively, so two writers never share a name); ``overwrite`` replaces."""
    if overwrite:
        return path, path.open("wb")
    for number in itertools.count():
        candidate = path if number == 0 else path.with_name(f"{path.stem}-{number}{path.suffix}")
        try:
            return candidate, candidate.open("xb")
        except FileExistsError:
            continue
    raise AssertionError("unreachable")  # itertools.count never ends


def _output_path(target: Path | None, output: dict[str, Any], index: int) -> Path:
    if target is None:
        return Path(Path(output["filename"]).name)  # never a path the server chose
    if index == 0:
        return target
    return target.with_name(f"{target.stem}-{index}{Path(output['filename']).suffix}")


@dataclass
class AsyncStackClient:
    """The calls a long-running async client (``comfy_stack.batch``) makes, with the same errors
    as ``StackClient``: ``ApiError`` for an error answer, httpx's ``TransportError`` when the
    API cannot be reached. ComfyUI gateway answers (``upload_image``, ``queue_prompt``) have
    their error envelope mapped to the same ``ApiError``."""

    http: httpx.AsyncClient

    @classmethod
    def like(cls, client: StackClient, timeout_s: float = 60) -> AsyncStackClient:
        """An async client to the same API with the same key as ``client``."""
        http = httpx.AsyncClient(
            base_url=client.http.base_url, headers=client.http.headers, timeout=timeout_s
        )
        return cls(http)

    @classmethod
    def connect(cls, url: str, key: str | None = None, timeout_s: float = 60) -> AsyncStackClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return cls(httpx.AsyncClient(base_url=url.rstrip("/"), timeout=timeout_s, headers=headers))

    async def aclose(self) -> None:
        await self.http.aclose()

    async def workflow(self, name: str) -> dict[str, Any]:
        return await self._object("GET", f"/api/v1/workflows/{name}")

    async def generate(
        self,
        body: dict[str, Any],
        files: dict[str, tuple[str, bytes, str]] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Submit a task; with ``files`` (parameter -> (name, bytes, media type)) as the
        multipart request the balancer takes. An idempotency key that was used answers the
        existing task."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        if files:
            form = {"request": json.dumps(body)}
            return await self._object(
                "POST", "/api/v1/generate", data=form, files=files, headers=headers
            )
        return await self._object("POST", "/api/v1/generate", json=body, headers=headers)

    async def task(self, task_id: str) -> dict[str, Any]:
        return await self._object("GET", f"/api/v1/tasks/{task_id}")

    async def upload_image(self, name: str, data: bytes, media_type: str) -> dict[str, Any]:
        """Upload an input through the ComfyUI gateway (kept per tenant; the same bytes under
        the same name are stored once); ComfyUI's answer (``name``, ``subfolder``)."""
        files = {"image": (name, data, media_type)}
        return await self._object("POST", "/upload/image", files=files, data={"type": "input"})

    async def queue_prompt(self, graph: dict[str, Any], prompt_id: str) -> dict[str, Any]:
        """Queue an API-format graph through the ComfyUI gateway under ``prompt_id`` (the
        task id); an id already taken answers 409 ``task_id_taken``."""
        return await self._object("POST", "/prompt", json={"prompt": graph, "prompt_id": prompt_id})

    async def download(self, url: str, path: Path) -> None:
        """Stream the file at ``url`` (relative to the API) into ``path``."""
        async with self.http.stream("GET", url) as response:
            if response.status_code != 200:
                await response.aread()
                raise _api_error(response)
            with path.open("wb") as file:
                async for chunk in response.aiter_bytes():
                    file.write(chunk)

    async def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self.http.request(method, path, **kwargs)
        if response.is_error:
            raise _api_error(response)
        body = response.json() if response.content else {}
        return body if isinstance(body, dict) else {}


def _api_error(response: httpx.Response) -> ApiError:
    """The error an answer carries, whether from the API, the ComfyUI gateway (its ``error``
    envelope) or something in between (a proxy's page: its first words as the detail)."""
    try:
        body = response.json()
    except ValueError:
        body = {"detail": response.text.strip()[:200] or f"HTTP {response.status_code}"}
    body = body if isinstance(body, dict) else {}
    if isinstance(envelope := body.get("error"), dict):  # the ComfyUI gateway's
        body = {"detail": envelope.get("message"), "code": envelope.get("type")} | body
    return ApiError(response.status_code, body, _retry_after_s(response))


def _retry_after_s(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None
