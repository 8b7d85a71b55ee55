"""Async HTTP client for one ComfyUI server.

Every method maps transport failures and error statuses to the exception tree in
:mod:`comfy_shared.comfyui.errors`. The base URL is the server root (not ``/api``): the
``/internal/*`` routes exist only without the prefix.

Versions: the client speaks ComfyUI 0.8.0 and later. Two later changes matter to callers:
since 0.26.0 a ``prompt_id`` must be a canonical UUID (see
:mod:`comfy_shared.comfyui.prompt_ids`; a refusal is :class:`PromptRejected` with
``error_type == "invalid_prompt_id"``), and a job can be cancelled by id
(:meth:`ComfyClient.cancel_job`; :meth:`ComfyClient.cancel_prompt` works on every version).
"""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from loguru import logger
from pydantic import BaseModel, ValidationError

from comfy_shared.comfyui.errors import (
    ComfyNotFound,
    ComfyProtocolError,
    ComfyRequestError,
    ComfyUnavailable,
    PromptRejected,
)
from comfy_shared.comfyui.models import (
    HistoryEntry,
    NodeInfo,
    PromptInfo,
    QueueState,
    RawLogs,
    SubmitResult,
    SystemStats,
    UploadResult,
)

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)

# How a ComfyUI without a route answers a POST to it: 404, or 405 because its web root is a
# static route on "/" that matches every path for GET and HEAD only (aiohttp then answers
# "405 Method Not Allowed" rather than 404 for any other method).
_ROUTE_MISSING = frozenset({404, 405})

_M = TypeVar("_M", bound=BaseModel)


class ViewStream:
    """A ``/view`` download in progress; iterate :meth:`iter_bytes` to proxy it."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def headers(self) -> httpx.Headers:
        return self._response.headers

    @property
    def content_type(self) -> str:
        return str(self._response.headers.get("content-type", "application/octet-stream"))

    @property
    def content_length(self) -> int | None:
        value = self._response.headers.get("content-length")
        return int(value) if value and value.isdigit() else None

    async def iter_bytes(self, chunk_size: int | None = None) -> AsyncIterator[bytes]:
        with _mapped_errors("GET /view"):
            async for chunk in self._response.aiter_bytes(chunk_size):
                yield chunk


class ComfyClient:
    """Talks HTTP to one ComfyUI. Use as ``async with ComfyClient(url) as comfy: ...``.

    Pass ``http`` to share an ``httpx.AsyncClient`` (its own timeouts apply and this client
    does not close it), or ``transport`` to run over e.g. ``httpx.MockTransport``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
    ) -> None:
        if http is not None and transport is not None:
            raise ValueError("pass either http or transport, not both")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be http(s): {base_url!r}")
        self.base_url = base_url.rstrip("/")
        # False once the server showed it has no cancel-by-job-id route (ComfyUI < 0.26.0).
        self._has_job_cancel = True
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(transport=transport, timeout=timeout)

    async def __aenter__(self) -> ComfyClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # --- prompts and queue -------------------------------------------------------------------

    async def submit(
        self,
        prompt: Mapping[str, Any],
        *,
        prompt_id: str,
        client_id: str,
        extra_data: Mapping[str, Any] | None = None,
        front: bool = False,
    ) -> SubmitResult:
        """Queue an API-format workflow. Raises :class:`PromptRejected` on a 400.

        Always check ``node_errors`` of the result: a 200 may carry errors for some outputs.
        """
        body: dict[str, Any] = {
            "prompt": dict(prompt),
            "prompt_id": prompt_id,
            "client_id": client_id,
        }
        if extra_data is not None:
            body["extra_data"] = dict(extra_data)
        if front:
            body["front"] = True
        response = await self._send("POST", "/prompt", json=body, on_error=_prompt_rejection)
        return _parse(SubmitResult, _json(response))

    async def get_queue(self) -> QueueState:
        return _parse(QueueState, _json(await self._send("GET", "/queue")))

    async def get_prompt_info(self) -> PromptInfo:
        return _parse(PromptInfo, _json(await self._send("GET", "/prompt")))

    async def delete_from_queue(self, prompt_ids: Iterable[str]) -> None:
        """Remove pending prompts; unknown ids are ignored and the running one is untouched."""
        await self._send("POST", "/queue", json={"delete": list(prompt_ids)})

    async def clear_queue(self) -> None:
        """Remove every pending prompt (not the running one)."""
        await self._send("POST", "/queue", json={"clear": True})

    async def interrupt(self, prompt_id: str | None = None) -> None:
        """Interrupt ``prompt_id`` if it is the running prompt (a no-op otherwise), or
        whatever is running when ``prompt_id`` is None. Takes effect at the next node start
        or progress step."""
        body = {"prompt_id": prompt_id} if prompt_id is not None else {}
        await self._send("POST", "/interrupt", json=body)

    async def cancel_job(self, job_id: str) -> bool | None:
        """``POST /api/jobs/{job_id}/cancel`` (ComfyUI 0.26.0+): interrupt the job if it is
        running (only that job: ComfyUI checks and interrupts in one step), or take it out of
        the queue if it is pending.

        Returns ComfyUI's ``cancelled``: True if it acted, False for a finished or unknown id.
        Returns None when the server has no such route (ComfyUI older than 0.26.0).
        """
        path = f"/api/jobs/{quote(job_id, safe='')}/cancel"
        try:
            response = await self._send("POST", path)
        except ComfyRequestError as exc:
            if exc.status_code in _ROUTE_MISSING:
                return None
            raise
        cancelled = _object(_json(response), "cancel answer").get("cancelled")
        if not isinstance(cancelled, bool):
            raise ComfyProtocolError(f"POST {path}: 'cancelled' is not a bool: {cancelled!r}")
        return cancelled

    async def cancel_prompt(self, prompt_id: str) -> None:
        """Stop one prompt whatever its state: out of the queue if pending, interrupted if
        running, nothing if it already finished or is unknown.

        Uses :meth:`cancel_job` while the server has that route, which closes both races:
        ComfyUI interrupts only if this prompt is still the one running, and a pending prompt
        that started meanwhile is interrupted instead. Once a server said it lacks the route,
        this client instance does not ask again (an older server costs one extra request, the
        first time) and falls back to ``POST /queue {"delete": [id]}`` then
        ``POST /interrupt {"prompt_id": id}``. In that order a prompt that starts between the
        two requests is still interrupted. Left open there: ComfyUI checks that the prompt
        runs and only then raises its process-wide interrupt flag, so if the prompt ends in
        that moment the next prompt can be interrupted instead (ComfyUI issue #2566).

        Either way a prompt whose submit has not been answered yet may not be queued yet:
        cancel after the submit returned, or cancel again once it has.
        """
        if self._has_job_cancel:
            if await self.cancel_job(prompt_id) is not None:
                return
            self._has_job_cancel = False
        await self.delete_from_queue([prompt_id])
        await self.interrupt(prompt_id)

    async def free(self, *, unload_models: bool = False, free_memory: bool = False) -> None:
        """Unload models; ``free_memory`` also drops all cached node outputs."""
        body = {"unload_models": unload_models, "free_memory": free_memory}
        await self._send("POST", "/free", json=body)

    # --- history -----------------------------------------------------------------------------

    async def get_history(self, prompt_id: str) -> HistoryEntry | None:
        """The finished prompt, or None while it is pending/running or if it is unknown."""
        body = _json(await self._send("GET", f"/history/{quote(prompt_id, safe='')}"))
        if not isinstance(body, dict):
            raise ComfyProtocolError(f"history is not an object: {type(body).__name__}")
        if not body:
            return None
        if prompt_id not in body:
            raise ComfyProtocolError(f"history answer lacks {prompt_id!r}: {list(body)[:5]}")
        return _parse(HistoryEntry, body[prompt_id])

    async def get_history_all(
        self, max_items: int | None = None, offset: int | None = None
    ) -> dict[str, HistoryEntry]:
        """Finished prompts, oldest first. ``max_items`` alone gives the newest N."""
        params = {
            key: str(value)
            for key, value in (("max_items", max_items), ("offset", offset))
            if value is not None
        }
        body = _json(await self._send("GET", "/history", params=params))
        if not isinstance(body, dict):
            raise ComfyProtocolError(f"history is not an object: {type(body).__name__}")
        return {key: _parse(HistoryEntry, entry) for key, entry in body.items()}

    async def delete_from_history(self, prompt_ids: Iterable[str]) -> None:
        await self._send("POST", "/history", json={"delete": list(prompt_ids)})

    # --- files -------------------------------------------------------------------------------

    async def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        """The whole file; raises :class:`ComfyNotFound` if it does not exist."""
        params = _view_params(filename, subfolder, type)
        return (await self._send("GET", "/view", params=params)).content

    @asynccontextmanager
    async def stream_view(
        self, filename: str, subfolder: str = "", type: str = "output"
    ) -> AsyncIterator[ViewStream]:
        """Like :meth:`view` without loading the file into memory::

        async with comfy.stream_view(name, sub, kind) as stream:
            async for chunk in stream.iter_bytes(): ...
        """
        request = self._http.build_request(
            "GET", self._url("/view"), params=_view_params(filename, subfolder, type)
        )
        with _mapped_errors("GET /view"):
            response = await self._http.send(request, stream=True)
        try:
            if not response.is_success:
                await response.aread()
                _raise_for_status(response, "GET /view")
            yield ViewStream(response)
        finally:
            await response.aclose()

    async def upload_image(
        self,
        data: bytes,
        filename: str,
        *,
        subfolder: str = "",
        overwrite: bool = False,
        type: str = "input",
    ) -> UploadResult:
        """Upload a file for LoadImage. Without ``overwrite`` an existing name with different
        content is renamed ("x (1).png"); identical content reuses the existing name."""
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        form = {"type": type}
        if subfolder:
            form["subfolder"] = subfolder
        if overwrite:
            form["overwrite"] = "true"
        files = {"image": (filename, data, content_type)}
        response = await self._send("POST", "/upload/image", data=form, files=files)
        return _parse(UploadResult, _json(response))

    # --- server info -------------------------------------------------------------------------

    async def system_stats(self) -> SystemStats:
        return _parse(SystemStats, _json(await self._send("GET", "/system_stats")))

    async def features(self) -> dict[str, Any]:
        return _object(_json(await self._send("GET", "/features")), "features")

    async def object_info(self) -> dict[str, NodeInfo]:
        """Every node class; can be several MB with many custom nodes installed (see
        :func:`parse_object_info`)."""
        return parse_object_info(await self.object_info_json())

    async def object_info_json(self) -> dict[str, Any]:
        """GET /object_info exactly as ComfyUI sent it: class -> description, every key kept
        (what a ComfyUI-compatible server hands out again, and what validation reads)."""
        return _object(_json(await self._send("GET", "/object_info")), "object_info")

    async def object_info_for(self, class_type: str) -> NodeInfo | None:
        path = f"/object_info/{quote(class_type, safe='')}"
        body = _object(_json(await self._send("GET", path)), "object_info")
        return _parse(NodeInfo, body[class_type]) if class_type in body else None

    async def model_folders(self) -> list[str]:
        """GET /models: the model folder keys (checkpoints, loras, ...)."""
        return _strings(_json(await self._send("GET", "/models")), "models")

    async def models_in(self, folder: str) -> list[str]:
        """The files of one model folder; raises :class:`ComfyNotFound` for an unknown one."""
        path = f"/models/{quote(folder, safe='')}"
        return _strings(_json(await self._send("GET", path)), "models")

    async def extensions(self) -> list[str]:
        """GET /extensions: URL paths of the frontend scripts of the custom nodes."""
        return _strings(_json(await self._send("GET", "/extensions")), "extensions")

    async def extension_file(self, path: str) -> tuple[bytes, str]:
        """A file under ``/extensions/`` (``path`` relative to it, '/'-separated, each part
        sent quoted) with its media type; raises :class:`ComfyNotFound` if there is none."""
        quoted = "/".join(quote(part, safe="") for part in path.split("/"))
        response = await self._send("GET", f"/extensions/{quoted}")
        return response.content, response.headers.get("content-type", "application/octet-stream")

    async def get_logs(self) -> str:
        """The log buffer as one string of "<time> - <text>" chunks."""
        body = _json(await self._send("GET", "/internal/logs"))
        if not isinstance(body, str):
            raise ComfyProtocolError(f"logs are not a string: {type(body).__name__}")
        return body

    async def get_logs_raw(self) -> RawLogs:
        return _parse(RawLogs, _json(await self._send("GET", "/internal/logs/raw")))

    async def subscribe_logs(self, client_id: str, enabled: bool = True) -> None:
        """Have ComfyUI send ``logs`` events to the WebSocket whose sid is ``client_id``."""
        body = {"clientId": client_id, "enabled": enabled}
        await self._send("PATCH", "/internal/logs/subscribe", json=body)

    # --- plumbing ----------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def _send(
        self,
        method: str,
        path: str,
        *,
        on_error: Callable[[httpx.Response], None] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        context = f"{method} {path}"
        with _mapped_errors(context):
            response = await self._http.request(method, self._url(path), **kwargs)
        if not response.is_success and on_error is not None:
            on_error(response)
        _raise_for_status(response, context)
        return response


@contextmanager
def _mapped_errors(context: str) -> Iterator[None]:
    """Translate httpx exceptions into the ComfyError tree."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise ComfyUnavailable(f"{context}: timed out ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise ComfyUnavailable(f"{context}: {type(exc).__name__}: {exc}") from exc
    except httpx.HTTPError as exc:
        raise ComfyProtocolError(f"{context}: {type(exc).__name__}: {exc}") from exc


def _raise_for_status(response: httpx.Response, context: str) -> None:
    status = response.status_code
    if response.is_success:
        return
    text = response.text[:500]
    if status >= 500:
        raise ComfyUnavailable(f"{context}: {status} {text}".rstrip(), status_code=status)
    if status == 404:
        raise ComfyNotFound(f"{context}: 404", body=text)
    if 400 <= status < 500:
        raise ComfyRequestError(
            f"{context}: {status} {text}".rstrip(), status_code=status, body=text
        )
    raise ComfyProtocolError(f"{context}: unexpected status {status}")


def _prompt_rejection(response: httpx.Response) -> None:
    """POST /prompt 400 → PromptRejected with ComfyUI's dicts unchanged."""
    if response.status_code != 400:
        return
    body = _json(response)
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        raise ComfyProtocolError(f"POST /prompt 400 without an error object: {response.text[:500]}")
    node_errors = body.get("node_errors")
    raise PromptRejected(body["error"], node_errors if isinstance(node_errors, dict) else {})


def parse_object_info(body: dict[str, Any]) -> dict[str, NodeInfo]:
    """The classes of a GET /object_info body as models. A class whose description does not
    parse is left out (and logged) rather than failing the whole catalogue: one odd custom
    node must not hide all the others."""
    catalogue: dict[str, NodeInfo] = {}
    for name, info in body.items():
        try:
            catalogue[name] = NodeInfo.model_validate(info)
        except ValidationError as exc:
            logger.warning("comfyui node class skipped", class_type=name, error=str(exc))
    return catalogue


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        snippet = response.text[:200]
        raise ComfyProtocolError(f"{response.request.url.path}: not JSON: {snippet!r}") from exc


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ComfyProtocolError(f"{what} is not an object: {type(body).__name__}")
    return body


def _strings(body: Any, what: str) -> list[str]:
    if not isinstance(body, list) or not all(isinstance(item, str) for item in body):
        raise ComfyProtocolError(f"{what} is not a list of strings")
    return body


def _parse(model: type[_M], data: Any) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ComfyProtocolError(f"unexpected {model.__name__} shape: {exc}") from exc


def _view_params(filename: str, subfolder: str, type: str) -> dict[str, str]:
    return {"filename": filename, "subfolder": subfolder, "type": type}
