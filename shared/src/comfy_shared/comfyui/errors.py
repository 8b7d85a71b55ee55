"""Exceptions raised by the ComfyUI client and listener.

Every low-level error (httpx, websockets, JSON, validation) is mapped to one of these at the
boundary, with the original chained as ``__cause__``::

    ComfyError                   base: catch this to handle anything ComfyUI-related
    ├── ComfyUnavailable         cannot reach ComfyUI, timed out, or it answered 5xx
    │                            (e.g. aiohttp's 500 "Server got itself in trouble");
    │                            the same request may succeed later or on another server
    ├── ComfyProtocolError       the reply has an unexpected shape (not JSON, missing keys,
    │                            odd status); a version mismatch or a bug, not a network issue
    └── ComfyRequestError        ComfyUI refused this request (4xx); resending it won't help
        ├── PromptRejected       400 from POST /prompt: the workflow failed validation
        │                        (or, on ComfyUI 0.26.0+, the prompt_id is not a UUID)
        └── ComfyNotFound        404, e.g. /view of a file that does not exist
"""

from __future__ import annotations

from typing import Any


class ComfyError(Exception):
    """Base of every error raised by ``comfy_shared.comfyui``."""


class ComfyUnavailable(ComfyError):
    """ComfyUI could not be reached, timed out, or failed with a 5xx status."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class ComfyProtocolError(ComfyError):
    """ComfyUI answered something this client does not understand."""


class ComfyRequestError(ComfyError):
    """ComfyUI refused the request with a 4xx status."""

    def __init__(self, message: str, *, status_code: int, body: str = "") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class ComfyNotFound(ComfyRequestError):
    """404: the file, node class or route does not exist."""

    def __init__(self, message: str, *, body: str = "") -> None:
        super().__init__(message, status_code=404, body=body)


class PromptRejected(ComfyRequestError):
    """POST /prompt answered 400: nothing was queued.

    ``error`` and ``node_errors`` are ComfyUI's dicts exactly as received, so callers can pass
    them on to their own clients. ``error`` has the keys type/message/details/extra_info;
    ``node_errors`` maps API node ids to ``{"errors": [...], "dependent_outputs": [...],
    "class_type": ...}`` and is empty for whole-prompt errors (unknown class, no outputs).
    """

    def __init__(self, error: dict[str, Any], node_errors: dict[str, Any]) -> None:
        self.error = error
        self.node_errors = node_errors
        super().__init__(
            f"prompt rejected: {self.error_type}: {self.error_message}", status_code=400
        )

    @property
    def error_type(self) -> str:
        """E.g. ``prompt_outputs_failed_validation``, ``invalid_prompt``, ``prompt_no_outputs``,
        or ``invalid_prompt_id``: ComfyUI 0.26.0+ refused the ``prompt_id`` because it is not a
        canonical UUID. That one is the client's fault, not the workflow's; see
        :mod:`comfy_shared.comfyui.prompt_ids`."""
        return str(self.error.get("type", ""))

    @property
    def error_message(self) -> str:
        return str(self.error.get("message", ""))

    @property
    def error_details(self) -> str:
        return str(self.error.get("details", ""))
