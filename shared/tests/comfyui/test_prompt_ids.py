"""prompt_id_for / is_canonical_uuid: the ComfyUI prompt id of each attempt of a task."""

from __future__ import annotations

import uuid

import pytest

from comfy_shared.comfyui import PROMPT_ID_NAMESPACE, is_canonical_uuid, prompt_id_for

TASK_UUID = "7b0c2d7e-0a8e-4a43-9a55-0f3c3d6f8c11"


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        (TASK_UUID, True),
        ("00000000-0000-0000-0000-000000000000", True),
        (str(uuid.uuid5(uuid.NAMESPACE_DNS, "x")), True),
        (TASK_UUID.upper(), False),
        (TASK_UUID.replace("-", ""), False),
        ("{" + TASK_UUID + "}", False),
        ("urn:uuid:" + TASK_UUID, False),
        (TASK_UUID + " ", False),
        (TASK_UUID[:35], False),
        ("task-42", False),
        ("", False),
    ],
)
def test_is_canonical_uuid(value: str, canonical: bool) -> None:
    assert is_canonical_uuid(value) is canonical


def _derived(task_id: str, attempt: int) -> str:
    return str(uuid.uuid5(PROMPT_ID_NAMESPACE, f"{task_id}/{attempt}"))


@pytest.mark.parametrize(
    ("task_id", "attempt", "expected"),
    [
        (TASK_UUID, 1, TASK_UUID),  # submitted straight to a service: prompt id == task id
        (TASK_UUID, 2, _derived(TASK_UUID, 2)),
        (TASK_UUID, 3, _derived(TASK_UUID, 3)),
        ("task-42", 1, _derived("task-42", 1)),
        ("task-42", 2, _derived("task-42", 2)),
        (TASK_UUID.upper(), 1, _derived(TASK_UUID.upper(), 1)),  # not canonical: derived
        ("", 1, _derived("", 1)),
    ],
)
def test_prompt_id_for(task_id: str, attempt: int, expected: str) -> None:
    assert prompt_id_for(task_id, attempt) == expected


def test_derived_ids_are_fixed_for_good() -> None:
    # A changed namespace or name format would give running tasks new prompt ids: pin both.
    assert str(PROMPT_ID_NAMESPACE) == "b114bb27-9274-4704-99e0-2ebbfeba0db5"
    assert prompt_id_for("task-42", 1) == str(
        uuid.uuid5(uuid.UUID("b114bb27-9274-4704-99e0-2ebbfeba0db5"), "task-42/1")
    )


def test_every_id_is_canonical_and_distinct_per_attempt() -> None:
    tasks = [TASK_UUID, str(uuid.uuid4()), "task-42", "Task-42", "a/b", "ü", "x" * 300]
    ids = [prompt_id_for(task, attempt) for task in tasks for attempt in range(1, 6)]
    assert all(is_canonical_uuid(prompt_id) for prompt_id in ids)
    assert len(set(ids)) == len(ids)
    assert ids == [prompt_id_for(task, attempt) for task in tasks for attempt in range(1, 6)]


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempts_count_from_one(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempts count from 1"):
        prompt_id_for(TASK_UUID, attempt)
