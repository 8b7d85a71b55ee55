"""API-format graphs used across the tests. Each takes a ``prefix`` so every task writes fresh
files (ComfyUI would otherwise serve an identical graph from its cache)."""

from __future__ import annotations

from typing import Any

Graph = dict[str, dict[str, Any]]

SDXL_CHECKPOINT = "juggernautXL_v8Rundiffusion.safetensors"


def solid_image(prefix: str, *, width: int = 64, height: int = 48, color: int = 0x3366FF) -> Graph:
    """EmptyImage -> SaveImage: one PNG, no model, a few milliseconds."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": width, "height": height, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def txt2img(
    prefix: str,
    *,
    steps: int = 10,
    seed: int = 7,
    text: str = "a lighthouse at dusk",
    checkpoint: str = SDXL_CHECKPOINT,
    size: int = 64,
) -> Graph:
    """ComfyUI's standard text-to-image graph; the sampler reports one progress step per step."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": size, "height": size, "batch_size": 1},
        },
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed,
                "steps": steps,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": prefix}},
    }


def runtime_error(prefix: str) -> Graph:
    """Passes validation, then fails at node "2": ImageToMask "alpha" on an RGB image."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "ImageToMask", "inputs": {"image": ["1", 0], "channel": "alpha"}},
        "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": prefix}},
    }


def invalid_width(prefix: str) -> Graph:
    """Fails ComfyUI's validation: width 0 is below the minimum of 1."""
    return solid_image(prefix, width=0)


def partly_invalid(prefix: str) -> Graph:
    """Two outputs, one of them invalid: ComfyUI queues the valid branch and reports the other."""
    graph = solid_image(prefix)
    graph["3"] = {
        "class_type": "EmptyImage",
        "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0},
    }
    graph["4"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["3", 0], "filename_prefix": prefix + "-b"},
    }
    return graph
