"""Provisional: replaced by the emulator-2026 branch."""

from __future__ import annotations

import uuid

_NAMESPACE = uuid.UUID("6f1c2a4e-3b7d-4c55-9e0a-2d8f5b1c7e93")


def is_canonical_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def prompt_id_for(task_id: str, attempt: int) -> str:
    if attempt == 1 and is_canonical_uuid(task_id):
        return task_id
    return str(uuid.uuid5(_NAMESPACE, f"{task_id}/{attempt}"))
