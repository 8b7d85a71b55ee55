"""Adding node classes: a custom output node plugged in through EmulatorConfig.extra_nodes."""

from __future__ import annotations

from typing import Any

from comfy_emulator import ExecContext, Node, NodeEnv, NodeOutput, RunningEmulator
from comfy_emulator.nodes.base import Inputs, InputTypes
from comfy_emulator.testing import EmulatorClient


class ShowText(Node):
    class_type = "ShowText|demo"
    display_name = "Show Text"
    category = "demo"
    python_module = "custom_nodes.demo-pack"
    output_node = True
    return_types = ("STRING",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "text": ("STRING", {"multiline": True}),
                "repeat": ("INT", {"default": 1, "min": 1, "max": 3}),
            }
        }

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        await ctx.progress(1, 1)
        text = inputs["text"] * inputs["repeat"]
        return NodeOutput((text,), {"text": [text]})


async def test_a_custom_node_is_listed_validated_and_run(start: Any) -> None:
    running: RunningEmulator = await start(extra_nodes=(ShowText,))
    async with EmulatorClient(running.url) as client:
        info = (await client.get_json("/object_info/ShowText|demo"))["ShowText|demo"]
        assert (info["python_module"], info["output_node"], info["display_name"]) == (
            "custom_nodes.demo-pack",
            True,
            "Show Text",
        )
        status, body = await client.post_json(
            "/prompt",
            {
                "prompt": {
                    "1": {"class_type": "ShowText|demo", "inputs": {"text": "hi", "repeat": 9}}
                }
            },
        )
        assert status == 400
        assert body["node_errors"]["1"]["errors"][0]["type"] == "value_bigger_than_max"
        prompt = {"1": {"class_type": "ShowText|demo", "inputs": {"text": "hi", "repeat": "2"}}}
        prompt_id = (await client.post_prompt(prompt, client_id="c"))["prompt_id"]
        entry = await client.wait_for_history(prompt_id)
        assert entry["outputs"] == {"1": {"text": ["hihi"]}}
