"""The object_info validator as a pure function: recorded ComfyUI refusals, then each rule.

The object_info here is what a real ComfyUI 0.8.0 recorded for EmptyImage, SaveImage and
ImageBlur (captures 02-04), plus classes written out in the same wire forms (V1 and V3) for
what the captures lack. ``test_validation_against_emulator.py`` compares with a live
emulator's answers over HTTP.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from comfy_shared.comfyui.validation import (
    Dialect,
    dialect_for,
    types_compatible,
    validate_prompt,
)
from comfy_testkit.captures import load_capture

JsonDict = dict[str, Any]


def _recorded(name: str) -> JsonDict:
    body: JsonDict = load_capture(name)["response"]["body"]
    return body


def _node(
    name: str,
    required: JsonDict,
    output: list[Any],
    *,
    optional: JsonDict | None = None,
    output_node: bool = False,
) -> JsonDict:
    section = {"required": required} | ({"optional": optional} if optional else {})
    return {name: {"input": section, "output": output, "name": name, "output_node": output_node}}


CHANNELS = ["red", "green", "blue", "alpha"]
OBJECT_INFO: JsonDict = {
    **_recorded("02-get-object-info-SaveImage"),
    **_recorded("03-get-object-info-EmptyImage"),
    **_recorded("04-get-object-info-ImageBlur"),
    **_node("ImageInvert", {"image": ["IMAGE"]}, ["IMAGE"]),
    **_node(
        "ImageToMask",
        {
            "image": ["IMAGE", {}],
            "channel": ["COMBO", {"multiselect": False, "options": CHANNELS}],
        },
        ["MASK"],
    ),
    **_node("MaskToImage", {"mask": ["MASK", {}]}, ["IMAGE"]),
    **_node(
        "CheckpointLoaderSimple",
        {"ckpt_name": [[f"model-{i:02}.safetensors" for i in range(25)]]},
        ["MODEL", "CLIP", "VAE"],
    ),
    **_node("LoadImage", {"image": [["a.png"], {"image_upload": True}]}, ["IMAGE", "MASK"]),
    **_node("AnyPassthrough", {"value": ["*"]}, ["*"]),
    **_node("ImageOrMask", {"pixels": ["IMAGE,MASK"]}, ["IMAGE"]),
    **_node("Seeded", {"seed": ["INT", {"min": 0, "max": 10, "forceInput": True}]}, ["INT"]),
    **_node(
        "Tags",
        {
            "tags": ["COMBO", {"multiselect": True, "options": ["a", "b", "c"]}],
            "voice": ["COMBO", {"options": [], "remote_combo": {"route": "/voices"}}],
        },
        ["STRING"],
        optional={"extra": ["FLOAT", {"min": 0.0, "max": 1.0}]},
    ),
    **_node("Batch", {"images": ["COMFY_AUTOGROW_V3", {"template": {}}]}, ["IMAGE"]),
    **_node("Switch", {"on_true": ["COMFY_MATCHTYPE_V3", {}]}, ["COMFY_MATCHTYPE_V3"]),
    **_node("PreviewAny", {"source": ["*", {}]}, [], output_node=True),
}


def graph(*, width: Any = 64, channel: str = "red", prefix: str = "t") -> JsonDict:
    """EmptyImage -> ImageToMask -> MaskToImage -> SaveImage."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": width, "height": 64, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "ImageToMask", "inputs": {"image": ["1", 0], "channel": channel}},
        "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": prefix}},
    }


def check(prompt: JsonDict, **kwargs: Any) -> Any:
    return validate_prompt(prompt, OBJECT_INFO, **kwargs)


def only_error(prompt: JsonDict, node_id: str) -> JsonDict:
    result = check(prompt)
    errors: list[JsonDict] = result.node_errors[node_id]["errors"]
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize(
    "capture",
    [
        "16-post-prompt-400-missing-input",
        "17-post-prompt-400-unknown-node",
        "18-post-prompt-400-value-too-big",
        "19-post-prompt-400-bad-combo",
        "20-post-prompt-400-wrong-type",
        "22-post-prompt-400-no-outputs",
    ],
)
def test_recorded_refusals_are_reproduced_exactly(capture: str) -> None:
    recorded = load_capture(capture)
    result = check(recorded["request"]["body"]["prompt"])
    assert not result.ok
    assert json.loads(json.dumps(result.body)) == recorded["response"]["body"]


def test_a_link_to_a_missing_node_is_blamed_on_the_linking_node_as_recorded() -> None:
    recorded = load_capture("21-post-prompt-400-link-to-missing-node")
    body = check(recorded["request"]["body"]["prompt"]).body
    expected = copy.deepcopy(recorded["response"]["body"])
    expected["node_errors"]["2"]["errors"][0]["extra_info"]["traceback"] = []  # ComfyUI's frames
    assert json.loads(json.dumps(body)) == expected


def test_a_valid_graph_runs_its_outputs_and_is_left_unchanged() -> None:
    prompt = graph(width="32") | {"5": {"class_type": "PreviewAny", "inputs": {"source": 3}}}
    prompt["1"]["inputs"]["height"] = {"__value__": 16}
    before = copy.deepcopy(prompt)
    result = check(prompt)
    assert (result.ok, result.error, result.outputs, result.node_errors) == (
        True,
        None,
        ["4", "5"],
        {},
    )
    assert prompt == before  # "32" converts for the check only; the node converts it again


@pytest.mark.parametrize(
    ("dialect", "node", "expected"),
    [
        (
            Dialect.V0_8,
            {"inputs": {}, "_meta": {"title": "Mine"}},
            {
                "type": "invalid_prompt",
                "message": "Cannot execute because a node is missing the class_type property.",
                "details": "Node ID '#x.0'",
                "extra_info": {},
            },
        ),
        (
            Dialect.CURRENT,
            {"inputs": {}, "_meta": {"title": "Mine"}},
            {
                "type": "missing_node_type",
                "message": "Node 'Mine' has no class_type. The workflow may be corrupted or a "
                "custom node is missing.",
                "details": "Node ID '#x.0'",
                "extra_info": {"node_id": "x.0", "class_type": None, "node_title": "Mine"},
            },
        ),
        (
            Dialect.CURRENT,
            {"inputs": {}},
            {
                "type": "missing_node_type",
                "message": "Node 'ID #x.0' has no class_type. The workflow may be corrupted "
                "or a custom node is missing.",
                "details": "Node ID '#x.0'",
                "extra_info": {"node_id": "x.0", "class_type": None, "node_title": None},
            },
        ),
        (
            Dialect.CURRENT,
            {"class_type": "Nope", "inputs": {}},
            {
                "type": "missing_node_type",
                "message": "Node 'Nope' not found. The custom node may not be installed.",
                "details": "Node ID '#x.0'",
                "extra_info": {"node_id": "x.0", "class_type": "Nope", "node_title": "Nope"},
            },
        ),
        (
            Dialect.CURRENT,
            {"class_type": "Nope", "inputs": {}, "_meta": {"title": "Upscaler"}},
            {
                "type": "missing_node_type",
                "message": "Node 'Upscaler' not found. The custom node may not be installed.",
                "details": "Node ID '#x.0'",
                "extra_info": {"node_id": "x.0", "class_type": "Nope", "node_title": "Upscaler"},
            },
        ),
    ],
)
def test_a_missing_or_unknown_class_refuses_the_graph_in_each_dialect(
    dialect: Dialect, node: JsonDict, expected: JsonDict
) -> None:
    result = check(graph() | {"x.0": node}, dialect=dialect)
    assert (result.ok, result.error, result.node_errors) == (False, expected, {})


def test_partial_targets_choose_the_outputs() -> None:
    prompt = graph() | {"5": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    assert check(prompt, partial_targets=["5"]).outputs == ["5"]
    refused = check(prompt, partial_targets=["3"])
    assert refused.error["type"] == "prompt_no_outputs"


def test_a_partly_valid_graph_is_accepted_and_reports_the_failed_branch() -> None:
    prompt = graph() | {
        "5": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 8, "batch_size": 1}},
        "6": {"class_type": "ImageInvert", "inputs": {"image": ["5", 0]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "b"}},
    }
    result = check(prompt)
    assert (result.ok, result.outputs, list(result.node_errors)) == (True, ["4"], ["5"])
    types = [e["type"] for e in result.node_errors["5"]["errors"]]
    assert types == ["value_smaller_than_min", "required_input_missing"]
    assert result.node_errors["5"]["dependent_outputs"] == ["7"]
    assert result.node_errors["5"]["class_type"] == "EmptyImage"


def test_errors_of_a_shared_node_list_every_output_it_blocks_and_the_outputs_own_ones() -> None:
    prompt = graph(width=0) | {
        "5": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": 1}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
    }
    result = check(prompt)
    assert not result.ok
    assert result.node_errors["1"]["dependent_outputs"] == ["4", "5", "6"]
    assert list(result.node_errors) == ["1", "6"]  # "2", "3": only upstream failures
    assert result.error["details"] == "Required input is missing: filename_prefix"


@pytest.mark.parametrize(
    ("inputs", "kind", "message", "details"),
    [
        ({"width": -3}, "value_smaller_than_min", "Value -3 smaller than min of 1", "width"),
        (
            {"width": "17000"},
            "value_bigger_than_max",
            "Value 17000 bigger than max of 16384",
            "width",
        ),
        (
            {"width": {"a": 1}},
            "invalid_input_type",
            "Failed to convert an input value to a INT value",
            "width, {'a': 1}, int() argument must be a string, a bytes-like object or a real "
            "number, not 'dict'",
        ),
        ({"width": [1, 2, 3]}, "bad_linked_input", None, "width"),
    ],
)
def test_widget_and_link_errors_carry_comfyui_s_messages(
    inputs: JsonDict, kind: str, message: str | None, details: str
) -> None:
    prompt = graph()
    prompt["1"]["inputs"] |= inputs
    error = only_error(prompt, "1")
    assert (error["type"], error["details"]) == (kind, details)
    assert message is None or error["message"] == message
    assert (
        error["extra_info"]["input_config"]
        == OBJECT_INFO["EmptyImage"]["input"]["required"]["width"]
    )


def test_a_wrong_link_type_is_a_return_type_mismatch() -> None:
    prompt = graph()
    prompt["4"]["inputs"]["images"] = ["2", 0]  # a MASK into IMAGE
    assert only_error(prompt, "4") == {
        "type": "return_type_mismatch",
        "message": "Return type mismatch between linked nodes",
        "details": "images, received_type(MASK) mismatch input_type(IMAGE)",
        "extra_info": {
            "input_name": "images",
            "input_config": ["IMAGE", {"tooltip": "The images to save."}],
            "received_type": "MASK",
            "linked_node": ["2", 0],
        },
    }


@pytest.mark.parametrize(
    ("received", "expected", "compatible"),
    [
        ("IMAGE", "IMAGE", True),
        ("IMAGE", "MASK", False),
        ("*", "MASK", True),
        ("LATENT", "*", True),
        ("MASK", "IMAGE,MASK", True),
        ("IMAGE, LATENT", "LATENT,MASK", True),
        ("IMAGE,LATENT", "MASK", False),
        ("IMAGE,*", "MASK", True),
        ("COMFY_MATCHTYPE_V3", "MASK", True),
        (["a", "b"], "COMBO", True),
        (["a", "b"], "STRING", False),
    ],
)
def test_types_are_compatible_as_comfyui_decides(
    received: Any, expected: Any, compatible: bool
) -> None:
    assert types_compatible(received, expected) is compatible


def test_any_comma_and_match_types_link_through() -> None:
    prompt = graph() | {
        "5": {"class_type": "AnyPassthrough", "inputs": {"value": ["2", 0]}},
        "6": {"class_type": "ImageOrMask", "inputs": {"pixels": ["5", 0]}},
        "7": {"class_type": "Switch", "inputs": {"on_true": ["6", 0]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "m"}},
    }
    assert check(prompt).outputs == ["4", "8"]


def test_a_force_input_widget_given_a_value_is_still_checked() -> None:
    prompt = {
        "s": {"class_type": "Seeded", "inputs": {"seed": 11}},
        "p": {"class_type": "PreviewAny", "inputs": {"source": ["s", 0]}},
    }
    assert only_error(prompt, "s")["type"] == "value_bigger_than_max"


def test_hidden_and_undeclared_inputs_and_meta_are_ignored() -> None:
    prompt = graph()
    prompt["4"]["inputs"] |= {"prompt": "not mine to give", "whatever": ["nowhere", 9]}
    prompt["4"]["_meta"] = {"title": "Save"}
    assert check(prompt).ok


def test_string_node_ids_link_like_any_other() -> None:
    prompt = {
        "EmptyImage.0": graph()["1"],
        "Save.0": {
            "class_type": "SaveImage",
            "inputs": {"images": ["EmptyImage.0", 0], "filename_prefix": "ids"},
        },
    }
    assert check(prompt).outputs == ["Save.0"]
    prompt["Save.0"]["inputs"]["images"] = ["EmptyImage.1", 0]
    error = check(prompt).node_errors["Save.0"]["errors"][0]
    assert (error["type"], error["details"]) == ("exception_during_validation", "'EmptyImage.1'")


@pytest.mark.parametrize(
    ("dialect", "shown"), [(Dialect.V0_8, "'model-99'"), (Dialect.CURRENT, "'model-99'")]
)
def test_a_long_combo_is_summarised_without_its_config(dialect: Dialect, shown: str) -> None:
    prompt = {
        "c": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "model-99"}},
        "p": {"class_type": "PreviewAny", "inputs": {"source": ["c", 0]}},
    }
    error = validate_prompt(prompt, OBJECT_INFO, dialect=dialect).node_errors["c"]["errors"][0]
    assert error["details"] == f"ckpt_name: {shown} not in (list of length 25)"
    assert error["extra_info"] == {
        "input_name": "ckpt_name",
        "input_config": None,
        "received_value": "model-99",
    }


def test_dialects_quote_a_combo_value_each_their_way() -> None:
    prompt = graph(channel="red")
    prompt["2"]["inputs"]["channel"] = 5
    shown = {
        dialect: check(prompt, dialect=dialect).node_errors["2"]["errors"][0]["details"]
        for dialect in Dialect
    }
    listing = "['red', 'green', 'blue', 'alpha']"
    assert shown == {
        Dialect.V0_8: f"channel: '5' not in {listing}",
        Dialect.CURRENT: f"channel: 5 not in {listing}",
    }


def test_multiselect_combos_check_each_value_and_remote_combos_are_not_checked() -> None:
    def tags(value: Any) -> JsonDict:
        return {
            "t": {"class_type": "Tags", "inputs": {"tags": value, "voice": "anyone"}},
            "p": {"class_type": "PreviewAny", "inputs": {"source": ["t", 0]}},
        }

    assert check(tags({"__value__": ["a", "c"]})).ok
    error = only_error(tags({"__value__": ["a", "x", "y"]}), "t")
    assert (error["type"], error["details"]) == (
        "value_not_in_list",
        "tags: 'x', 'y' not in ['a', 'b', 'c']",
    )


def test_upload_combos_are_left_to_the_node_which_checks_the_file() -> None:
    prompt = {
        "l": {"class_type": "LoadImage", "inputs": {"image": "staged/7f3a.png"}},
        "s": {"class_type": "SaveImage", "inputs": {"images": ["l", 0], "filename_prefix": "u"}},
    }
    assert check(prompt).ok


def test_an_optional_input_is_checked_when_given() -> None:
    prompt: JsonDict = {
        "t": {"class_type": "Tags", "inputs": {"tags": {"__value__": []}, "voice": "v"}},
        "p": {"class_type": "PreviewAny", "inputs": {"source": ["t", 0]}},
    }
    assert check(prompt).ok
    prompt["t"]["inputs"]["extra"] = 2.5
    assert only_error(prompt, "t")["type"] == "value_bigger_than_max"


def test_dynamic_inputs_are_left_to_the_node() -> None:
    prompt = {
        "b": {"class_type": "Batch", "inputs": {"images.image0": ["1", 0]}},
        "1": graph()["1"],
        "p": {"class_type": "PreviewAny", "inputs": {"source": ["b", 0]}},
    }
    assert check(prompt).ok


@pytest.mark.parametrize(
    ("link", "exception_type", "message"),
    [
        (["1", 3], "IndexError", "tuple index out of range"),
        (["1", 0.0], "TypeError", "tuple indices must be integers or slices, not float"),
        ([1, 0], "KeyError", "1"),
    ],
)
def test_a_bad_link_is_an_exception_blamed_on_the_node_it_comes_from(
    link: list[Any], exception_type: str, message: str
) -> None:
    prompt = graph()
    prompt["2"]["inputs"]["image"] = link
    error = only_error(prompt, "2")
    assert error == {
        "type": "exception_during_inner_validation",
        "message": "Exception when validating inner node",
        "details": message,
        "extra_info": {
            "input_name": "mask",
            "input_config": ["MASK", {}],
            "exception_message": message,
            "exception_type": exception_type,
            "traceback": [],
            "linked_node": ["2", 0],
        },
    }
    assert check(prompt).node_errors["2"]["class_type"] == "ImageToMask"


def test_a_cycle_is_a_dependency_cycle_on_each_of_its_nodes() -> None:
    prompt = graph()
    prompt["2"]["inputs"]["image"] = ["5", 0]
    prompt["5"] = {"class_type": "ImageBlur", "inputs": {"image": ["3", 0], "blur_radius": 1}}
    result = check(prompt)
    # Reached from the output: 4 -> 3 -> 2 -> 5 -> 3 again.
    path = "3 (MaskToImage) -> 2 (ImageToMask) -> 5 (ImageBlur) -> 3 (MaskToImage)"
    assert sorted(result.node_errors) == ["2", "3", "5"]
    for node_id in ("2", "3", "5"):
        errors = result.node_errors[node_id]["errors"]
        assert (errors[0]["type"], errors[0]["details"]) == ("dependency_cycle", path)
        assert errors[0]["extra_info"] == {"node_id": node_id, "cycle_nodes": ["3", "2", "5"]}
    assert [e["type"] for e in result.node_errors["5"]["errors"]] == [
        "dependency_cycle",
        "required_input_missing",  # its own error (no sigma) joins the cycle's
    ]


def test_a_thousand_node_chain_is_validated_without_recursion() -> None:
    prompt: JsonDict = {"0": graph()["1"]}
    for index in range(1, 1000):
        prompt[str(index)] = {"class_type": "ImageInvert", "inputs": {"image": [str(index - 1), 0]}}
    prompt["save"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["999", 0], "filename_prefix": "chain"},
    }
    assert check(prompt).ok
    prompt["0"]["inputs"]["width"] = 0
    result = check(prompt)
    assert (result.ok, list(result.node_errors)) == (False, ["0"])


@pytest.mark.parametrize(
    ("versions", "dialect"),
    [
        ([], Dialect.V0_8),
        (["0.8.0"], Dialect.V0_8),
        (["0.12.3"], Dialect.V0_8),
        (["0.13.0", "0.26.0"], Dialect.CURRENT),
        (["v0.38.1", None], Dialect.CURRENT),  # a node whose ComfyUI is down says nothing
        (["0.26.0", "0.8.0"], Dialect.V0_8),  # a mixed fleet: the older wording
        (["0.26.0", "nightly"], Dialect.V0_8),
        ([None], Dialect.V0_8),
    ],
)
def test_a_fleet_speaks_the_oldest_wording_of_its_nodes(
    versions: list[str | None], dialect: Dialect
) -> None:
    assert dialect_for(versions) is dialect
