"""API-format graphs used across the tests: the emulator's ready-made workflows plus a few
variants. Each takes a ``prefix`` so every task writes fresh files (ComfyUI would otherwise
serve an identical graph from its cache)."""

from __future__ import annotations

from comfy_emulator.workflows import (
    Workflow,
    frontend_default,
    runtime_error,
    solid_image,
    solid_image_with_text,
    solid_mp4,
    solid_webm,
    text_to_image,
)

__all__ = [
    "SDXL_CHECKPOINT",
    "frontend_default",
    "invalid_width",
    "partly_invalid",
    "runtime_error",
    "solid_image",
    "solid_image_with_text",
    "solid_mp4",
    "solid_webm",
    "text_then_runtime_error",
    "txt2img",
]

SDXL_CHECKPOINT = "juggernautXL_v8Rundiffusion.safetensors"


def txt2img(
    prefix: str, *, steps: int = 10, seed: int = 7, checkpoint: str = SDXL_CHECKPOINT
) -> Workflow:
    """ComfyUI's default graph, small; the sampler reports one progress step per step."""
    return text_to_image(
        positive="a lighthouse at dusk",
        seed=seed,
        steps=steps,
        width=64,
        height=64,
        checkpoint=checkpoint,
        prefix=prefix,
    )


def invalid_width(prefix: str) -> Workflow:
    """Fails ComfyUI's validation at node "1": width 0 is below the minimum of 1."""
    return solid_image(prefix, width=0)


def partly_invalid(prefix: str) -> Workflow:
    """Two outputs, "3" valid and "5" not: ComfyUI runs "3" and reports node "4"."""
    graph = solid_image(prefix)
    graph["4"] = {
        "class_type": "EmptyImage",
        "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0},
    }
    graph["5"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["4", 0], "filename_prefix": f"{prefix}-b"},
    }
    return graph


def text_then_runtime_error(prefix: str, text: str) -> Workflow:
    """PrimitiveString ("5") -> PreviewAny ("6") reports ``text``, then node "2" fails
    (``runtime_error``): a failed task whose one output is that text, never stored."""
    graph = runtime_error(prefix)
    graph["5"] = {"class_type": "PrimitiveString", "inputs": {"value": text}}
    graph["6"] = {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}}
    return graph
