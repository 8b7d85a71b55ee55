"""How attempts end, built from ComfyUI history entries recorded from a real server."""

from typing import Any

import pytest

from comfy_service.comfy_results import ended_from_history, task_output
from comfy_shared.comfyui import HistoryEntry, OutputFile, OutputText
from comfy_shared.lifecycle import AttemptRef
from comfy_shared.models import ErrorType, OutputKind
from comfy_testkit.captures import load_capture

ATTEMPT = AttemptRef("gpu-1", 1)


def history_entry(capture: str) -> HistoryEntry:
    body: dict[str, Any] = load_capture(capture)["response"]["body"]
    [entry] = body.values()
    return HistoryEntry.model_validate(entry)


def test_success_lists_every_output_file() -> None:
    ended = ended_from_history(ATTEMPT, history_entry("10-get-history-ok"))

    assert ended.error is None
    assert ended.attempt == ATTEMPT
    assert [(o.node_id, o.kind, o.filename) for o in ended.outputs] == [
        ("3", OutputKind.IMAGE, "fixture_minimal_00001_.png")
    ]


def test_a_fully_cached_prompt_still_reports_its_outputs() -> None:
    ended = ended_from_history(ATTEMPT, history_entry("14-get-history-cached-repeat"))

    assert ended.error is None
    assert [o.filename for o in ended.outputs] == ["fixture_minimal_00001_.png"]


def test_execution_error_names_node_type_and_exception() -> None:
    ended = ended_from_history(ATTEMPT, history_entry("25-get-history-execution-error"))

    assert ended.error is not None
    assert ended.error.type is ErrorType.COMFYUI
    assert ended.error.details["node_type"] == "ImageToMask"
    assert ended.error.details["exception_type"] == "IndexError"
    assert "ImageToMask" in ended.error.message
    assert "out of bounds" in ended.error.message


def test_an_interrupt_nobody_here_asked_for_is_a_comfyui_failure() -> None:
    ended = ended_from_history(ATTEMPT, history_entry("29-get-history-interrupted"))

    assert ended.error is not None
    assert ended.error.type is ErrorType.COMFYUI
    assert "interrupted" in ended.error.message


@pytest.mark.parametrize(
    ("filename", "kind"),
    [("a.PNG", "image"), ("b.webp", "image"), ("c.gif", "video"), ("d.mp4", "video"),
     ("e.flac", "audio"), ("f.txt", "text"), ("f.safetensors", "other")],
)  # fmt: skip
def test_output_kind_follows_the_file_type(filename: str, kind: str) -> None:
    output = task_output(OutputFile(node_id="9", kind="images", filename=filename))
    assert output.kind == kind


def test_an_animated_image_is_a_video() -> None:
    clip = OutputFile(node_id="9", kind="images", filename="clip.webp", animated=True)
    still = OutputFile(node_id="9", kind="images", filename="still.webp")

    assert (task_output(clip).kind, task_output(still).kind) == ("video", "image")


def test_texts_a_node_reported_are_outputs_in_the_order_of_history() -> None:
    raw = history_entry("10-get-history-ok").model_dump()
    image = raw["outputs"]["3"]
    raw["outputs"] = {"5": {"text": ["hello", "wörld"]}, "3": image}

    ended = ended_from_history(ATTEMPT, HistoryEntry.model_validate(raw))

    assert [(o.node_id, o.kind, o.filename, o.type, o.text) for o in ended.outputs] == [
        ("5", OutputKind.TEXT, "5-text-0.txt", "text", "hello"),
        ("5", OutputKind.TEXT, "5-text-1.txt", "text", "wörld"),
        ("3", OutputKind.IMAGE, "fixture_minimal_00001_.png", "output", None),
    ]
    assert task_output(OutputText(node_id="9", position=2, text="x")).filename == "9-text-2.txt"
