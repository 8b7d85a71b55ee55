"""The ComfyUI versions the emulator can play, and what differs between them.

The emulator plays ComfyUI 0.8.0 (2026-01-07) unless told otherwise; that is the version the
recorded captures come from. `"0.26.0"` adds the later core changes a wrapper has to handle
(protocol notes §9):

- §9.1 a client-supplied `prompt_id` must be a canonical UUID (400 `invalid_prompt_id`);
- §9.2 cancel by job id: `POST /api/jobs/{job_id}/cancel` and `POST /api/jobs/cancel`;
- §9.3 the `/api/jobs` list and detail, where an interrupted prompt is `cancelled`;
- a graph with a node that has no `class_type`, or one ComfyUI does not have, is refused as
  `missing_node_type` naming the node's title (ComfyUI PR #12194, 2026-02), not as
  `invalid_prompt`.

Everything else (events, history, other routes) is the same in both.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal, TypeGuard

ComfyUIVersion = Literal["0.8.0", "0.26.0"]
COMFYUI_VERSIONS: tuple[ComfyUIVersion, ...] = ("0.8.0", "0.26.0")
DEFAULT_COMFYUI_VERSION: ComfyUIVersion = "0.8.0"


@dataclass(frozen=True)
class VersionTraits:
    """The behaviours that depend on the emulated version."""

    canonical_prompt_ids: bool  # §9.1: POST /prompt rejects a prompt_id that is not one
    jobs_api: bool  # §9.2 and §9.3: the /api/jobs routes (list, detail, cancel)
    missing_node_type: bool  # a missing or unknown class_type is `missing_node_type`


_TRAITS: dict[ComfyUIVersion, VersionTraits] = {
    "0.8.0": VersionTraits(canonical_prompt_ids=False, jobs_api=False, missing_node_type=False),
    "0.26.0": VersionTraits(canonical_prompt_ids=True, jobs_api=True, missing_node_type=True),
}


def traits_of(version: ComfyUIVersion) -> VersionTraits:
    """The traits of one version; ValueError for a version the emulator cannot play."""
    try:
        return _TRAITS[version]
    except KeyError:
        known = ", ".join(COMFYUI_VERSIONS)
        raise ValueError(f"comfyui_version must be one of {known}, got {version!r}") from None


def is_canonical_uuid(value: object) -> TypeGuard[str]:
    """ComfyUI's `validate_job_id`: a str equal to `str(uuid.UUID(value))`.

    `uuid.UUID` also parses upper case, bare hex, braces and `urn:uuid:`; ComfyUI compares the
    id verbatim everywhere (history keys, events, /interrupt), so only the canonical spelling
    (36 characters, lowercase, hyphenated) is accepted.
    """
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False
