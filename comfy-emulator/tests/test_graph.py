"""ExecutionList: topological order with ComfyUI's output-first preference."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import Any

import pytest

from comfy_emulator.graph import DependencyCycleError, ExecutionList


def node(class_type: str, **links: str) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": {k: [v, 0] for k, v in links.items()}}


def run_order(
    prompt: dict[str, Any], outputs: list[str], cached: AbstractSet[str] = frozenset()
) -> list[str]:
    order = ExecutionList(prompt, lambda n: prompt[n]["class_type"] == "Out", lambda n: n in cached)
    for output in outputs:
        order.add_node(output)
    seen = []
    while not order.is_empty():
        node_id = order.stage()
        seen.append(node_id)
        order.complete(node_id)
    return seen


def test_dependencies_run_first_and_ready_outputs_go_early() -> None:
    prompt = {
        "1": node("Src"),
        "2": node("Mid", a="1"),
        "3": node("Out", a="2"),
        "4": node("Out", a="1"),
    }
    order = run_order(prompt, ["3", "4"])
    assert order.index("1") < order.index("2") < order.index("3")
    assert order.index("4") == order.index("1") + 1  # the output runs as soon as it is ready


def test_cached_ancestors_are_skipped_but_outputs_always_run() -> None:
    prompt = {"1": node("Src"), "2": node("Mid", a="1"), "3": node("Out", a="2")}
    assert run_order(prompt, ["3"], cached={"1", "2", "3"}) == ["3"]
    assert run_order(prompt, ["3"], cached={"1"}) == ["2", "3"]


def test_a_cycle_is_reported() -> None:
    prompt = {"1": node("Mid", a="2"), "2": node("Mid", a="1"), "3": node("Out", a="1")}
    order = ExecutionList(prompt, lambda n: n == "3", lambda n: False)
    order.add_node("3")
    with pytest.raises(DependencyCycleError):
        order.stage()
