"""Emulator settings.

`EmulatorConfig` is a frozen dataclass: tests and the CLI build one explicitly and pass it to
`create_app()` / `start_emulator()`. Nothing here reads the environment.

`comfyui_version` picks the ComfyUI to behave like: "0.8.0" (the default, the recorded one) or
"0.26.0" (canonical prompt ids, cancel by job id, the /api/jobs view; see `versions.py`).

Timing model: a KSampler step takes `step_time / speed` seconds (paced against a deadline, so
the host's own delays between steps do not add up); any other node takes
`node_time.get(class_type, 0) / speed` seconds on top of its real (Pillow) work. Loading a
model file that is not resident in the emulated VRAM takes `load_s * load_scale / speed`
seconds, `load_s` from `model_costs` or the file's family default (see
`comfy_emulator.model_memory`). `speed` and `load_scale` can be changed at run time through the
control API (see `comfy_emulator.routes.control`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from comfy_emulator.versions import (
    DEFAULT_COMFYUI_VERSION,
    ComfyUIVersion,
    VersionTraits,
    traits_of,
)

if TYPE_CHECKING:
    from comfy_emulator.nodes.base import Node

DEFAULT_CHECKPOINTS: tuple[str, ...] = (
    "juggernautXL_v8Rundiffusion.safetensors",
    "v1-5-pruned-emaonly-fp16.safetensors",
    "v1-5-pruned-emaonly.safetensors",
    "svd_xt.safetensors",  # Stable Video Diffusion XT (the img2video template)
)
DEFAULT_LORAS: tuple[str, ...] = ("add-detail-xl.safetensors",)
# The split files of Z-Image Turbo, the model of the graph ComfyUI's web frontend loads by default
# (UNETLoader, CLIPLoader with type "lumina2", VAELoader).
DEFAULT_DIFFUSION_MODELS: tuple[str, ...] = ("z_image_turbo_bf16.safetensors",)
DEFAULT_TEXT_ENCODERS: tuple[str, ...] = ("qwen_3_4b.safetensors",)
DEFAULT_VAES: tuple[str, ...] = ("ae.safetensors",)

# The folder keys ComfyUI 0.8.0 reports from GET /models, in its order.
MODEL_FOLDERS: tuple[str, ...] = (
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "latent_upscale_models",
    "custom_nodes",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
)


# ComfyUI's older folder names: a node asking for "clip" or "unet" gets the files of
# "text_encoders" or "diffusion_models", whose folders also scan models/clip and models/unet.
# Only the new names are keys of GET /models (so /models/clip is a 404, as in ComfyUI).
LEGACY_FOLDERS: Mapping[str, str] = {"clip": "text_encoders", "unet": "diffusion_models"}


@dataclass(frozen=True)
class ModelCost:
    """What switching to a model file costs: seconds to load it (at speed 1.0 and load scale
    1.0) and the VRAM it then occupies."""

    load_s: float
    vram_mb: int


def default_models() -> dict[str, tuple[str, ...]]:
    """The installed-model catalogue used when none is given."""
    return {
        "checkpoints": DEFAULT_CHECKPOINTS,
        "loras": DEFAULT_LORAS,
        "diffusion_models": DEFAULT_DIFFUSION_MODELS,
        "text_encoders": DEFAULT_TEXT_ENCODERS,
        "vae": DEFAULT_VAES,
    }


def installed_files(models: Mapping[str, tuple[str, ...]], folder: str) -> list[str]:
    """ComfyUI's `get_filename_list(folder)`: the files of the folder, legacy name resolved,
    including those `models` lists under a legacy name, sorted and without duplicates."""
    canonical = LEGACY_FOLDERS.get(folder, folder)
    aliases = [old for old, new in LEGACY_FOLDERS.items() if new == canonical]
    return sorted({name for key in (canonical, *aliases) for name in models.get(key, ())})


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything that shapes one emulator instance.

    Directories left as None live under `data_dir` (`input/`, `output/`, `temp/`); a None
    `data_dir` means a fresh temporary directory that is removed when the app shuts down.
    """

    host: str = "127.0.0.1"
    port: int = 8188  # 0 picks a free port
    data_dir: Path | None = None
    input_dir: Path | None = None
    output_dir: Path | None = None
    temp_dir: Path | None = None
    models: Mapping[str, tuple[str, ...]] = field(default_factory=default_models)
    step_time: float = 0.05  # seconds per KSampler step at speed 1.0
    speed: float = 1.0  # 2.0 = everything twice as fast
    node_time: Mapping[str, float] = field(default_factory=dict)  # class_type -> extra seconds
    max_upload_mb: float = 100
    device: Literal["cuda", "cpu"] = "cuda"
    gpu_name: str = "NVIDIA GeForce RTX 4090"
    vram_total_mb: int = 24564
    # file name -> load cost; files not named here cost their family's default
    model_costs: Mapping[str, ModelCost] = field(default_factory=dict)
    load_scale: float = 1.0  # multiplies every model load time (0.01 in the test suite)
    preview_method: Literal["none", "auto", "latent2rgb", "taesd"] = "none"
    cache_enabled: bool = True  # False behaves like --cache-none
    metadata_enabled: bool = True  # False behaves like --disable-metadata
    origin_check: bool = True  # the loopback Host/Origin check of a default ComfyUI
    history_max: int = 10000
    fail_next: int = 0  # the next N prompts fail with a CUDA out-of-memory error
    hang_next: int = 0  # the next N prompts hang until interrupted or released
    log_to_stdout: bool = False  # echo the log ring buffer to stdout (the CLI turns it on)
    extra_nodes: tuple[type[Node], ...] = ()  # more node classes (e.g. custom node stand-ins)
    comfyui_version: ComfyUIVersion = DEFAULT_COMFYUI_VERSION  # which ComfyUI to behave like
    # Custom nodes' web directories, one subfolder per pack (their WEB_DIRECTORY): /extensions
    # lists their .js files and /extensions/<pack>/... serves them. None: no custom node has one.
    web_extensions: Path | None = None

    def __post_init__(self) -> None:
        traits_of(self.comfyui_version)  # an unknown version fails here, not at the first request

    @property
    def traits(self) -> VersionTraits:
        """What the configured `comfyui_version` changes (see `comfy_emulator.versions`)."""
        return traits_of(self.comfyui_version)

    def model_names(self, folder: str) -> list[str]:
        """Installed files of one model folder, sorted like ComfyUI's filename lists."""
        return installed_files(self.models, folder)
