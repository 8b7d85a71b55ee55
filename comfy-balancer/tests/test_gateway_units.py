"""The gateway's pure parts, without processes: reading a prompt, naming outputs, the job view,
the refusal table."""

import inspect
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from comfy_balancer import errors as balancer_errors
from comfy_balancer.gateway import errors as gateway_errors
from comfy_balancer.gateway.errors import REFUSALS, PromptRefused, refusal_response
from comfy_balancer.gateway.history import (
    RenderedHistory,
    history_entry,
    output_nodes,
    shown_graph,
)
from comfy_balancer.gateway.jobs import BadJobQuery, JobQuery, job
from comfy_balancer.gateway.naming import (
    NodeLocation,
    find_output,
    gateway_subfolder,
    node_location,
    present_node_output,
    ui_outputs,
)
from comfy_balancer.gateway.prompts import read_prompt
from comfy_balancer.gateway.uploads import UploadName, referenced_upload
from comfy_shared.models import (
    Attempt,
    ErrorType,
    OutputKind,
    PromptOrigin,
    TaskError,
    TaskOutput,
    TaskRecord,
)
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import Submission
from comfy_testkit import graphs
from comfy_testkit.frontend_schemas import check_job

PROMPT_ID = "0b5c7a38-3f5e-4d8c-9a43-1f2d3e4c5b6a"


def refused(document: Any) -> PromptRefused:
    with pytest.raises(PromptRefused) as caught:
        read_prompt(document)
    return caught.value


@pytest.mark.parametrize(
    ("document", "type_", "message", "details"),
    [
        ({"client_id": "x"}, "no_prompt", "No prompt provided", "No prompt provided"),
        ([1, 2], "no_prompt", "No prompt provided", "No prompt provided"),
        (
            {"prompt": {"1": {"inputs": {}}}},
            "invalid_prompt",
            "Cannot execute because a node is missing the class_type property.",
            "Node ID '#1'",
        ),
        (
            # A UI-format workflow sent as the prompt: its "nodes" is no node (as in ComfyUI).
            {"prompt": {"nodes": [], "links": []}},
            "invalid_prompt",
            "Cannot execute because a node is missing the class_type property.",
            "Node ID '#nodes'",
        ),
        (
            {"prompt": graphs.solid_image("p"), "partial_execution_targets": ["42"]},
            "prompt_no_outputs",
            "Prompt has no outputs",
            "",
        ),
    ],
)
def test_a_malformed_prompt_is_refused_as_comfyui_refuses_it(
    document: Any, type_: str, message: str, details: str
) -> None:
    error = refused(document)
    assert (error.type, error.message, error.details, error.node_errors) == (
        type_,
        message,
        details,
        {},
    )


@pytest.mark.parametrize(
    "prompt_id",
    [
        7,
        PROMPT_ID.upper(),
        PROMPT_ID.replace("-", ""),
        "{" + PROMPT_ID + "}",
        "urn:uuid:" + PROMPT_ID,
        "my-prompt",
    ],
)
def test_a_client_prompt_id_must_be_a_canonical_uuid(prompt_id: Any) -> None:
    error = refused({"prompt": graphs.solid_image("p"), "prompt_id": prompt_id})
    assert (error.type, error.message) == ("invalid_prompt_id", "prompt_id must be a valid UUID")
    response = refusal_response(error)
    assert response is not None
    assert response.status_code == 400
    body = json.loads(bytes(response.body))
    assert body["node_errors"] == {}
    assert body["error"]["extra_info"] == {}


def test_a_prompt_keeps_its_id_client_and_extra_data_but_not_comfy_org_credentials() -> None:
    extra = {"extra_pnginfo": {"workflow": {"id": "wf"}}, "auth_token_comfy_org": "secret"}
    prompt = read_prompt(
        {
            "prompt": graphs.solid_image("p"),
            "prompt_id": PROMPT_ID,
            "client_id": "tab",
            "extra_data": extra | {"api_key_comfy_org": "k"},
            "front": True,
        }
    )
    assert (prompt.prompt_id, prompt.client_id, prompt.front) == (PROMPT_ID, "tab", True)
    assert prompt.extra_data == {"extra_pnginfo": {"workflow": {"id": "wf"}}}
    minted = read_prompt({"prompt": graphs.solid_image("p"), "prompt_id": None}).prompt_id
    assert str(uuid.UUID(minted)) == minted


def test_partial_execution_keeps_the_targets_and_what_they_depend_on() -> None:
    graph = graphs.partly_invalid("p")  # outputs "3" (from 1, 2) and "5" (from 4)
    prompt = read_prompt({"prompt": graph, "partial_execution_targets": ["3", "nope"]})
    assert sorted(prompt.graph) == ["1", "2", "3"]
    assert output_nodes(graph) == ["3", "5"]


def test_every_file_a_client_sees_names_its_prompt_and_is_found_again() -> None:
    assert gateway_subfolder(PROMPT_ID, "") == PROMPT_ID
    assert gateway_subfolder(PROMPT_ID, "jobs/a") == f"{PROMPT_ID}/jobs/a"
    assert node_location(f"{PROMPT_ID}/jobs/a") == NodeLocation(PROMPT_ID, "jobs/a")
    assert node_location(PROMPT_ID) == NodeLocation(PROMPT_ID, "")
    assert node_location("") is None
    assert node_location("a:b/x") is None  # no task id holds a colon
    executed = {"images": [{"filename": "a.png", "subfolder": "", "type": "temp"}], "x": [1]}
    assert present_node_output(PROMPT_ID, executed) == {
        "images": [{"filename": "a.png", "subfolder": PROMPT_ID, "type": "temp"}],
        "x": [1],
    }
    outputs = [
        TaskOutput(node_id="9", kind=OutputKind.IMAGE, filename="a.png", subfolder="jobs/a"),
        TaskOutput(node_id="9", kind=OutputKind.VIDEO, filename="b.webp"),
        TaskOutput(node_id="7", kind=OutputKind.AUDIO, filename="c.flac"),
    ]
    assert ui_outputs(PROMPT_ID, outputs) == {
        "9": {
            "images": [
                {"filename": "a.png", "subfolder": f"{PROMPT_ID}/jobs/a", "type": "output"},
                {"filename": "b.webp", "subfolder": PROMPT_ID, "type": "output"},
            ],
            "animated": [True],
        },
        "7": {"audio": [{"filename": "c.flac", "subfolder": PROMPT_ID, "type": "output"}]},
    }
    assert find_output(outputs, "a.png", "jobs/a", "output") == 0
    assert find_output(outputs, "a.png", "", "output") is None
    assert find_output(outputs, "a.png", "jobs/a", "temp") is None


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("x.png", UploadName("input", "", "x.png")),
        ("sub/dir/x.png", UploadName("input", "sub/dir", "x.png")),
        ("x.png [output]", UploadName("output", "", "x.png")),
        ("../x.png", None),
        ("a\nb.png", None),
        ("", None),
    ],
)
def test_graph_values_name_uploads_in_comfyui_s_forms(value: str, name: UploadName | None) -> None:
    assert referenced_upload(value) == name


def test_an_upload_is_renamed_as_comfyui_renames_it() -> None:
    assert UploadName.of("red.png").renamed(2).name == "red (2).png"
    assert UploadName.of("noext").renamed(1).name == "noext (1)"


def ended(status: TaskStatus, **fields: Any) -> Submission:
    start = datetime(2026, 5, 1, tzinfo=UTC)
    record = TaskRecord(
        id=PROMPT_ID,
        status=status,
        created_at=start,
        started_at=start + timedelta(seconds=1),
        finished_at=start + timedelta(seconds=3),
        attempt_log=[Attempt(number=1, node_id="a", started_at=start + timedelta(seconds=1))],
        client={"comfyui_staged": {"comfy-stack/abc.png": "mine.png"}},
        **fields,
    )
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "comfy-stack/abc.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
    }
    extra = {"extra_pnginfo": {"workflow": {"id": "wf-1"}}}
    return Submission(record, graph, PromptOrigin(client_id="tab", number=5, extra_data=extra))


def test_history_shows_the_graph_as_sent_and_comfyui_s_messages() -> None:
    entry = history_entry(ended(TaskStatus.CANCELLED))
    number, prompt_id, graph, extra, outputs = entry["prompt"]
    assert (number, prompt_id, outputs) == (5, PROMPT_ID, ["2"])
    assert graph["1"]["inputs"]["image"] == "mine.png"
    assert extra["client_id"] == "tab"
    assert extra["create_time"] == int(datetime(2026, 5, 1, tzinfo=UTC).timestamp() * 1000)
    status = entry["status"]
    assert (status["status_str"], status["completed"]) == ("error", False)
    assert [m[0] for m in status["messages"]] == [
        "execution_start",
        "execution_cached",
        "execution_interrupted",
    ]
    assert shown_graph(ended(TaskStatus.SUCCEEDED))["1"]["inputs"]["image"] == "mine.png"


def test_a_failed_job_fits_the_frontend_schema_whatever_failed() -> None:
    comfy = TaskError(
        type=ErrorType.COMFYUI,
        message="node 1 failed",
        details={"node_id": "1", "node_type": "LoadImage", "exception_type": "OSError",
                 "exception_message": "bad", "traceback": ["line"], "executed": []},
    )  # fmt: skip
    lost = TaskError(
        type=ErrorType.SERVICE, message="node a was lost", details={"node_fault": True}
    )
    for error in (comfy, lost):
        failed = job(ended(TaskStatus.FAILED, error=error), detail=True)
        check_job(failed, detail=True)
        assert failed["status"] == "failed"
        assert failed["workflow_id"] == "wf-1"
        assert failed["execution_error"]["exception_message"] in ("bad", "node a was lost")
    cancelled = job(ended(TaskStatus.CANCELLED))
    check_job(cancelled)
    assert "execution_error" not in cancelled
    assert (cancelled["priority"], cancelled["outputs_count"]) == (5, 0)


def test_the_job_query_is_checked_as_comfyui_checks_it() -> None:
    query = JobQuery.parse({"status": "completed, failed", "limit": "5", "offset": "-3"})
    assert (query.statuses, query.limit, query.offset) == (("completed", "failed"), 5, 0)
    assert JobQuery.parse({}).limit == 1000  # a number even when none is asked for
    for bad in ({"status": "done"}, {"limit": "0"}, {"limit": "x"}, {"sort_by": "name"}):
        with pytest.raises(BadJobQuery):
            JobQuery.parse(bad)


def test_every_facade_refusal_the_gateway_can_meet_is_in_the_one_table() -> None:
    domain = [
        cls
        for module in (balancer_errors, gateway_errors)
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, Exception) and cls.__module__ == module.__name__
    ]
    unmapped = [cls.__name__ for cls in domain if cls not in REFUSALS and cls is not PromptRefused]
    assert unmapped == []
    for refusal in REFUSALS.values():
        assert 400 <= refusal.status < 600
        assert refusal.type
        assert refusal.type == refusal.type.lower()


def test_rendered_history_keeps_the_most_recently_used_entries() -> None:
    rendered = RenderedHistory(max_entries=2)
    rendered.put(("a", 1), b"A")
    rendered.put(("b", 1), b"B")
    assert rendered.get(("a", 1)) == b"A"  # now the most recent
    rendered.put(("c", 1), b"C")

    assert (rendered.get(("a", 1)), rendered.get(("b", 1)), rendered.get(("c", 1))) == (
        b"A", None, b"C",
    )  # fmt: skip
    assert rendered.get(("a", 2)) is None  # the same id made again is another entry
