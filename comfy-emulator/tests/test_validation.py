"""validate_prompt, checked as a pure function and against recorded 400 answers."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from comfy_emulator.config import default_models
from comfy_emulator.files import make_folders
from comfy_emulator.nodes import build_registry
from comfy_emulator.nodes.base import NodeEnv
from comfy_emulator.validation import ValidationResult, validate_prompt
from comfy_emulator.workflows import solid_image, text_to_image
from comfy_testkit.captures import load_capture


@pytest.fixture
def env(tmp_path: Path) -> NodeEnv:
    folders = make_folders(str(tmp_path / "in"), str(tmp_path / "out"), str(tmp_path / "tmp"))
    folders.ensure()
    return NodeEnv(folders, default_models())


def check(env: NodeEnv, prompt: dict[str, Any], targets: Any = None) -> ValidationResult:
    return validate_prompt(build_registry(), env, prompt, targets)


@pytest.mark.parametrize(
    "capture",
    [
        "16-post-prompt-400-missing-input",
        "17-post-prompt-400-unknown-node",
        "18-post-prompt-400-value-too-big",
        "19-post-prompt-400-bad-combo",
        "20-post-prompt-400-wrong-type",
        "22-post-prompt-400-no-outputs",
        "52-post-prompt-400-loadimage-missing-file",
    ],
)
def test_rejections_match_the_recorded_bodies_exactly(env: NodeEnv, capture: str) -> None:
    recorded = load_capture(capture)
    result = check(env, recorded["request"]["body"]["prompt"])
    assert not result.ok
    assert {"error": result.error, "node_errors": result.node_errors} == recorded["response"][
        "body"
    ]


def test_link_to_missing_node_is_blamed_on_the_linking_node(env: NodeEnv) -> None:
    recorded = load_capture("21-post-prompt-400-link-to-missing-node")["response"]["body"]
    result = check(
        env, load_capture("21-post-prompt-400-link-to-missing-node")["request"]["body"]["prompt"]
    )
    error = result.node_errors["2"]["errors"][0]
    expected = recorded["node_errors"]["2"]["errors"][0]
    assert list(error["extra_info"]) == list(expected["extra_info"])  # same keys, same order
    assert {k: v for k, v in error["extra_info"].items() if k != "traceback"} == {
        k: v for k, v in expected["extra_info"].items() if k != "traceback"
    }
    assert (error["type"], error["details"]) == (expected["type"], expected["details"])


def test_missing_class_type(env: NodeEnv) -> None:
    result = check(env, {"1": {"inputs": {}}})
    assert result.error == {
        "type": "invalid_prompt",
        "message": "Cannot execute because a node is missing the class_type property.",
        "details": "Node ID '#1'",
        "extra_info": {},
    }


def test_partial_targets_can_leave_no_outputs(env: NodeEnv) -> None:
    result = check(env, solid_image(), targets=["2"])
    assert result.error is not None
    assert result.error["type"] == "prompt_no_outputs"
    assert check(env, solid_image(), targets=["3"]).outputs == ["3"]


def test_widget_values_are_coerced_in_place(env: NodeEnv) -> None:
    prompt = solid_image()
    prompt["1"]["inputs"]["width"] = "32"
    prompt["3"]["inputs"]["filename_prefix"] = 7
    assert check(env, prompt).ok
    assert prompt["1"]["inputs"]["width"] == 32
    assert prompt["3"]["inputs"]["filename_prefix"] == "7"


def test_value_wrapper_is_unwrapped(env: NodeEnv) -> None:
    prompt = solid_image()
    prompt["1"]["inputs"]["height"] = {"__value__": 16}
    assert check(env, prompt).ok
    assert prompt["1"]["inputs"]["height"] == 16


def test_value_smaller_than_min(env: NodeEnv) -> None:
    prompt = solid_image(width=0)
    error = check(env, prompt).node_errors["1"]["errors"][0]
    assert (error["type"], error["message"], error["details"]) == (
        "value_smaller_than_min",
        "Value 0 smaller than min of 1",
        "width",
    )


def test_long_combo_lists_are_summarised(env: NodeEnv) -> None:
    prompt = text_to_image()
    prompt["3"]["inputs"]["sampler_name"] = "warp_drive"
    error = check(env, prompt).node_errors["3"]["errors"][0]
    assert error["details"] == "sampler_name: 'warp_drive' not in (list of length 44)"
    assert error["extra_info"]["input_config"] is None


def test_bad_linked_input(env: NodeEnv) -> None:
    prompt = solid_image()
    prompt["2"]["inputs"]["image"] = ["1", 0, 0]
    error = check(env, prompt).node_errors["2"]["errors"][0]
    assert error["type"] == "bad_linked_input"
    assert error["extra_info"]["received_value"] == ["1", 0, 0]


def test_return_type_mismatch(env: NodeEnv) -> None:
    prompt = solid_image()
    prompt["1"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 8, "height": 8}}
    error = check(env, prompt).node_errors["2"]["errors"][0]
    assert error["type"] == "return_type_mismatch"
    assert error["details"] == "image, received_type(MASK) mismatch input_type(IMAGE)"
    assert error["extra_info"]["linked_node"] == ["1", 0]


def test_int_node_id_in_a_link_is_an_inner_validation_exception(env: NodeEnv) -> None:
    prompt = solid_image()
    prompt["2"]["inputs"]["image"] = [1, 0]
    error = check(env, prompt).node_errors["2"]["errors"][0]
    assert (error["type"], error["details"]) == ("exception_during_inner_validation", "1")
    assert error["extra_info"]["exception_type"] == "KeyError"


def test_errors_on_the_output_itself_fill_details(env: NodeEnv) -> None:
    prompt = solid_image()
    del prompt["3"]["inputs"]["images"]
    result = check(env, prompt)
    assert result.error is not None
    assert result.error["details"] == "Required input is missing: images"


def test_partial_validity_accepts_the_valid_outputs(env: NodeEnv) -> None:
    prompt = solid_image()
    prompt["4"] = {
        "class_type": "EmptyImage",
        "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0},
    }
    prompt["5"] = {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}}
    result = check(env, prompt)
    assert result.ok
    assert result.outputs == ["3"]
    assert result.node_errors["4"]["dependent_outputs"] == ["5"]
    assert result.node_errors["4"]["class_type"] == "EmptyImage"


def test_nodes_failing_only_upstream_are_not_listed(env: NodeEnv) -> None:
    prompt = solid_image(width=0)
    assert list(check(env, prompt).node_errors) == ["1"]


def test_loadimage_accepts_annotated_and_nested_paths(env: NodeEnv) -> None:
    folders = env.folders
    Path(folders.output, "made.png").write_bytes(b"x")
    Path(folders.input, "sub").mkdir()
    Path(folders.input, "sub", "up.png").write_bytes(b"x")
    for name in ("made.png [output]", "sub/up.png"):
        prompt = copy.deepcopy(
            load_capture("50-post-prompt-ok-loadimage")["request"]["body"]["prompt"]
        )
        prompt["1"]["inputs"]["image"] = name
        assert check(env, prompt).ok, name
