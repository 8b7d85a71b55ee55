"""Text: PrimitiveString (a V3 node of `comfy_extras/nodes_primitive.py`) and PreviewAny (a
classic node of `comfy_extras/nodes_preview_any.py`), declared as ComfyUI 0.8.0 declares them.

PreviewAny ("Preview as Text") shows any value as text. It returns nothing and reports the
text in its UI dict, `{"text": [text]}`, which history and the `executed` message carry as
they carry files. The text is made as ComfyUI makes it: a string as it is, a number or boolean
through `str`, anything else through `json.dumps(value, indent=4)` (ASCII-escaped, as
`json.dumps` is by default) or, when that fails, `str` (an IMAGE shows its tensor-like text).
Later ComfyUI versions also return the text as a STRING output; 0.8.0 does not.
"""

from __future__ import annotations

import json
from typing import Any

from comfy_emulator.nodes.base import ExecContext, Inputs, InputTypes, Node, NodeEnv, NodeOutput

UNSERIALIZABLE = "source exists, but could not be serialized."


class PrimitiveString(Node):
    class_type = "PrimitiveString"
    display_name = "String"
    category = "utils/primitive"
    python_module = "comfy_extras.nodes_primitive"
    schema_v3 = True
    return_types = ("STRING",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {"required": {"value": ("STRING", {"multiline": False})}}

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        return NodeOutput((inputs["value"],))


class PreviewAny(Node):
    class_type = "PreviewAny"
    display_name = "Preview as Text"
    category = "utils"
    python_module = "comfy_extras.nodes_preview_any"
    output_node = True

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {"required": {"source": ("*", {})}}

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        return NodeOutput((), {"text": [preview_text(inputs.get("source"))]})


def preview_text(source: Any) -> str:
    """The text PreviewAny shows for ``source``."""
    if source is None:
        return "None"
    if isinstance(source, str):
        return source
    if isinstance(source, int | float | bool):
        return str(source)
    try:
        return json.dumps(source, indent=4)
    except Exception:  # not JSON (an IMAGE, a model): ComfyUI falls back to str
        return _as_str(source)


def _as_str(source: Any) -> str:
    try:
        return str(source)
    except Exception:  # a value whose __str__ raises: ComfyUI says so instead of failing
        return UNSERIALIZABLE


TEXT_NODES: tuple[type[Node], ...] = (PrimitiveString, PreviewAny)
