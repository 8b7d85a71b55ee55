"""The /api/jobs view of ComfyUI 0.26.0 as pure functions over a PromptQueue (no HTTP)."""

from __future__ import annotations

from typing import Any

import pytest

from comfy_emulator.jobs import (
    JOB_STATUSES,
    BadJobQuery,
    JobQuery,
    find_job,
    finished_job,
    job_status,
    list_jobs,
    normalize_outputs,
    outputs_summary,
)
from comfy_emulator.prompt_queue import ExecutionStatus, PromptQueue, QueueEntry

SAVED = {"filename": "a_00001_.png", "subfolder": "", "type": "output"}
TEMP = {"filename": "ComfyUI_temp_abcde_00001_.png", "subfolder": "", "type": "temp"}
TEXT_FILE = {"filename": "notes.txt", "subfolder": "", "type": "output"}
LATENT = {"filename": "x.latent", "subfolder": "", "type": "output"}


# ---- statuses and outputs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status_str", "events", "expected"),
    [
        ("success", {"execution_success": {}}, "completed"),
        ("error", {"execution_error": {}}, "failed"),
        ("error", {"execution_interrupted": {}}, "cancelled"),
        (None, {}, "completed"),  # ComfyUI's fallback for an entry without a status
    ],
)
def test_job_status(status_str: str | None, events: dict[str, Any], expected: str) -> None:
    assert job_status(status_str, events) == expected


@pytest.mark.parametrize(
    ("outputs", "count", "previewable", "preview"),
    [
        ({}, 0, 0, None),
        ({"9": {"images": [SAVED]}}, 1, 1, {**SAVED, "nodeId": "9", "mediaType": "images"}),
        # a saved image wins over a temp preview found before it
        (
            {"4": {"images": [TEMP]}, "9": {"images": [SAVED]}},
            2,
            2,
            {**SAVED, "nodeId": "9", "mediaType": "images"},
        ),
        ({"4": {"images": [TEMP]}}, 1, 1, {**TEMP, "nodeId": "4", "mediaType": "images"}),
        # visual media over a saved text file, a text file over raw text
        (
            {"5": {"text_files": [TEXT_FILE]}, "4": {"images": [TEMP]}},
            2,
            2,
            {**TEMP, "nodeId": "4", "mediaType": "images"},
        ),
        (
            {"6": {"text": ["hello"]}, "5": {"text_files": [TEXT_FILE]}},
            1,
            1,
            {**TEXT_FILE, "nodeId": "5", "mediaType": "text_files"},
        ),
        # raw text is a preview only, never counted
        (
            {"6": {"text": ["hello"]}},
            0,
            0,
            {"content": "hello", "nodeId": "6", "mediaType": "text"},
        ),
        # a 3D file name is a file item
        (
            {"7": {"result": ["mesh.GLB"]}},
            1,
            1,
            {
                "filename": "mesh.GLB",
                "type": "output",
                "subfolder": "",
                "mediaType": "3d",
                "nodeId": "7",
            },
        ),
        ({"8": {"latents": [LATENT]}}, 1, 0, None),  # counted, not previewable
        (
            {"8": {"gifs": [{"filename": "v.mp4", "type": "output", "format": "video/h264-mp4"}]}},
            1,
            1,
            {"filename": "v.mp4", "type": "output", "format": "video/h264-mp4"}
            | {"nodeId": "8", "mediaType": "gifs"},
        ),
        (
            {"9": {"images": [SAVED], "animated": [True]}},
            1,
            1,
            {**SAVED, "nodeId": "9", "mediaType": "images"},
        ),
        ({"9": None, "3": {"images": [None]}}, 0, 0, None),
    ],
)
def test_outputs_summary(
    outputs: dict[str, Any], count: int, previewable: int, preview: dict[str, Any] | None
) -> None:
    assert outputs_summary(outputs) == (count, previewable, preview)


def test_raw_text_previews_are_cut_at_1024_characters() -> None:
    _, _, preview = outputs_summary({"6": {"text": ["x" * 1025]}})
    assert preview == {"content": "x" * 1024, "truncated": True, "nodeId": "6", "mediaType": "text"}


def test_normalize_outputs_turns_3d_names_into_files_and_drops_nones() -> None:
    outputs = {
        "7": {"result": ["mesh.obj", "plain words", None], "animated": [False]},
        "9": {"images": [SAVED]},
        "10": None,
    }
    assert normalize_outputs(outputs) == {
        "7": {
            "result": [
                {"filename": "mesh.obj", "type": "output", "subfolder": "", "mediaType": "3d"},
                "plain words",
            ],
            "animated": [False],
        },
        "9": {"images": [SAVED]},
        "10": None,
    }


# ---- query parameters -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, JobQuery()),
        ({"status": "Pending, cancelled"}, JobQuery(statuses=("pending", "cancelled"))),
        ({"status": " , "}, JobQuery()),
        ({"status": ""}, JobQuery()),
        ({"workflow_id": "wf-1"}, JobQuery(workflow_id="wf-1")),
        ({"sort_by": "EXECUTION_DURATION"}, JobQuery(sort_by="execution_duration")),
        ({"sort_order": "asc"}, JobQuery(descending=False)),
        ({"limit": "5", "offset": "2"}, JobQuery(limit=5, offset=2)),
        ({"offset": "-3"}, JobQuery(offset=0)),
    ],
)
def test_query_parsing(query: dict[str, str], expected: JobQuery) -> None:
    assert JobQuery.parse(query) == expected


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            {"status": "pending,done,lost"},
            "Invalid status value(s): done, lost. "
            "Valid values: pending, in_progress, completed, failed, cancelled",
        ),
        ({"sort_by": "name"}, "sort_by must be 'created_at' or 'execution_duration'"),
        ({"sort_order": "up"}, "sort_order must be 'asc' or 'desc'"),
        ({"limit": "0"}, "limit must be a positive integer"),
        ({"limit": "ten"}, "limit must be an integer"),
        ({"offset": "1.5"}, "offset must be an integer"),
        # ComfyUI's order: status, sort_by, sort_order, limit, offset
        ({"status": "done", "sort_by": "name"}, "Invalid status value(s): done."),
        ({"sort_by": "name", "sort_order": "up"}, "sort_by must be"),
        ({"limit": "0", "offset": "x"}, "limit must be a positive integer"),
    ],
)
def test_bad_query_values(query: dict[str, str], message: str) -> None:
    with pytest.raises(BadJobQuery) as raised:
        JobQuery.parse(query)
    assert str(raised.value).startswith(message)


# ---- list and detail ------------------------------------------------------------------------


def _entry(number: int, prompt_id: str, created: int, workflow_id: str | None = None) -> QueueEntry:
    extra: dict[str, Any] = {"create_time": created, "client_id": "c"}
    if workflow_id is not None:
        extra["extra_pnginfo"] = {"workflow": {"id": workflow_id}}
    return QueueEntry(number, prompt_id, {"1": {"class_type": "X"}}, extra, ["1"])


def _messages(prompt_id: str, start: int, end: int, end_event: str) -> list[list[Any]]:
    data = {"prompt_id": prompt_id}
    return [
        ["execution_start", {**data, "timestamp": start}],
        [end_event, {**data, "timestamp": end}],
    ]


async def _finish(queue: PromptQueue, entry: QueueEntry, kind: str, start: int, end: int) -> None:
    queue.put(entry)
    task_id, _ = await queue.get()
    end_event = {
        "success": "execution_success",
        "error": "execution_error",
        "interrupted": "execution_interrupted",
    }[kind]
    status_str = "success" if kind == "success" else "error"
    outputs = {"1": {"images": [SAVED]}} if kind == "success" else {}
    status = ExecutionStatus(
        status_str, kind == "success", _messages(entry.prompt_id, start, end, end_event)
    )
    queue.task_done(task_id, {"outputs": outputs, "meta": {}}, status)


@pytest.fixture
async def queue() -> PromptQueue:
    """Finished ok/err/int (created 10, 20, 30), running `run` (40), pending `p1`, `p2`."""
    queue = PromptQueue(lambda: None)
    await _finish(queue, _entry(0, "ok", 10, "wf-a"), "success", 100, 150)
    await _finish(queue, _entry(1, "err", 20), "error", 200, 210)
    await _finish(queue, _entry(2, "int", 30, "wf-a"), "interrupted", 300, 400)
    queue.put(_entry(3, "run", 40))
    await queue.get()
    queue.put(_entry(4, "p1", 50))
    queue.put(_entry(5, "p2", 60, "wf-a"))
    return queue


def _ids(view: dict[str, Any]) -> list[str]:
    return [job["id"] for job in view["jobs"]]


def test_list_is_newest_first_with_every_status(queue: PromptQueue) -> None:
    view = list_jobs(queue, JobQuery())
    assert _ids(view) == ["p2", "p1", "run", "int", "err", "ok"]
    assert [job["status"] for job in view["jobs"]] == [
        "pending",
        "pending",
        "in_progress",
        "cancelled",
        "failed",
        "completed",
    ]
    assert view["pagination"] == {"offset": 0, "limit": None, "total": 6, "has_more": False}
    assert set(JOB_STATUSES) == {job["status"] for job in view["jobs"]}


def test_list_filters_sorts_and_pages(queue: PromptQueue) -> None:
    only = JobQuery(statuses=("cancelled", "pending"))
    assert _ids(list_jobs(queue, only)) == ["p2", "p1", "int"]
    assert _ids(list_jobs(queue, JobQuery(workflow_id="wf-a"))) == ["p2", "int", "ok"]
    assert _ids(list_jobs(queue, JobQuery(descending=False))) == [
        "ok",
        "err",
        "int",
        "run",
        "p1",
        "p2",
    ]
    by_duration = list_jobs(queue, JobQuery(sort_by="execution_duration"))
    assert _ids(by_duration)[:3] == ["int", "ok", "err"]  # 100, 50, 10; unfinished count as 0
    page = list_jobs(queue, JobQuery(limit=2, offset=3))
    assert _ids(page) == ["int", "err"]
    assert page["pagination"] == {"offset": 3, "limit": 2, "total": 6, "has_more": True}
    last = list_jobs(queue, JobQuery(limit=2, offset=4))
    assert last["pagination"]["has_more"] is False
    assert list_jobs(queue, JobQuery(offset=9))["jobs"] == []


def test_list_items_have_the_summary_keys_only(queue: PromptQueue) -> None:
    jobs = {job["id"]: job for job in list_jobs(queue, JobQuery())["jobs"]}
    assert jobs["p2"] == {
        "id": "p2",
        "status": "pending",
        "priority": 5,
        "create_time": 60,
        "outputs_count": 0,
        "previewable_outputs_count": 0,
        "workflow_id": "wf-a",
    }
    assert jobs["ok"] == {
        "id": "ok",
        "status": "completed",
        "priority": 0,
        "create_time": 10,
        "execution_start_time": 100,
        "execution_end_time": 150,
        "outputs_count": 1,
        "previewable_outputs_count": 1,
        "preview_output": {**SAVED, "nodeId": "1", "mediaType": "images"},
        "workflow_id": "wf-a",
    }
    assert jobs["err"]["execution_error"] == {"prompt_id": "err", "timestamp": 210}
    assert "workflow_id" not in jobs["err"]  # null keys are dropped


def test_detail_adds_outputs_status_and_workflow(queue: PromptQueue) -> None:
    ok = find_job(queue, "ok")
    assert ok is not None
    assert ok["outputs"] == {"1": {"images": [SAVED]}}
    assert ok["execution_status"] == queue.history["ok"]["status"]
    assert ok["workflow"] == {
        "prompt": {"1": {"class_type": "X"}},
        "extra_data": {
            "create_time": 10,
            "client_id": "c",
            "extra_pnginfo": {"workflow": {"id": "wf-a"}},
        },
    }
    cancelled = find_job(queue, "int")
    assert cancelled is not None
    assert (cancelled["status"], cancelled["outputs"]) == ("cancelled", {})
    for prompt_id, status in (("run", "in_progress"), ("p1", "pending")):
        job = find_job(queue, prompt_id)
        assert job is not None
        assert job["status"] == status
        assert job["workflow"]["prompt"] == {"1": {"class_type": "X"}}
        assert "outputs" not in job
    assert find_job(queue, "nope") is None


def test_finished_job_survives_an_entry_without_status() -> None:
    record = {"prompt": [7, "x", {}, {}, []], "outputs": {}}
    assert finished_job("x", record) == {
        "id": "x",
        "status": "completed",
        "priority": 7,
        "outputs_count": 0,
        "previewable_outputs_count": 0,
    }
