"""Named workflow templates: an API-format graph plus a YAML declaration of typed parameters.

A template ``NAME`` is ``NAME.yaml`` (the declaration) beside ``NAME.json`` (the graph) in a
templates folder. Each parameter has a type (string, int, float, bool, enum, image), an
optional default, bounds or choices, a description, and one or more targets (node id + input
name) its value is written to. Precedence: the request's value, then the template's default,
then the value already in the graph. An int parameter with ``random: true`` that the request
leaves unset gets a random value (a seed), reported in the task.

Templates are validated when loaded: a broken one stops start-up with a message naming the
file and the field. Requests are validated against them: errors name the parameter (422).
An image parameter is checked before anything is stored (``Template.check_images``): its
type by signature, its size in bytes, and its width and height as its header declares them,
so a small file that would decode to a huge picture is refused without being decoded.
"""

from __future__ import annotations

import base64
import binascii
import copy
import io
import json
import random
import secrets
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from comfy_shared.errors import ComfyStackError
from comfy_shared.models import UPLOAD_SUBFOLDER, InputFile

DEFAULT_TEMPLATES_DIR = Path(__file__).parent / "templates"
MAX_SEED = 2**64 - 1
IMAGE_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg", b"RIFF": "webp"}
_PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


class TemplateError(ComfyStackError):
    """A template file is broken; the message names the file and the field."""


class UnknownWorkflow(ComfyStackError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"no workflow template named {name!r}; known: {', '.join(known)}")
        self.name = name


class InvalidParams(ComfyStackError):
    """Request parameters that do not fit the template; ``errors`` maps name -> reason."""

    def __init__(self, workflow: str, errors: dict[str, str]) -> None:
        summary = "; ".join(f"params.{name}: {reason}" for name, reason in errors.items())
        super().__init__(f"invalid parameters for {workflow!r}: {summary}")
        self.errors = errors


@dataclass(frozen=True, slots=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int
    """Width x height as the image's header declares it."""


class StagedInputReference(ComfyStackError):
    """A graph names a file in the staging folder of task inputs (another task's image)."""

    def __init__(self, node_id: str, input_name: str) -> None:
        super().__init__(
            f"node {node_id!r} input {input_name!r} names a file under {UPLOAD_SUBFOLDER}/, "
            "where the inputs of other tasks are staged; send images as template parameters"
        )


def refuse_staged_inputs(graph: Mapping[str, Any]) -> None:
    prefix = f"{UPLOAD_SUBFOLDER}/"
    for node_id, node in graph.items():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        for input_name, value in (inputs or {}).items():
            if isinstance(value, str) and value.replace("\\", "/").lstrip("./").startswith(prefix):
                raise StagedInputReference(node_id, input_name)


class ParamType(StrEnum):
    STRING = "string"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    ENUM = "enum"
    IMAGE = "image"


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid")
    node: str
    input: str


class ParamSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: ParamType
    description: str = ""
    default: Any = None
    min: float | None = None
    max: float | None = None
    choices: list[Any] | None = None
    random: bool = False
    required: bool = False
    targets: list[Target] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> ParamSpec:
        if self.type is ParamType.ENUM and not self.choices:
            raise ValueError("an enum needs 'choices'")
        if self.random and (self.type is not ParamType.INT or self.default is not None):
            raise ValueError("'random' is only for int parameters (seeds) without a default")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("'min' is greater than 'max'")
        if self.default is not None:
            problem = check_value(self, self.default)
            if problem:
                raise ValueError(f"default {self.default!r}: {problem}")
        return self


class TemplateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""
    params: dict[str, ParamSpec] = Field(default_factory=dict)


@dataclass
class Expansion:
    """A request made concrete, once, where it is accepted: the graph the node runs as it is,
    with each image input already naming the file the node uploads before submitting."""

    graph: dict[str, Any]
    params: dict[str, Any]
    """Every parameter's value as used (random seeds included; images summarised)."""
    inputs: list[InputFile] = field(default_factory=list)


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    graph: dict[str, Any]
    params: dict[str, ParamSpec]

    def resolve(
        self, values: Mapping[str, Any], rng: random.Random | None = None
    ) -> dict[str, Any]:
        """Check the request's values and fill in defaults and random seeds."""
        errors = {name: "unknown parameter" for name in values if name not in self.params}
        resolved: dict[str, Any] = {}
        for name, spec in self.params.items():
            if name in values and values[name] is not None:
                problem = check_value(spec, values[name])
                if problem:
                    errors[name] = problem
                resolved[name] = values[name]
            elif spec.default is not None:
                resolved[name] = spec.default
            elif spec.random:
                resolved[name] = (rng or random.SystemRandom()).randint(
                    int(spec.min or 0), int(spec.max if spec.max is not None else MAX_SEED)
                )
            elif spec.required:
                errors[name] = "required"
        if errors:
            raise InvalidParams(self.name, errors)
        return resolved

    def image_params(self) -> list[str]:
        return [name for name, spec in self.params.items() if spec.type is ParamType.IMAGE]

    def check_images(self, values: Mapping[str, Any], limits: ImageLimits) -> None:
        """Raise InvalidParams naming each image in ``values`` that is unreadable, of another
        type, or larger than ``limits``. Values that are not strings are left to resolve()."""
        errors = {}
        for name in self.image_params():
            value = values.get(name)
            if isinstance(value, str) and (problem := image_problem(value, limits)):
                errors[name] = problem
        if errors:
            raise InvalidParams(self.name, errors)

    def expand(self, resolved: Mapping[str, Any]) -> Expansion:
        """The graph with the values written to their targets. An image becomes an input file
        under an unguessable name (other tasks on the node must not find it), which its
        targets already point at."""
        graph = copy.deepcopy(self.graph)
        used: dict[str, Any] = {}
        inputs = []
        for name, value in resolved.items():
            spec = self.params[name]
            if spec.type is ParamType.IMAGE:
                data, extension = decode_image(value)
                inputs.append(InputFile(f"{secrets.token_hex(16)}.{extension}", data))
                value = f"{UPLOAD_SUBFOLDER}/{inputs[-1].name}"
                used[name] = f"<{extension} image, {len(data)} bytes>"
            else:
                value = used[name] = _coerce(spec, value)
            for target in spec.targets:
                graph[target.node]["inputs"][target.input] = value
        return Expansion(graph=graph, params=used, inputs=inputs)

    def json_schema(self) -> dict[str, Any]:
        properties = {name: _param_schema(spec) for name, spec in self.params.items()}
        required = [name for name, spec in self.params.items() if spec.required]
        return {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        }


def check_value(spec: ParamSpec, value: Any) -> str | None:
    """Why ``value`` does not fit ``spec``, or None."""
    kind = spec.type
    if kind is ParamType.STRING:
        return None if isinstance(value, str) else "expected a string"
    if kind is ParamType.BOOL:
        return None if isinstance(value, bool) else "expected true or false"
    if kind is ParamType.ENUM:
        return None if value in (spec.choices or []) else f"expected one of {spec.choices}"
    if kind is ParamType.IMAGE:
        return _image_encoding_problem(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"expected {'an integer' if kind is ParamType.INT else 'a number'}"
    if kind is ParamType.INT and not float(value).is_integer():
        return "expected an integer"
    if spec.min is not None and value < spec.min:
        return f"{value} is below the minimum {spec.min:g}"
    if spec.max is not None and value > spec.max:
        return f"{value} is above the maximum {spec.max:g}"
    return None


def decode_image(value: str) -> tuple[bytes, str]:
    """Base64 (optionally a ``data:`` URL) -> bytes and the file type from its signature."""
    data = base64.b64decode(_base64_payload(value), validate=True)
    for signature, extension in IMAGE_SIGNATURES.items():
        if data.startswith(signature) and (extension != "webp" or data[8:12] == b"WEBP"):
            return data, extension
    raise ValueError("not a PNG, JPEG or WebP image")


def _base64_payload(value: str) -> str:
    return value.split(",", 1)[1] if value.startswith("data:") else value


def image_problem(value: str, limits: ImageLimits) -> str | None:
    """Why the base64 image ``value`` is refused, or None. Only the header is read, never
    the pixels: a PNG is also checked whole (chunk checksums, so a truncated one is
    refused); a JPEG or WebP by what its header says."""
    # Base64 takes 4 characters per 3 bytes: a payload this long cannot fit, so it is
    # refused before the decoding allocates it.
    if len(_base64_payload(value)) // 4 * 3 > limits.max_bytes + 2:
        return f"image larger than {limits.max_bytes} bytes"
    try:
        data, extension = decode_image(value)
    except (ValueError, binascii.Error) as exc:
        return f"invalid image: {exc}"
    if len(data) > limits.max_bytes:
        return f"image of {len(data)} bytes is larger than {limits.max_bytes}"
    try:
        width, height = read_image_size(data, extension)
    except ValueError as exc:
        return f"invalid image: {exc}"
    if width * height > limits.max_pixels:
        return (
            f"image of {width}x{height} = {width * height} pixels is larger than "
            f"{limits.max_pixels} pixels"
        )
    return None


def read_image_size(data: bytes, extension: str) -> tuple[int, int]:
    """(width, height) from the header of a PNG, JPEG or WebP; ValueError if unreadable."""
    with warnings.catch_warnings():
        # Pillow warns above its own pixel limit, and raises at twice it: ours is checked
        # by the caller, from the size read here.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=[_PILLOW_FORMATS[extension]]) as image:
                size = image.size
                if extension == "png":
                    image.verify()  # walks the chunks and their checksums, decodes nothing
        except Image.DecompressionBombError as exc:
            raise ValueError(f"too many pixels: {exc}") from exc
        except (OSError, SyntaxError, EOFError) as exc:
            raise ValueError(f"unreadable or truncated {extension.upper()}: {exc}") from exc
    return size


def _image_encoding_problem(value: Any) -> str | None:
    """The value is base64 of a PNG, JPEG or WebP (sizes: ``image_problem``)."""
    if not isinstance(value, str):
        return "expected base64 image data"
    try:
        decode_image(value)
    except (ValueError, binascii.Error) as exc:
        return f"invalid image: {exc}"
    return None


def _coerce(spec: ParamSpec, value: Any) -> Any:
    if spec.type is ParamType.INT:
        return int(value)
    if spec.type is ParamType.FLOAT:
        return float(value)
    return value


def _param_schema(spec: ParamSpec) -> dict[str, Any]:
    json_type = {
        ParamType.STRING: "string", ParamType.INT: "integer", ParamType.FLOAT: "number",
        ParamType.BOOL: "boolean", ParamType.IMAGE: "string",
    }  # fmt: skip
    schema: dict[str, Any] = {"description": spec.description}
    if spec.type is ParamType.ENUM:
        schema["enum"] = spec.choices
    else:
        schema["type"] = json_type[spec.type]
    if spec.type is ParamType.IMAGE:
        schema["contentEncoding"] = "base64"
        schema["contentMediaType"] = "image/png, image/jpeg or image/webp"
        schema["description"] = f"{spec.description} (base64, or an https:// URL to fetch)"
    if spec.min is not None:
        schema["minimum"] = spec.min
    if spec.max is not None:
        schema["maximum"] = spec.max
    if spec.default is not None:
        schema["default"] = spec.default
    if spec.random:
        schema["description"] += " (random when unset)"
        schema["x-random"] = True  # forms offer a dice for it
    return schema


class TemplateLibrary:
    """The templates of one folder, validated at load."""

    def __init__(self, templates: Mapping[str, Template]) -> None:
        self._templates = dict(sorted(templates.items()))

    @classmethod
    def load(cls, folder: Path) -> TemplateLibrary:
        if not folder.is_dir():
            raise TemplateError(f"{folder}: the templates folder does not exist")
        return cls({path.stem: load_template(path) for path in sorted(folder.glob("*.yaml"))})

    def names(self) -> list[str]:
        return list(self._templates)

    def all(self) -> list[Template]:
        return list(self._templates.values())

    def get(self, name: str) -> Template:
        template = self._templates.get(name)
        if template is None:
            raise UnknownWorkflow(name, self.names())
        return template

    def expand_request(
        self,
        *,
        prompt: dict[str, Any] | None,
        workflow: str | None,
        params: Mapping[str, Any],
    ) -> Expansion:
        """The graph a request runs, made once, where the request is accepted: its own graph,
        or its template expanded with its values (a random seed drawn now, images turned
        into input files). A graph of the caller's own may not name a staged input file: those
        are other tasks' images."""
        if prompt is not None:
            refuse_staged_inputs(prompt)
            return Expansion(graph=prompt, params={})
        template = self.get(workflow or "")
        return template.expand(template.resolve(params))


def load_template(declaration: Path) -> Template:
    where = declaration.name
    try:
        raw = yaml.safe_load(declaration.read_text()) or {}
    except yaml.YAMLError as exc:
        raise TemplateError(f"{where}: not valid YAML: {exc}") from exc
    try:
        spec = TemplateSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        place = ".".join(str(part) for part in first["loc"])
        raise TemplateError(f"{where}: {place}: {first['msg']}") from exc
    graph = _load_graph(declaration.with_suffix(".json"))
    for name, param in spec.params.items():
        for index, target in enumerate(param.targets):
            problem = _target_problem(graph, target)
            if problem:
                raise TemplateError(f"{where}: params.{name}.targets.{index}: {problem}")
    return Template(declaration.stem, spec.description, graph, spec.params)


def _load_graph(path: Path) -> dict[str, Any]:
    try:
        graph = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise TemplateError(f"{path.name}: the graph file is missing") from exc
    except json.JSONDecodeError as exc:
        raise TemplateError(f"{path.name}: not valid JSON: {exc}") from exc
    if not isinstance(graph, dict) or not all(
        isinstance(node, dict) and "class_type" in node for node in graph.values()
    ):
        raise TemplateError(f"{path.name}: not an API-format graph (node id -> class_type, inputs)")
    return graph


def _target_problem(graph: dict[str, Any], target: Target) -> str | None:
    node = graph.get(target.node)
    if node is None:
        return f"node {target.node!r} is not in the graph"
    if target.input not in node.get("inputs", {}):
        return f"node {target.node!r} ({node['class_type']}) has no input {target.input!r}"
    return None
