"""The object_info validator against a live emulator: each graph goes to its ``POST /prompt``
(real HTTP) and to ``validate_prompt`` over the same emulator's ``GET /object_info``; both must
refuse or accept it alike, with the same ``error`` and ``node_errors``.

``traceback`` is the one field left out of the comparison: the emulator reports its own
Python frames (as ComfyUI does), the validator none. A graph the emulator refuses from
knowledge object_info does not carry (a node's own check that a file exists) is a separate
test below.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from comfy_emulator import EmulatorConfig, start_emulator
from comfy_emulator.config import default_models
from comfy_emulator.workflows import blur_chain, solid_image, text_to_image
from comfy_shared.comfyui.validation import Dialect, validate_prompt

JsonDict = dict[str, Any]
ONLY_HERE = "only-on-this-node.safetensors"


@pytest.fixture
async def emulator() -> AsyncIterator[httpx.AsyncClient]:
    models = default_models() | {"checkpoints": (*default_models()["checkpoints"], ONLY_HERE)}
    running = await start_emulator(
        EmulatorConfig(port=0, step_time=0.001, models=models, load_scale=0.01)
    )
    async with httpx.AsyncClient(base_url=running.url, timeout=10) as client:
        yield client
    await running.stop()


def _solid(**changes: Any) -> JsonDict:
    graph = solid_image(f"diff-{uuid.uuid4().hex[:6]}")
    for node_id, inputs in changes.items():
        graph[node_id]["inputs"] |= inputs
    return graph


def _txt2img(**inputs: Any) -> JsonDict:
    graph = text_to_image(steps=2, width=64, height=64, prefix=f"diff-{uuid.uuid4().hex[:6]}")
    graph["3"]["inputs"] |= {k: v for k, v in inputs.items() if k != "ckpt_name"}
    if "ckpt_name" in inputs:
        graph["4"]["inputs"]["ckpt_name"] = inputs["ckpt_name"]
    return graph


def _with(graph: JsonDict, change: Callable[[JsonDict], None]) -> JsonDict:
    changed = copy.deepcopy(graph)
    change(changed)
    return changed


def _set(node_id: str, key: str, value: Any) -> Callable[[JsonDict], None]:
    def change(graph: JsonDict) -> None:
        if value is None:
            del graph[node_id][key]
        else:
            graph[node_id][key] = value

    return change


def _string_ids() -> JsonDict:
    return {
        "EmptyImage.0": _solid()["1"],
        "ImageBlur.0": {
            "class_type": "ImageBlur",
            "inputs": {"image": ["EmptyImage.0", 0], "blur_radius": 2, "sigma": 1.5},
            "_meta": {"title": "Blur"},
        },
        "SaveImage.0": {
            "class_type": "SaveImage",
            "inputs": {"images": ["ImageBlur.0", 0], "filename_prefix": f"ids-{uuid.uuid4()}"},
        },
    }


def _two_outputs(bad_width: int) -> JsonDict:
    graph = _solid()
    graph["4"] = {"class_type": "EmptyImage", "inputs": {"width": bad_width, "height": 8}}
    graph["5"] = {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "b"}}
    return graph


def _mask_chain(channel: str) -> JsonDict:
    graph = _solid()
    graph["2"] = {"class_type": "ImageToMask", "inputs": {"image": ["1", 0], "channel": channel}}
    graph["4"] = {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}}
    graph["3"]["inputs"]["images"] = ["4", 0]
    return graph


BLUR_NOTHING = {"image": ["1", 0], "blur_radius": 0, "sigma": 1.0}
GRAPHS: dict[str, Callable[[], JsonDict]] = {
    "valid": _solid,
    "valid txt2img": _txt2img,
    "model file this node has": lambda: _txt2img(ckpt_name=ONLY_HERE),
    "model file it lacks": lambda: _txt2img(ckpt_name="elsewhere.safetensors"),
    "sampler not in a long combo": lambda: _txt2img(sampler_name="warp_drive"),
    "steps below min": lambda: _txt2img(steps=0),
    "cfg above max": lambda: _txt2img(cfg=101.5),
    "width too big": lambda: _solid(**{"1": {"width": 100000}}),
    "width not a number": lambda: _solid(**{"1": {"width": "wide"}}),
    "converted and wrapped values": lambda: _solid(
        **{"1": {"width": "32", "height": {"__value__": 16}}}
    ),
    "required input missing": lambda: _with(_solid(), _set("2", "inputs", {})),
    "class_type missing": lambda: _with(_solid(), _set("2", "class_type", None)),
    "unknown class": lambda: _with(_solid(), _set("2", "class_type", "NoSuchNode")),
    "no outputs": lambda: {"1": _solid()["1"]},
    "bad combo (V3)": lambda: _mask_chain("purple"),
    "valid combo (V3)": lambda: _mask_chain("green"),
    "V3 value below min": lambda: _with(blur_chain(2), _set("10", "inputs", BLUR_NOTHING)),
    "return type mismatch": lambda: _with(
        _mask_chain("red"), _set("3", "inputs", {"images": ["2", 0], "filename_prefix": "m"})
    ),
    "link of three": lambda: _solid(**{"2": {"image": ["1", 0, 0]}}),
    "link to a missing node": lambda: _solid(**{"2": {"image": ["42", 0]}}),
    "output links to a missing node": lambda: _solid(**{"3": {"images": ["42", 0]}}),
    "output index out of range": lambda: _solid(**{"2": {"image": ["1", 5]}}),
    "int node id in a link": lambda: _solid(**{"2": {"image": [1, 0]}}),
    "string node ids": _string_ids,
    "one output of two invalid": lambda: _two_outputs(0),
    "both outputs invalid": lambda: _with(_two_outputs(0), _set("2", "inputs", {})),
}


def _without_tracebacks(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_tracebacks(v) for k, v in value.items() if k != "traceback"}
    if isinstance(value, list):
        return [_without_tracebacks(v) for v in value]
    return value


@pytest.mark.parametrize("case", list(GRAPHS))
async def test_the_validator_answers_as_the_emulator_does(
    emulator: httpx.AsyncClient, case: str
) -> None:
    graph = GRAPHS[case]()
    object_info = (await emulator.get("/object_info")).json()
    ours = validate_prompt(copy.deepcopy(graph), object_info)

    answer = await emulator.post("/prompt", json={"prompt": graph})
    body = answer.json()
    assert answer.status_code in (200, 400)
    assert ours.ok is (answer.status_code == 200), (case, ours.body, body)
    assert _without_tracebacks(ours.node_errors) == _without_tracebacks(body["node_errors"])
    if not ours.ok:
        assert _without_tracebacks(ours.error) == _without_tracebacks(body["error"])


async def test_the_table_covers_every_error_kind(emulator: httpx.AsyncClient) -> None:
    """A guard on the table above: it exercises each kind the validator can report."""
    object_info = (await emulator.get("/object_info")).json()
    seen: set[str] = set()
    for make in GRAPHS.values():
        result = validate_prompt(make(), object_info)
        seen |= {result.error["type"]} if result.error else set()
        seen |= {e["type"] for n in result.node_errors.values() for e in n["errors"]}
    assert seen >= {
        "invalid_prompt",
        "prompt_no_outputs",
        "prompt_outputs_failed_validation",
        "required_input_missing",
        "bad_linked_input",
        "return_type_mismatch",
        "invalid_input_type",
        "value_smaller_than_min",
        "value_bigger_than_max",
        "value_not_in_list",
        "exception_during_inner_validation",
        "exception_during_validation",
    }


async def test_partial_targets_are_read_alike(emulator: httpx.AsyncClient) -> None:
    object_info = (await emulator.get("/object_info")).json()
    graph = _two_outputs(0)
    for targets, accepted in ((["3"], True), (["5"], False), (["2"], False)):
        ours = validate_prompt(copy.deepcopy(graph), object_info, partial_targets=targets)
        answer = await emulator.post(
            "/prompt", json={"prompt": graph, "partial_execution_targets": targets}
        )
        assert (ours.ok, answer.status_code == 200) == (accepted, accepted)
        if not accepted:
            assert ours.body == answer.json()


async def test_a_missing_upload_is_left_to_the_node_that_checks_the_file(
    emulator: httpx.AsyncClient,
) -> None:
    """LoadImage checks that its file exists (custom validation); object_info only lists the
    files there now, and a balancer stages inputs just before a node runs the graph."""
    graph = _solid()
    graph["2"] = {"class_type": "LoadImage", "inputs": {"image": "staged-later.png"}}
    graph["3"]["inputs"]["images"] = ["2", 0]
    object_info = (await emulator.get("/object_info")).json()
    assert validate_prompt(copy.deepcopy(graph), object_info).ok
    refused = (await emulator.post("/prompt", json={"prompt": graph})).json()
    assert refused["node_errors"]["2"]["errors"][0]["type"] == "custom_validation_failed"


@pytest.fixture
async def emulator_0_26() -> AsyncIterator[httpx.AsyncClient]:
    config = EmulatorConfig(port=0, step_time=0.001, comfyui_version="0.26.0", load_scale=0.01)
    running = await start_emulator(config)
    async with httpx.AsyncClient(base_url=running.url, timeout=10) as client:
        yield client
    await running.stop()


@pytest.mark.parametrize(
    "node",
    [
        {"inputs": {}},
        {"inputs": {}, "_meta": {"title": "Mine"}},
        {"class_type": "Upscaler", "inputs": {}},
        {"class_type": "Upscaler", "inputs": {}, "_meta": {"title": "Make it big"}},
    ],
)
async def test_a_missing_class_is_worded_as_the_2026_comfyui_does(
    emulator_0_26: httpx.AsyncClient, node: JsonDict
) -> None:
    graph = _solid() | {"9": node}
    object_info = (await emulator_0_26.get("/object_info")).json()
    ours = validate_prompt(copy.deepcopy(graph), object_info, dialect=Dialect.CURRENT)
    answer = await emulator_0_26.post("/prompt", json={"prompt": graph})
    assert (answer.status_code, ours.ok) == (400, False)
    assert ours.body == answer.json()
    assert answer.json()["error"]["type"] == "missing_node_type"
