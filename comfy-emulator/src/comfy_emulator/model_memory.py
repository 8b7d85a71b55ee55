"""Model residency in VRAM: what a model switch costs and which models stay loaded.

ComfyUI keeps loaded models in VRAM and, when a new one needs room, unloads the least recently
used ones (`comfy.model_management.free_memory`). The emulator models that with a resident set
per emulated process (`ResidentModels`, lost on a restart or `POST /free`) and a cost per
installed model file (`ModelCost`): loading a file that is not resident takes
`load_s * load_scale / speed` seconds; a resident one is free and becomes the most recent.

Default costs, by file family (the first matching row wins; the name match ignores case;
about 1.2 s per GB, as weights read from the page cache):

| folder / file name | ComfyUI class | load_s | vram_mb |
|---|---|---|---|
| `loras` folder | (patches, no log line) | 0.3 | 150 |
| `vae` folder | AutoencoderKL | 0.4 | 320 |
| `text_encoders` with "t5" | FluxClipModel_ | 6.0 | 4,900 |
| `text_encoders` with "qwen" | ZImageTEModel_ | 9.6 | 8,000 |
| other `text_encoders` | SDClipModel | 1.2 | 1,000 |
| "flux" | Flux | 20.0 | 16,800 (fp8 incl. T5, CLIP-L, VAE) |
| "svd" | SVD_img2vid | 6.0 | 5,000 (UNet, CLIP vision, VAE) |
| "z_image" or "lumina" | Lumina2 | 14.8 | 12,300 |
| "xl" (SDXL, e.g. juggernautXL_v8Rundiffusion) | SDXL | 8.0 | 6,900 (incl. CLIP-G/L, VAE) |
| "v1-5", "sd15", "sd1.5", "sd_1.5" | BaseModel | 2.0 | 2,000 |
| other `checkpoints` / `diffusion_models` | BaseModel | 5.0 | 4,000 |
| any other folder (e.g. `photomaker`) | BaseModel | 1.2 | 1,000 |

`EmulatorConfig.model_costs` (CLI `--model-cost FILE=SECONDS[:MB]`) overrides a file's cost.

VRAM accounting: `/system_stats` always shows `VRAM_IN_USE_MB` taken (the CUDA context), and
ComfyUI keeps `WORKING_RESERVE_MB` free for inference, so models get
`vram_total_mb - VRAM_IN_USE_MB - WORKING_RESERVE_MB`. A model larger than that is still
loaded, after evicting everything, and counts with the part that fits ("loaded partially").

Log lines, as ComfyUI 0.8.0 prints them (comfy/model_management.py `load_models_gpu`, then
comfy/model_patcher.py `ModelPatcher.load`), for every load except a LoRA's:

    Requested to load SDXL
    loaded completely; 23028.00 MB usable, 6900.00 MB loaded, full load: True
    loaded partially; 23028.00 MB usable, 23028.00 MB loaded, 1972.00 MB offloaded, ...

where "..." stands for "0.00 MB buffer reserved, lowvram patches: 0" on the same line.

`usable` is the room for models at that moment (after evictions); the model's size is the
`loaded` figure of a complete load, or `loaded + offloaded` of a partial one. An eviction logs
nothing, as ComfyUI at its default level (it logs "Unloading <class>" only at DEBUG).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from comfy_emulator.config import ModelCost, installed_files

VRAM_IN_USE_MB = 512  # what an idle ComfyUI already holds (CUDA context, allocator)
WORKING_RESERVE_MB = 1024  # kept free for activations: ComfyUI's minimum inference memory


@dataclass(frozen=True)
class ModelFamily:
    """What the emulator knows of a kind of model file."""

    model_class: str | None  # the class ComfyUI names in "Requested to load"; None: no line
    cost: ModelCost
    model_type: str = "EPS"  # logged when a checkpoint is read from disk
    weight_dtype: str = "torch.float16"
    manual_cast: str = "None"


LORA = ModelFamily(None, ModelCost(0.3, 150))
VAE = ModelFamily("AutoencoderKL", ModelCost(0.4, 320))
T5 = ModelFamily("FluxClipModel_", ModelCost(6.0, 4900))
QWEN_TE = ModelFamily("ZImageTEModel_", ModelCost(9.6, 8000))
TEXT_ENCODER = ModelFamily("SDClipModel", ModelCost(1.2, 1000))
FLUX = ModelFamily("Flux", ModelCost(20.0, 16800), "FLUX", "torch.float8_e4m3fn", "torch.bfloat16")
SVD = ModelFamily("SVD_img2vid", ModelCost(6.0, 5000), "V_PREDICTION_EDM")
LUMINA2 = ModelFamily("Lumina2", ModelCost(14.8, 12300), "FLOW", "torch.bfloat16")
SDXL = ModelFamily("SDXL", ModelCost(8.0, 6900))
SD15 = ModelFamily("BaseModel", ModelCost(2.0, 2000))
UNKNOWN_CHECKPOINT = ModelFamily("BaseModel", ModelCost(5.0, 4000))
OTHER = ModelFamily("BaseModel", ModelCost(1.2, 1000))

# Name fragments of checkpoints and diffusion models, checked in order ("xl" last but one:
# "flux" or "svd_xt" must not read as SDXL).
_BY_NAME: tuple[tuple[tuple[str, ...], ModelFamily], ...] = (
    (("flux",), FLUX),
    (("svd",), SVD),
    (("z_image", "lumina"), LUMINA2),
    (("xl",), SDXL),
    (("v1-5", "sd15", "sd1.5", "sd_1.5"), SD15),
)
_MAIN_MODEL_FOLDERS = ("checkpoints", "diffusion_models")


def family_of(folder: str, file: str) -> ModelFamily:
    """The default family of a file of a (canonical) model folder; see the table above."""
    name = file.lower()
    if folder == "loras":
        return LORA
    if folder == "vae":
        return VAE
    if folder == "text_encoders":
        return T5 if "t5" in name else QWEN_TE if "qwen" in name else TEXT_ENCODER
    if folder not in _MAIN_MODEL_FOLDERS:
        return OTHER
    for fragments, family in _BY_NAME:
        if any(fragment in name for fragment in fragments):
            return family
    return UNKNOWN_CHECKPOINT


@dataclass(frozen=True)
class ModelSpec:
    """One installed model file: its family and its (possibly configured) cost."""

    file: str
    family: ModelFamily
    cost: ModelCost


class ModelCatalogue:
    """Every installed model file -> its spec. A name that is in no folder is not a model
    (e.g. VAELoader's "pixel_space"): using it costs nothing."""

    def __init__(
        self, models: Mapping[str, tuple[str, ...]], overrides: Mapping[str, ModelCost]
    ) -> None:
        self._specs: dict[str, ModelSpec] = {}
        for folder in models:
            for file in installed_files(models, folder):
                family = family_of(_canonical(folder), file)
                self._specs.setdefault(
                    file, ModelSpec(file, family, overrides.get(file, family.cost))
                )

    def spec(self, file: str) -> ModelSpec | None:
        return self._specs.get(file)


def _canonical(folder: str) -> str:
    return {"clip": "text_encoders", "unet": "diffusion_models"}.get(folder, folder)


@dataclass(frozen=True)
class Load:
    """One model moved into VRAM: the room it found and what of it fits."""

    spec: ModelSpec
    usable_mb: int  # room for models once the least recently used ones were evicted
    evicted: tuple[str, ...]

    @property
    def loaded_mb(self) -> int:
        return min(self.spec.cost.vram_mb, self.usable_mb)

    @property
    def partial(self) -> bool:
        return self.loaded_mb < self.spec.cost.vram_mb


class ResidentModels:
    """The models in VRAM, least recently used first, within a budget of MB."""

    def __init__(self, budget_mb: int) -> None:
        self.budget_mb = max(0, budget_mb)
        self._resident: OrderedDict[str, int] = OrderedDict()  # file -> MB it occupies

    def touch(self, file: str) -> bool:
        """True if resident; it becomes the most recently used."""
        if file not in self._resident:
            return False
        self._resident.move_to_end(file)
        return True

    def admit(self, spec: ModelSpec) -> Load:
        """Make room (least recently used out first) and add the model as the most recent."""
        evicted = []
        while self._resident and self.free_mb() < spec.cost.vram_mb:
            file, _ = self._resident.popitem(last=False)
            evicted.append(file)
        load = Load(spec, self.free_mb(), tuple(evicted))
        self._resident[spec.file] = load.loaded_mb
        return load

    def free_mb(self) -> int:
        return self.budget_mb - self.used_mb()

    def used_mb(self) -> int:
        return sum(self._resident.values())

    def files(self) -> list[str]:
        """Resident files, least recently used first."""
        return list(self._resident)

    def clear(self) -> None:
        self._resident.clear()


def model_budget_mb(vram_total_mb: int) -> int:
    return vram_total_mb - VRAM_IN_USE_MB - WORKING_RESERVE_MB


def requested_line(load: Load) -> str | None:
    model_class = load.spec.family.model_class
    return None if model_class is None else f"Requested to load {model_class}"


def loaded_line(load: Load) -> str | None:
    if load.spec.family.model_class is None:
        return None
    if not load.partial:
        return (
            f"loaded completely; {load.usable_mb:.2f} MB usable, {load.loaded_mb:.2f} MB loaded, "
            "full load: True"
        )
    offloaded = load.spec.cost.vram_mb - load.loaded_mb
    return (
        f"loaded partially; {load.usable_mb:.2f} MB usable, {load.loaded_mb:.2f} MB loaded, "
        f"{offloaded:.2f} MB offloaded, 0.00 MB buffer reserved, lowvram patches: 0"
    )


def checkpoint_disk_lines(family: ModelFamily) -> list[str]:
    """What reading a checkpoint from disk logs (comfy.sd.load_checkpoint_guess_config)."""
    return [
        f"model weight dtype {family.weight_dtype}, manual cast: {family.manual_cast}",
        f"model_type {family.model_type}",
    ]
