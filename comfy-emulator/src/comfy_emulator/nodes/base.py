"""The node model: how a node class declares itself and how it runs.

A node class is a `Node` subclass with class attributes mirroring ComfyUI's (`class_type`,
`category`, `return_types`, `output_node`, ...), an `input_types(env)` classmethod returning the
same `{"required": {...}, "optional": {...}, "hidden": {...}}` dict that `/object_info` shows,
and an async `execute(ctx, inputs)`. Adding a node is therefore a few lines:

    class ImageInvert(Node):
        class_type = "ImageInvert"
        display_name = "Invert Image"
        category = "image"
        return_types = ("IMAGE",)

        @classmethod
        def input_types(cls, env: NodeEnv) -> InputTypes:
            return {"required": {"image": ("IMAGE",)}}

        async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
            return NodeOutput((ImageBatch(ImageOps.invert(i) for i in inputs["image"]),))

Input declarations are kept in ComfyUI's wire form because validation reads them exactly as the
real server does (`input_config` in errors is `[type, options]`). Two object_info dialects exist:
classic V1 nodes (`("IMAGE",)`, combos as `([options...], {...})`) and new-style V3 nodes
(`schema_v3 = True`; build inputs with `v3_link`, `v3_int`, `v3_float`, `v3_combo`).

Data flowing between nodes: IMAGE is an `ImageBatch` (a list of RGB Pillow images), MASK a
`MaskBatch` (a list of mode "L" images); model stand-ins use the types in `nodes.models`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from PIL import Image

from comfy_emulator.config import installed_files
from comfy_emulator.files import Folders

InputTypes = dict[str, dict[str, Any]]
Inputs = dict[str, Any]
T = TypeVar("T")

MAX_RESOLUTION = 16384


class ImageBatch(list[Image.Image]):
    """An IMAGE value: RGB images of one size. `str()` mimics a torch tensor (error reports)."""

    def __str__(self) -> str:
        if not self:
            return "tensor([])"
        r, g, b = (v / 255 for v in _first_pixel(self[0].convert("RGB")))
        px = f"[{r:.4f}, {g:.4f}, {b:.4f}]"
        return f"tensor([[[{px},\n          ...,\n          {px}]]])"


class MaskBatch(list[Image.Image]):
    """A MASK value: single-channel ("L") images, 255 = 1.0."""

    def __str__(self) -> str:
        if not self:
            return "tensor([])"
        value = _first_pixel(self[0])[0] / 255
        return f"tensor([[[{value:.4f}, ..., {value:.4f}]]])"


def _first_pixel(image: Image.Image) -> tuple[float, ...]:
    pixel = image.getpixel((0, 0))
    if isinstance(pixel, tuple):
        return tuple(float(v) for v in pixel)
    return (float(pixel or 0),)


@dataclass(frozen=True)
class NodeEnv:
    """What node classes may consult while declaring or validating inputs."""

    folders: Folders
    models: Mapping[str, tuple[str, ...]]

    def model_names(self, folder: str) -> list[str]:
        return installed_files(self.models, folder)


@dataclass
class NodeOutput:
    """A node's return values (one per `return_types` entry) and optional UI output."""

    values: tuple[Any, ...] = ()
    ui: dict[str, list[Any]] | None = None


class ExecContext(ABC):
    """Services the executor offers a running node."""

    env: NodeEnv
    prompt_id: str
    node_id: str
    prompt: dict[str, Any]
    extra_pnginfo: dict[str, Any] | None
    metadata_enabled: bool
    previews_enabled: bool

    @property
    @abstractmethod
    def step_time(self) -> float:
        """Seconds one sampler step takes at speed 1.0."""

    @abstractmethod
    async def sleep(self, seconds: float) -> None:
        """Simulate work: `seconds / speed`, on average over a node's consecutive calls."""

    @abstractmethod
    async def progress(self, value: int, total: int, preview: Image.Image | None = None) -> None:
        """Report progress like comfy.utils.ProgressBar; raises if an interrupt is pending."""

    @abstractmethod
    def send_text(self, text: str) -> None:
        """A TEXT binary frame for this node (broadcast, like send_progress_text)."""

    @abstractmethod
    def log(self, line: str) -> None:
        """A line in the server log."""

    @abstractmethod
    def write(self, chunk: str) -> None:
        """A raw chunk in the server log (e.g. a tqdm bar starting with \\r)."""

    @abstractmethod
    def run_sync(self, func: Callable[..., T], *args: Any) -> Awaitable[T]:
        """Run CPU-bound work in a thread so the server stays responsive."""

    @abstractmethod
    async def load_model(self, file: str, disk_lines: Sequence[str] = ()) -> None:
        """A loader's model file into VRAM: free when resident, else its load time is paid
        and `disk_lines` are logged before ComfyUI's load lines (see `model_memory`)."""


@runtime_checkable
class ModelUser(Protocol):
    """A value that holds models (a MODEL, CLIP, VAE handle): a node given one as input
    needs those files in VRAM before it runs, even when the loader's output was cached."""

    def model_files(self) -> tuple[str, ...]: ...


class Node(ABC):
    """Base class of every emulated node class."""

    class_type: ClassVar[str]
    display_name: ClassVar[str | None] = None
    category: ClassVar[str] = "sd"
    description: ClassVar[str] = ""
    python_module: ClassVar[str] = "nodes"
    output_node: ClassVar[bool] = False
    return_types: ClassVar[tuple[str, ...]] = ()
    return_names: ClassVar[tuple[str, ...] | None] = None
    output_tooltips: ClassVar[tuple[str | None, ...] | None] = None
    schema_v3: ClassVar[bool] = False
    experimental: ClassVar[bool] = False  # V3 `is_experimental` (object_info "experimental")
    # Inputs checked by `validate_inputs` instead of the min/max/combo checks (ComfyUI:
    # the argument names of VALIDATE_INPUTS).
    custom_validated: ClassVar[tuple[str, ...]] = ()
    # True when the class has IS_CHANGED / fingerprint_inputs (see `fingerprint`).
    has_fingerprint: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        """The `input` dict of /object_info."""

    @classmethod
    def validate_inputs(cls, env: NodeEnv, values: Mapping[str, Any]) -> bool | str:
        """Custom validation of `custom_validated` inputs: True, False or an error text."""
        return True

    @classmethod
    def fingerprint(cls, env: NodeEnv, values: Mapping[str, Any]) -> Hashable:
        """IS_CHANGED: part of the cache signature (e.g. a file hash)."""
        return False

    @abstractmethod
    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        """Run the node on resolved inputs (links replaced by upstream values)."""

    @classmethod
    def uses_unique_id(cls, env: NodeEnv) -> bool:
        hidden = cls.input_types(env).get("hidden", {})
        return any(_hidden_kind(v) == "UNIQUE_ID" for v in hidden.values())


def _hidden_kind(value: Any) -> Any:
    return value[0] if isinstance(value, list | tuple) else value


# ---- input declaration helpers for V3-style (comfy_api io.ComfyNode) nodes ----------------


def v3_link(io_type: str) -> tuple[str, dict[str, Any]]:
    return (io_type, {})


def v3_int(
    default: int, min: int | None = None, max: int | None = None, step: int | None = None
) -> tuple[str, dict[str, Any]]:
    return ("INT", _pruned(default=default, min=min, max=max, step=step))


def v3_float(
    default: float, min: float | None = None, max: float | None = None, step: float | None = None
) -> tuple[str, dict[str, Any]]:
    return ("FLOAT", _pruned(default=default, min=min, max=max, step=step))


def v3_combo(options: Iterable[str]) -> tuple[str, dict[str, Any]]:
    return ("COMBO", {"multiselect": False, "options": list(options)})


def _pruned(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# ---- registry and /object_info ----------------------------------------------------------


class NodeRegistry:
    """NODE_CLASS_MAPPINGS: class_type -> node class, in registration order."""

    def __init__(self, classes: Iterable[type[Node]]) -> None:
        self._classes: dict[str, type[Node]] = {}
        for cls in classes:
            self._classes[cls.class_type] = cls

    def get(self, class_type: str) -> type[Node] | None:
        return self._classes.get(class_type)

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._classes

    def names(self) -> list[str]:
        return list(self._classes)

    def object_info(self, class_type: str, env: NodeEnv) -> dict[str, Any]:
        cls = self._classes[class_type]
        return _info_v3(cls, env) if cls.schema_v3 else _info_v1(cls, env)


def _input_order(inputs: InputTypes) -> dict[str, list[str]]:
    return {section: list(fields) for section, fields in inputs.items()}


def _info_v1(cls: type[Node], env: NodeEnv) -> dict[str, Any]:
    inputs = cls.input_types(env)
    info: dict[str, Any] = {
        "input": inputs,
        "input_order": _input_order(inputs),
        "output": list(cls.return_types),
        "output_is_list": [False] * len(cls.return_types),
        "output_name": list(cls.return_names or cls.return_types),
        "name": cls.class_type,
        "display_name": cls.display_name or cls.class_type,
        "description": cls.description,
        "python_module": cls.python_module,
        "category": cls.category,
        "output_node": cls.output_node,
    }
    if cls.output_tooltips is not None:
        info["output_tooltips"] = list(cls.output_tooltips)
    return info


def _info_v3(cls: type[Node], env: NodeEnv) -> dict[str, Any]:
    # V3 nodes always report every key, including null display names and tooltips.
    inputs = cls.input_types(env)
    tooltips = cls.output_tooltips or (None,) * len(cls.return_types)
    return {
        "input": inputs,
        "input_order": _input_order(inputs),
        "output": list(cls.return_types),
        "output_is_list": [False] * len(cls.return_types),
        "output_name": list(cls.return_names or cls.return_types),
        "output_tooltips": list(tooltips),
        "output_matchtypes": None,
        "name": cls.class_type,
        "display_name": cls.display_name,
        "description": cls.description,
        "python_module": cls.python_module,
        "category": cls.category,
        "output_node": cls.output_node,
        "deprecated": False,
        "experimental": cls.experimental,
        "api_node": False,
    }
