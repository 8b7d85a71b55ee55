"""The emulated node catalogue (NODE_CLASS_MAPPINGS).

`BUILTIN_NODES` lists every class the emulator ships; `build_registry(extra)` adds more (a later
class with the same `class_type` replaces an earlier one). See `nodes.base` for how to write one.
"""

from __future__ import annotations

from collections.abc import Iterable

from comfy_emulator.nodes.audio import AUDIO_NODES
from comfy_emulator.nodes.base import Node, NodeRegistry
from comfy_emulator.nodes.image import IMAGE_NODES
from comfy_emulator.nodes.io import IO_NODES
from comfy_emulator.nodes.mask import MASK_NODES
from comfy_emulator.nodes.models import MODEL_NODES
from comfy_emulator.nodes.split_models import SPLIT_MODEL_NODES
from comfy_emulator.nodes.storydiffusion import STORYDIFFUSION_NODES
from comfy_emulator.nodes.text import TEXT_NODES
from comfy_emulator.nodes.video import VIDEO_NODES

BUILTIN_NODES: tuple[type[Node], ...] = (
    *MODEL_NODES,
    *SPLIT_MODEL_NODES,
    *IO_NODES,
    *IMAGE_NODES,
    *MASK_NODES,
    *VIDEO_NODES,
    *AUDIO_NODES,
    *TEXT_NODES,
    *STORYDIFFUSION_NODES,  # custom-node stand-ins (ComfyUI_StoryDiffusion)
)


def build_registry(extra: Iterable[type[Node]] = ()) -> NodeRegistry:
    return NodeRegistry((*BUILTIN_NODES, *extra))


__all__ = ["BUILTIN_NODES", "Node", "NodeRegistry", "build_registry"]
