"""Text nodes: PreviewAny reports its source as text in history and the `executed` message,
rendered as ComfyUI renders it; PrimitiveString feeds it. Over real HTTP and WS."""

from __future__ import annotations

from typing import Any

from comfy_emulator.nodes.text import UNSERIALIZABLE, preview_text
from comfy_emulator.testing import EmulatorClient
from comfy_emulator.workflows import solid_image_with_text


async def run(client: EmulatorClient, graph: dict[str, Any]) -> dict[str, Any]:
    async with client.websocket("c") as ws:
        prompt_id = (await client.post_prompt(graph, client_id="c"))["prompt_id"]
        events = await ws.wait_done(prompt_id)
    history = (await client.history(prompt_id))[prompt_id]
    assert history["status"]["status_str"] == "success", history["status"]
    executed = [m["data"] for m in events if m["type"] == "executed"]
    return {"prompt_id": prompt_id, "executed": executed, "outputs": history["outputs"]}


async def test_preview_any_and_primitive_string_are_declared_as_comfyui_declares_them(
    client: EmulatorClient,
) -> None:
    preview = await client.get_json("/object_info/PreviewAny")
    primitive = (await client.get_json("/object_info/PrimitiveString"))["PrimitiveString"]

    assert preview == {
        "PreviewAny": {
            "input": {"required": {"source": ["*", {}]}},
            "input_order": {"required": ["source"]},
            "output": [],
            "output_is_list": [],
            "output_name": [],
            "name": "PreviewAny",
            "display_name": "Preview as Text",
            "description": "",
            "python_module": "comfy_extras.nodes_preview_any",
            "category": "utils",
            "output_node": True,
        }
    }
    assert primitive["input"] == {"required": {"value": ["STRING", {"multiline": False}]}}
    assert (primitive["output"], primitive["output_name"]) == (["STRING"], ["STRING"])
    assert (primitive["display_name"], primitive["category"]) == ("String", "utils/primitive")
    assert (primitive["python_module"], primitive["output_node"]) == (
        "comfy_extras.nodes_primitive",
        False,
    )


async def test_the_text_is_in_history_and_in_the_executed_message_like_a_file(
    client: EmulatorClient,
) -> None:
    text = "a lighthouse, ünïcode ✓\nsecond line"

    result = await run(client, solid_image_with_text("t/solid", text))

    image = {"filename": "solid_00001_.png", "subfolder": "t", "type": "output"}
    assert result["outputs"] == {"5": {"text": [text]}, "3": {"images": [image]}}
    assert list(result["outputs"]) == ["5", "3"]  # the order the nodes ran in
    prompt_id = result["prompt_id"]
    assert result["executed"] == [
        {"node": "5", "display_node": "5", "output": {"text": [text]}, "prompt_id": prompt_id},
        {"node": "3", "display_node": "3", "output": {"images": [image]}, "prompt_id": prompt_id},
    ]


async def test_each_value_is_rendered_as_comfyui_renders_it(client: EmulatorClient) -> None:
    sources: dict[str, Any] = {
        "str": "as it is",
        "int": 7,
        "float": 2.5,
        "bool": True,
        "list": {"__value__": ["a", "é", 3]},  # a literal list travels wrapped
        "dict": {"k": [1.5, None]},
        "linked INT": ["11", 0],  # GetImageSize's width
        "linked IMAGE": ["10", 0],  # not JSON: str() of the tensor
    }
    graph: dict[str, Any] = {
        "10": {
            "class_type": "EmptyImage",
            "inputs": {"width": 24, "height": 16, "batch_size": 1, "color": 0xFF0000},
        },
        "11": {"class_type": "GetImageSize", "inputs": {"image": ["10", 0]}},
    }
    for number, source in enumerate(sources.values()):
        graph[str(number)] = {"class_type": "PreviewAny", "inputs": {"source": source}}

    outputs = (await run(client, graph))["outputs"]

    shown = {name: outputs[str(number)] for number, name in enumerate(sources)}
    assert shown == {
        "str": {"text": ["as it is"]},
        "int": {"text": ["7"]},
        "float": {"text": ["2.5"]},
        "bool": {"text": ["True"]},
        "list": {"text": ['[\n    "a",\n    "\\u00e9",\n    3\n]']},
        "dict": {"text": ['{\n    "k": [\n        1.5,\n        null\n    ]\n}']},
        "linked INT": {"text": ["24"]},
        "linked IMAGE": {"text": [_tensor_text("[1.0000, 0.0000, 0.0000]")]},
    }


def _tensor_text(pixel: str) -> str:
    return f"tensor([[[{pixel},\n          ...,\n          {pixel}]]])"


def test_a_value_that_cannot_even_be_printed_is_said_so() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert preview_text(None) == "None"
    assert preview_text(Unprintable()) == UNSERIALIZABLE
