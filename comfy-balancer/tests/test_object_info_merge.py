"""Merging the nodes' object_info into the fleet's: union and intersection, as tables."""

from typing import Any

import pytest

from comfy_balancer.object_info_merge import MergeMode, combo_options, merge_object_info

JsonDict = dict[str, Any]


def loader(*files: str, v3: bool = False, extra: JsonDict | None = None) -> JsonDict:
    extra = extra or {}
    spec = ["COMBO", {**extra, "options": list(files)}] if v3 else [list(files), extra]
    return {
        "input": {"required": {"ckpt_name": spec, "strength": ["FLOAT", {"min": 0.0}]}},
        "output": ["MODEL"],
        "output_node": False,
    }


SAVE = {"input": {"required": {"images": ["IMAGE"]}}, "output": [], "output_node": True}
NODE_A = {"Loader": loader("a.safetensors", "both.safetensors"), "SaveImage": SAVE}
AB = ["a.safetensors", "both.safetensors", "b.safetensors"]
NODE_B = {
    "Loader": loader("both.safetensors", "b.safetensors"),
    "SaveImage": SAVE,
    "OnlyOnB": {"input": {"required": {}}, "output": ["IMAGE"]},
}


def files_of(info: JsonDict) -> list[Any]:
    options = combo_options(info["Loader"]["input"]["required"]["ckpt_name"])
    assert options is not None
    return options


@pytest.mark.parametrize(
    ("mode", "classes", "files"),
    [
        ("union", ["Loader", "SaveImage", "OnlyOnB"], AB),
        ("intersection", ["Loader", "SaveImage"], ["both.safetensors"]),
    ],
)
def test_classes_and_combo_options_merge_by_mode(
    mode: MergeMode, classes: list[str], files: list[str]
) -> None:
    merged = merge_object_info([NODE_A, NODE_B], mode)
    assert (list(merged), files_of(merged)) == (classes, files)
    # Everything but the options is the first node's, and the nodes' own are untouched.
    assert merged["Loader"]["input"]["required"]["strength"] == ["FLOAT", {"min": 0.0}]
    assert files_of(NODE_A) == ["a.safetensors", "both.safetensors"]


def test_v3_combos_merge_and_keep_their_other_keys() -> None:
    a = {"Loader": loader("x", v3=True, extra={"multiselect": False})}
    b = {"Loader": loader("y", "x", v3=True, extra={"multiselect": False})}
    merged = merge_object_info([a, b], "union")
    assert merged["Loader"]["input"]["required"]["ckpt_name"] == [
        "COMBO",
        {"multiselect": False, "options": ["x", "y"]},
    ]


def test_a_class_that_is_the_same_everywhere_is_shared_not_copied() -> None:
    merged = merge_object_info([NODE_A, NODE_B], "union")
    assert merged["SaveImage"] is SAVE
    assert merge_object_info([NODE_A], "intersection")["Loader"] is NODE_A["Loader"]


def test_an_input_that_is_no_combo_on_another_node_keeps_the_first_node_s_options() -> None:
    other = {"Loader": {"input": {"required": {"ckpt_name": ["STRING", {}]}}}}
    merged = merge_object_info([NODE_A, other], "intersection")
    assert files_of(merged) == ["a.safetensors", "both.safetensors"]


def test_no_nodes_no_classes() -> None:
    assert merge_object_info([], "union") == {}


@pytest.mark.parametrize(
    ("spec", "options"),
    [
        ([["a", "b"]], ["a", "b"]),
        ([["a"], {"image_upload": True}], ["a"]),
        (["COMBO", {"options": ["a"]}], ["a"]),
        (["COMBO", {}], None),
        (["INT", {"min": 0}], None),
        (["IMAGE"], None),
        ("IMAGE", None),
        ([], None),
    ],
)
def test_combo_options_read_both_wire_forms(spec: Any, options: list[str] | None) -> None:
    assert combo_options(spec) == options
