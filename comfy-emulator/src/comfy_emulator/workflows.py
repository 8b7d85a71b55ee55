"""Ready-made API-format workflows for tests and demos.

Each function returns a fresh dict, so callers may change it. They run unchanged on a real
ComfyUI too (the model names aside).
"""

from __future__ import annotations

from typing import Any

Workflow = dict[str, Any]


def solid_image(
    prefix: str = "emu/solid", width: int = 64, height: int = 64, color: int = 0x3366FF
) -> Workflow:
    """EmptyImage -> ImageInvert -> SaveImage (three nodes, no model)."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": width, "height": height, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def solid_image_with_text(
    prefix: str = "emu/solid", text: str = "a solid colour", color: int = 0x3366FF
) -> Workflow:
    """`solid_image` ("3" saves a PNG) plus PrimitiveString ("4") -> PreviewAny ("5"), which
    reports `text` as its UI output `{"text": [text]}`. ComfyUI runs the text branch first
    (a node feeding an output node goes before one two steps away), so history lists "5"
    before "3"."""
    return {
        **solid_image(prefix, color=color),
        "4": {"class_type": "PrimitiveString", "inputs": {"value": text}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}},
    }


def solid_mp4(
    prefix: str = "emu/video", frames: int = 3, fps: float = 8.0, color: int = 0x3366FF
) -> Workflow:
    """EmptyImage (`frames` 64x48 frames) -> CreateVideo -> SaveVideo ("3"): an H.264 MP4."""
    save = {"video": ["2", 0], "filename_prefix": prefix, "format": "mp4", "codec": "h264"}
    return {
        **_solid_frames(frames, color),
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": fps}},
        "3": {"class_type": "SaveVideo", "inputs": save},
    }


def solid_webm(
    prefix: str = "emu/video",
    frames: int = 3,
    fps: float = 8.0,
    codec: str = "vp9",
    color: int = 0x3366FF,
) -> Workflow:
    """EmptyImage (`frames` 64x48 frames) -> SaveWEBM ("2"): a VP9 (or AV1) WebM."""
    save = {"images": ["1", 0], "filename_prefix": prefix, "codec": codec, "fps": fps, "crf": 32.0}
    return {**_solid_frames(frames, color), "2": {"class_type": "SaveWEBM", "inputs": save}}


def _solid_frames(count: int, color: int) -> Workflow:
    inputs = {"width": 64, "height": 48, "batch_size": count, "color": color}
    return {"1": {"class_type": "EmptyImage", "inputs": inputs}}


def runtime_error(prefix: str = "emu/err") -> Workflow:
    """Passes validation, then fails at node "2" with IndexError (alpha of an RGB image)."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "ImageToMask", "inputs": {"image": ["1", 0], "channel": "alpha"}},
        "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": prefix}},
    }


def blur_chain(length: int = 4, prefix: str = "emu/blur", size: int = 64) -> Workflow:
    """EmptyImage -> `length` x ImageBlur -> SaveImage, nodes "1", "10", "11", ..., "99".

    With `node_time={"ImageBlur": s}` each blur takes `s` seconds: a slow prompt whose
    interrupts land at a known node.
    """
    workflow: Workflow = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": size, "height": size, "batch_size": 1, "color": 0x112233},
        }
    }
    previous = "1"
    for index in range(length):
        node_id = str(10 + index)
        inputs = {"image": [previous, 0], "blur_radius": 3, "sigma": 1.0}
        workflow[node_id] = {"class_type": "ImageBlur", "inputs": inputs}
        previous = node_id
    workflow["99"] = {
        "class_type": "SaveImage",
        "inputs": {"images": [previous, 0], "filename_prefix": prefix},
    }
    return workflow


def text_to_image(
    positive: str = "beautiful scenery nature glass bottle landscape, , purple galaxy bottle,",
    negative: str = "text, watermark",
    seed: int = 156680208700286,
    steps: int = 20,
    width: int = 512,
    height: int = 512,
    checkpoint: str = "v1-5-pruned-emaonly.safetensors",
    prefix: str = "ComfyUI",
) -> Workflow:
    """ComfyUI's default graph: checkpoint, two prompts, empty latent, KSampler, decode, save."""
    return {
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed,
                "steps": steps,
                "cfg": 8,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": width, "height": height, "batch_size": 1},
        },
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": ["8", 0]}},
    }


FRONTEND_DEFAULT_POSITIVE = (
    "anime RPG game style, cute anime girl with gigantic fennec ears and a big fluffy fox tail "
    "with long wavy blonde hair and large blue eyes blonde colored eyelashes wearing a pink "
    "sweater a large oversized gold trimmed black winter coat and a long blue maxi skirt and a "
    "red scarf, she is sitting beside a campfire in the wilderness at night playing guitar with "
    "a milky way galaxy sky"
)
FRONTEND_DEFAULT_NEGATIVE = (
    "low quality, bad anatomy, extra digits, missing digits, extra limbs, missing limbs"
)


def frontend_default(
    positive: str = FRONTEND_DEFAULT_POSITIVE,
    negative: str = FRONTEND_DEFAULT_NEGATIVE,
    seed: int = 42,
    steps: int = 8,
    width: int = 1024,
    height: int = 1024,
    prefix: str = "ComfyUI",
) -> Workflow:
    """The graph ComfyUI's web frontend (1.58) loads by default, as it queues it: Z-Image Turbo
    from split files (UNETLoader, CLIPLoader type "lumina2", VAELoader), ModelSamplingAuraFlow,
    EmptySD3LatentImage, KSampler (res_multistep, 8 steps, cfg 1), VAEDecode, SaveImage ("9")."""
    clip = {"clip_name": "qwen_3_4b.safetensors", "type": "lumina2", "device": "default"}
    save = {"filename_prefix": prefix, "images": ["65", 0]}
    return {
        "9": {"class_type": "SaveImage", "inputs": save},
        "62": {"class_type": "CLIPLoader", "inputs": clip},
        "63": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "65": {"class_type": "VAEDecode", "inputs": {"samples": ["70", 0], "vae": ["63", 0]}},
        "66": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "z_image_turbo_bf16.safetensors", "weight_dtype": "default"},
        },
        "67": {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": ["62", 0]}},
        "68": {
            "class_type": "EmptySD3LatentImage",
            "inputs": {"width": width, "height": height, "batch_size": 1},
        },
        "69": {"class_type": "ModelSamplingAuraFlow", "inputs": {"shift": 3, "model": ["66", 0]}},
        "70": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed,
                "steps": steps,
                "cfg": 1,
                "sampler_name": "res_multistep",
                "scheduler": "simple",
                "denoise": 1,
                "model": ["69", 0],
                "positive": ["67", 0],
                "negative": ["71", 0],
                "latent_image": ["68", 0],
            },
        },
        "71": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["62", 0]}},
    }


def image_to_video(
    image: str,
    frames: int = 14,
    fps: int = 6,
    motion_bucket_id: int = 127,
    seed: int = 1,
    steps: int = 20,
    width: int = 1024,
    height: int = 576,
    checkpoint: str = "svd_xt.safetensors",
    prefix: str = "ComfyUI",
) -> Workflow:
    """ComfyUI's Stable Video Diffusion example: an input image -> an animated WEBP."""
    return {
        "1": {"class_type": "ImageOnlyCheckpointLoader", "inputs": {"ckpt_name": checkpoint}},
        "2": {"class_type": "LoadImage", "inputs": {"image": image}},
        "3": {
            "class_type": "SVD_img2vid_Conditioning",
            "inputs": {
                "clip_vision": ["1", 1],
                "init_image": ["2", 0],
                "vae": ["1", 2],
                "width": width,
                "height": height,
                "video_frames": frames,
                "motion_bucket_id": motion_bucket_id,
                "fps": fps,
                "augmentation_level": 0.0,
            },
        },
        "4": {"class_type": "VideoLinearCFGGuidance", "inputs": {"model": ["1", 0], "min_cfg": 1}},
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed,
                "steps": steps,
                "cfg": 2.5,
                "sampler_name": "euler",
                "scheduler": "karras",
                "denoise": 1,
                "model": ["4", 0],
                "positive": ["3", 0],
                "negative": ["3", 1],
                "latent_image": ["3", 2],
            },
        },
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {
            "class_type": "SaveAnimatedWEBP",
            "inputs": {
                "images": ["6", 0],
                "filename_prefix": prefix,
                "fps": fps,
                "lossless": False,
                "quality": 85,
                "method": "default",
            },
        },
    }
