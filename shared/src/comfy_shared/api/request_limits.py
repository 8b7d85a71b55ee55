"""Bounds on what one request may ask of a process, the same on both APIs.

A body under ``--max-body-bytes`` can still cost far more than its size: a graph of a
million one-line nodes, a string that every log line and event repeats, a 0.5 MB PNG that
declares 13000 x 13000 pixels and decodes to 500 MB. Each has its own bound, checked when
the request is read, before anything is stored:

- ``--max-graph-nodes``: nodes of a graph (``GraphTooLarge``, 422 ``graph_too_large``);
- ``--max-string-bytes``: every string of the body, keys too, in UTF-8 bytes, except the
  values of a template's image parameters (``StringTooLong``, 422 ``string_too_long``);
- ``--max-image-bytes`` and ``--max-image-pixels``: each image, by its header
  (``Template.check_images``, 422 ``invalid_params``).
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass
from typing import Any

from comfy_shared.api.strict_json import InvalidJsonValue, JsonPath
from comfy_shared.errors import ComfyStackError
from comfy_shared.settings import ApiServerSettings
from comfy_shared.workflows import ImageLimits


@dataclass(frozen=True, slots=True)
class RequestLimits:
    max_graph_nodes: int
    max_string_bytes: int
    max_body_bytes: int
    images: ImageLimits

    @classmethod
    def of(cls, settings: ApiServerSettings) -> RequestLimits:
        return cls(
            max_graph_nodes=settings.max_graph_nodes,
            max_string_bytes=settings.max_string_bytes,
            max_body_bytes=settings.max_body_bytes,
            images=ImageLimits(settings.max_image_bytes, settings.max_image_pixels),
        )


class GraphTooLarge(ComfyStackError):
    def __init__(self, nodes: int, limit: int) -> None:
        super().__init__(f"the graph has {nodes} nodes; at most {limit} are allowed")


class StringTooLong(InvalidJsonValue):
    def __init__(self, path: JsonPath, size: int, limit: int) -> None:
        super().__init__(path, f"a string of {size} bytes; at most {limit} are allowed")


def check_graph_size(document: Any, max_nodes: int) -> None:
    """Counted on the parsed body, before the schema reads every node."""
    prompt = document.get("prompt") if isinstance(document, dict) else None
    if isinstance(prompt, dict) and len(prompt) > max_nodes:
        raise GraphTooLarge(len(prompt), max_nodes)


def check_string_sizes(document: Any, max_bytes: int, *, skip: Set[JsonPath] = frozenset()) -> None:
    """Raise StringTooLong for the first string (or key) over ``max_bytes``, in document
    order; values at the paths in ``skip`` are not looked at. ``document`` comes from the
    strict parser, so it nests at most 64 deep and its strings encode to UTF-8."""
    _check(document, (), max_bytes, skip)


def _check(value: Any, path: JsonPath, max_bytes: int, skip: Set[JsonPath]) -> None:
    if path in skip:
        return
    if isinstance(value, str):
        _check_string(value, path, max_bytes)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_string(key, (*path, key), max_bytes)
            _check(item, (*path, key), max_bytes, skip)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, (*path, index), max_bytes, skip)


def _check_string(value: str, path: JsonPath, max_bytes: int) -> None:
    # A character is at most 4 bytes in UTF-8: most strings need no encoding to be measured.
    if len(value) * 4 <= max_bytes:
        return
    size = len(value) if value.isascii() else len(value.encode("utf-8"))
    if size > max_bytes:
        raise StringTooLong(path, size, max_bytes)
