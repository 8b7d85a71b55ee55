"""Final states built from ComfyUI history entries recorded from a real server."""

from typing import Any

import pytest

from comfy_service.record_changes import (
    finish_from_history,
    retry_elsewhere,
    started,
    task_output,
    with_progress,
)
from comfy_shared.comfyui import HistoryEntry, OutputFile
from comfy_shared.models import (
    Attempt,
    ErrorType,
    OutputKind,
    Progress,
    RetryPolicy,
    TaskError,
    TaskRecord,
)
from comfy_shared.task_state import TaskStatus
from comfy_testkit.captures import load_capture


def history_entry(capture: str) -> HistoryEntry:
    body: dict[str, Any] = load_capture(capture)["response"]["body"]
    [entry] = body.values()
    return HistoryEntry.model_validate(entry)


def running() -> TaskRecord:
    return TaskRecord(id="t", status=TaskStatus.RUNNING, progress=Progress(node="3"))


def test_success_lists_every_output_file() -> None:
    final = finish_from_history(running(), history_entry("10-get-history-ok"))

    assert final is not None
    assert final.status is TaskStatus.SUCCEEDED
    assert [(o.node_id, o.kind, o.filename) for o in final.outputs] == [
        ("3", OutputKind.IMAGE, "fixture_minimal_00001_.png")
    ]
    assert final.finished_at is not None


def test_a_fully_cached_prompt_still_reports_its_outputs() -> None:
    final = finish_from_history(running(), history_entry("14-get-history-cached-repeat"))

    assert final is not None
    assert final.status is TaskStatus.SUCCEEDED
    assert [o.filename for o in final.outputs] == ["fixture_minimal_00001_.png"]


def test_execution_error_names_node_type_and_exception() -> None:
    final = finish_from_history(running(), history_entry("25-get-history-execution-error"))

    assert final is not None
    assert final.status is TaskStatus.FAILED
    assert final.error is not None
    assert final.error.type is ErrorType.COMFYUI
    assert final.error.details["node_type"] == "ImageToMask"
    assert final.error.details["exception_type"] == "IndexError"
    assert "ImageToMask" in final.error.message
    assert "out of bounds" in final.error.message


def test_an_interrupt_nobody_here_asked_for_is_a_comfyui_failure() -> None:
    final = finish_from_history(running(), history_entry("29-get-history-interrupted"))

    assert final is not None
    assert final.status is TaskStatus.FAILED
    assert final.error is not None
    assert final.error.type is ErrorType.COMFYUI
    assert "interrupted" in final.error.message


def test_a_task_that_already_ended_is_left_alone() -> None:
    cancelled = TaskRecord(id="t", status=TaskStatus.CANCELLED)
    assert finish_from_history(cancelled, history_entry("10-get-history-ok")) is None


@pytest.mark.parametrize(
    ("filename", "kind"),
    [("a.PNG", "image"), ("b.webp", "image"), ("c.gif", "video"), ("d.mp4", "video"),
     ("e.flac", "audio"), ("f.safetensors", "other")],
)  # fmt: skip
def test_output_kind_follows_the_file_type(filename: str, kind: str) -> None:
    output = task_output(OutputFile(node_id="9", kind="images", filename=filename))
    assert output.kind == kind


def test_start_moves_a_waiting_task_to_running_once() -> None:
    for waiting in (TaskStatus.QUEUED, TaskStatus.DISPATCHED):
        moved = started(TaskRecord(id="t", status=waiting))
        assert moved is not None
        assert moved.status is TaskStatus.RUNNING
        assert moved.started_at is not None
    assert started(running()) is None


def test_progress_on_a_waiting_task_proves_it_runs() -> None:
    moved = with_progress(TaskRecord(id="t"), "5", 3, 20)
    assert moved is not None
    assert moved.status is TaskStatus.RUNNING
    assert moved.progress == Progress(node="5", value=3, max=20)
    assert with_progress(TaskRecord(id="t", status=TaskStatus.FAILED), "5", 3, 20) is None


def failed_with(error: TaskError, *, attempts: int, retry: RetryPolicy | None) -> TaskRecord:
    return TaskRecord(
        id="t",
        status=TaskStatus.FAILED,
        node_id="gpu-1",
        attempts=attempts,
        error=error,
        retry=retry,
        attempt_log=[Attempt(number=attempts, node_id="gpu-1")],
    )


OOM = TaskError(
    type=ErrorType.COMFYUI,
    message="node 3 (KSampler) failed: torch.OutOfMemoryError: CUDA out of memory",
    details={"exception_type": "torch.OutOfMemoryError"},
)
POLICY = RetryPolicy(max_attempts=3, retry_on=["OutOfMemoryError"])


def test_a_node_specific_failure_goes_back_to_the_queue_with_its_attempt_logged() -> None:
    again = retry_elsewhere(failed_with(OOM, attempts=1, retry=POLICY))

    assert again is not None
    assert again.status is TaskStatus.QUEUED
    assert again.node_id is None
    assert again.error is None
    assert again.attempt_log[-1].outcome == OOM.message
    assert again.attempt_log[-1].ended_at is not None


def test_no_retry_without_a_policy_past_the_limit_or_for_other_errors() -> None:
    other = OOM.model_copy(update={"message": "IndexError", "details": {}})
    lost = TaskError(type=ErrorType.SERVICE, message="lost", details={"node_fault": True})
    invalid = TaskError(type=ErrorType.VALIDATION, message="bad", details={"node_fault": True})

    assert retry_elsewhere(failed_with(OOM, attempts=1, retry=None)) is None
    assert retry_elsewhere(failed_with(OOM, attempts=3, retry=POLICY)) is None
    assert retry_elsewhere(failed_with(other, attempts=1, retry=POLICY)) is None
    assert retry_elsewhere(failed_with(lost, attempts=1, retry=POLICY)) is not None
    assert retry_elsewhere(failed_with(invalid, attempts=1, retry=POLICY)) is None
