"""The ComfyUI ``prompt_id`` each attempt of a task runs under (pure: no I/O, no clock).

ComfyUI 0.26.0 and later accept a client-supplied ``prompt_id`` only in the canonical UUID
spelling, ``str(uuid.UUID(value))`` (36 characters, lowercase, hyphenated), and answer 400
``invalid_prompt_id`` otherwise; older ones take any string. Our task ids may be anything a
caller chose, and one task can run several attempts, so the prompt id is derived:

- attempt 1 of a task whose id is already a canonical UUID runs under the task id itself, so
  a task submitted straight to a service keeps ``prompt id == task id`` (ComfyUI's history and
  events name the task as callers know it);
- every other attempt runs under ``uuid5(PROMPT_ID_NAMESPACE, f"{task_id}/{attempt}")``.

The result is canonical (every ComfyUI takes it), deterministic (a service that lost the
answer of a submit finds the same attempt's prompt in ComfyUI instead of running it twice) and
distinct per attempt (a retry on the same ComfyUI never meets an earlier attempt's history
entry).
"""

from __future__ import annotations

import uuid

PROMPT_ID_NAMESPACE = uuid.UUID("b114bb27-9274-4704-99e0-2ebbfeba0db5")
"""Fixed for good: changing it would give every running task a new prompt id."""


def is_canonical_uuid(value: str) -> bool:
    """True when ComfyUI 0.26.0+ accepts ``value`` as a ``prompt_id`` (and job id).

    ``uuid.UUID`` also parses upper case, bare hex, ``{...}`` and ``urn:uuid:``; ComfyUI
    compares ids verbatim, so it insists on the one spelling ``str()`` gives.
    """
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def prompt_id_for(task_id: str, attempt: int) -> str:
    """The ComfyUI prompt id of attempt ``attempt`` (1, 2, ...) of task ``task_id``."""
    if attempt < 1:
        raise ValueError(f"attempts count from 1, got {attempt}")
    if attempt == 1 and is_canonical_uuid(task_id):
        return task_id
    return str(uuid.uuid5(PROMPT_ID_NAMESPACE, f"{task_id}/{attempt}"))
