import pytest
from pydantic import ValidationError

from comfy_shared.access import KeyLimits
from comfy_shared.api.schemas import GenerateRequest, TaskView
from comfy_shared.models import OutputKind, Progress, TaskOutput, TaskRecord, is_valid_task_id
from comfy_shared.task_queue import MAX_ABS_PRIORITY

GRAPH = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8}}}


def test_a_graph_or_a_workflow_but_not_both_nor_neither() -> None:
    assert GenerateRequest(prompt=GRAPH).prompt == GRAPH
    assert GenerateRequest(workflow="demo").workflow == "demo"
    for body in ({}, {"prompt": GRAPH, "workflow": "demo"}):
        with pytest.raises(ValidationError, match="exactly one of"):
            GenerateRequest.model_validate(body)


def test_ui_format_workflows_are_refused_with_a_hint() -> None:
    ui_format = {"nodes": [], "links": [], "last_node_id": 9}
    with pytest.raises(ValidationError, match=r"Save \(API\)"):
        GenerateRequest.model_validate({"prompt": ui_format})


BAD_TASK_IDS = [
    "",
    "has space",
    "../x",
    "a" * 129,
    "-leading-dash",
    ".leading-dot",
    "x:events",  # ":" separates Redis key parts: this would name task x's event stream
    "new\nline",
    "trailing\n",
    "caf\u00e9",
]
GOOD_TASK_IDS = ["a", "0", "order-200", "v1.2_rc-3", "A" * 128, "3f2b8c1e-uuid-like"]


@pytest.mark.parametrize("task_id", BAD_TASK_IDS)
def test_task_ids_are_restricted_to_safe_characters(task_id: str) -> None:
    assert not is_valid_task_id(task_id)
    with pytest.raises(ValidationError):
        GenerateRequest(prompt=GRAPH, task_id=task_id)


@pytest.mark.parametrize("task_id", GOOD_TASK_IDS)
def test_ids_in_the_alphabet_are_taken(task_id: str) -> None:
    assert is_valid_task_id(task_id)
    assert GenerateRequest(prompt=GRAPH, task_id=task_id).task_id == task_id


@pytest.mark.parametrize("priority", [-MAX_ABS_PRIORITY - 1, MAX_ABS_PRIORITY + 1, 2**63])
def test_priority_stays_within_what_the_queue_can_order(priority: int) -> None:
    with pytest.raises(ValidationError, match="priority"):
        GenerateRequest(prompt=GRAPH, priority=priority)
    for edge in (-MAX_ABS_PRIORITY, MAX_ABS_PRIORITY):
        assert GenerateRequest(prompt=GRAPH, priority=edge).priority == edge


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        GenerateRequest.model_validate({"prompt": GRAPH, "promt": {}})


def test_task_view_links_every_output_and_reports_percent() -> None:
    record = TaskRecord(
        id="t1",
        progress=Progress(node="3", value=5, max=20),
        outputs=[
            TaskOutput(node_id="9", kind=OutputKind.IMAGE, filename="a.png"),
            TaskOutput(node_id="9", kind=OutputKind.VIDEO, filename="b.mp4", subfolder="s"),
        ],
    )
    view = TaskView.from_record(record, queue_position=2)

    assert [o.url for o in view.outputs] == [
        "/api/v1/tasks/t1/outputs/0",
        "/api/v1/tasks/t1/outputs/1",
    ]
    assert view.links.outputs == [o.url for o in view.outputs]
    assert view.links.events == "/api/v1/tasks/t1/events"
    assert view.progress is not None
    assert view.progress.percent == 25.0
    assert view.queue_position == 2


@pytest.mark.parametrize(
    "node",
    [
        {"class_type": ["EmptyImage"], "inputs": {}},
        {"class_type": {"name": "EmptyImage"}, "inputs": {}},
        {"class_type": "", "inputs": {}},
        {"inputs": {}},
        {"class_type": "EmptyImage"},
        {"class_type": "EmptyImage", "inputs": [["width", 8]]},
        {"class_type": "EmptyImage", "inputs": {}, "_meta": "title"},
        "EmptyImage",
        ["EmptyImage", {}],
        None,
    ],
)
def test_a_node_of_the_wrong_shape_is_refused_naming_it(node: object) -> None:
    with pytest.raises(ValidationError) as refused:
        GenerateRequest.model_validate({"prompt": {**GRAPH, "7": node}})

    assert all(error["loc"][:2] == ("prompt", "7") for error in refused.value.errors())


def test_inputs_take_any_json_and_nodes_keep_their_other_keys() -> None:
    node = {
        "class_type": "EmptyImage",
        "inputs": {
            "link": ["1", 0],
            "literal": {"__value__": [1, 2, 3]},
            "deep": {"a": [{"b": None}]},
            "text": "x",
            "flag": True,
        },
        "_meta": {"title": "Solid"},
        "is_changed": ["abc"],
    }
    # "nodes" is a fine node id: only a UI-format workflow's "nodes" (a list) gets the hint
    graph = {**GRAPH, "2": node, "nodes": node}

    assert GenerateRequest(prompt=graph).prompt == graph


def test_the_schema_says_exactly_one_of_prompt_or_workflow() -> None:
    schema = GenerateRequest.model_json_schema()

    assert [branch["required"] for branch in schema["oneOf"]] == [["prompt"], ["workflow"]]
    assert schema["properties"]["prompt"]["anyOf"][0]["minProperties"] == 1
    node = schema["$defs"]["GraphNode"]
    assert node["required"] == ["class_type", "inputs"]
    assert node["properties"]["class_type"]["minLength"] == 1


@pytest.mark.parametrize("value", [True, "5", 5.5])
def test_integers_are_json_schema_integers(value: object) -> None:
    """``true`` and ``"5"`` are no integer in JSON Schema (pydantic's lax mode takes them)."""
    with pytest.raises(ValidationError, match="priority"):
        GenerateRequest.model_validate({"workflow": "demo", "priority": value})
    with pytest.raises(ValidationError, match="max_queued"):
        KeyLimits.model_validate({"max_queued": value})


def test_an_integer_with_a_zero_fraction_is_an_integer() -> None:
    assert GenerateRequest.model_validate({"workflow": "demo", "priority": 5.0}).priority == 5
    assert KeyLimits.model_validate({"max_queued": 5.0, "max_running": None}).max_queued == 5


@pytest.mark.parametrize("value", [True, "5", 0, -1.5])
def test_gpu_second_budgets_are_positive_json_numbers(value: object) -> None:
    with pytest.raises(ValidationError, match="gpu_seconds_per_day"):
        KeyLimits.model_validate({"gpu_seconds_per_day": value})


def test_a_gpu_second_budget_may_have_a_fraction() -> None:
    limits = KeyLimits.model_validate({"gpu_seconds_per_day": 2.5, "gpu_seconds_per_month": 60})
    assert (limits.gpu_seconds_per_day, limits.gpu_seconds_per_month) == (2.5, 60.0)
