"""How each image and the fixed parameters become a request.

Two ways:
- a **template** (``TemplateMapping``): its image parameter takes the file (a multipart
  upload, as the balancer takes it), the other parameters are typed and checked against the
  JSON Schema the API publishes (``GET /api/v1/workflows/{name}``), before anything is sent;
- an **API-format graph** (``GraphMapping``): the file is uploaded through the ComfyUI
  gateway (``/upload/image``) and its name written to the image target (``NODE`` or
  ``NODE.input``, default input ``image``); parameters are ``NODE.input=value``.

Parameters per folder: a ``batch.json`` (a JSON object of parameters) in an image's folder or
the nearest folder above it, up to its root, applies to that image, over the parameters given
for the whole batch (a folder knows better than the command line what it needs). Only the
nearest file counts: they are not merged.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from comfy_stack.batch.scan import SourceFile
from comfy_stack.client import ApiError, AsyncStackClient

FOLDER_PARAMS_FILE: Final = "batch.json"


class MappingError(Exception):
    """The parameters or the graph do not fit: nothing was sent."""


class Mapping(Protocol):
    """Turns one image (with its folder's parameters) into a task on the API."""

    @property
    def params(self) -> dict[str, Any]:
        """The parameters of every image (a folder's ``batch.json`` goes over them)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What runs, as JSON (for the summary, and part of each file's key)."""
        ...

    def check(self, params: dict[str, Any], where: str) -> dict[str, Any]:
        """``params`` typed and checked (MappingError naming ``where`` if they do not fit)."""
        ...

    async def submit(
        self, client: AsyncStackClient, source: SourceFile, data: bytes, params: dict[str, Any],
        key: str,
    ) -> str:  # fmt: skip
        """Submit ``data`` with ``params`` under the idempotency ``key``; the task id. The
        same key again answers the same task: it never runs twice."""
        ...


@dataclass(frozen=True)
class TemplateMapping:
    workflow: str
    schema: dict[str, Any]
    """The template's parameters as JSON Schema (``parameters`` of the workflows route)."""
    image_param: str
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"workflow": self.workflow, "image_param": self.image_param, "params": self.params}

    def check(self, params: dict[str, Any], where: str) -> dict[str, Any]:
        properties = self.schema.get("properties", {})
        for name, value in params.items():
            problem = value_problem(properties, name, value)
            if name == self.image_param:
                problem = "takes each file of the batch"
            if problem:
                raise MappingError(f"{where}: parameter {name!r}: {problem}")
        missing = [
            name
            for name in self.schema.get("required", [])
            if name not in params and name != self.image_param
        ]
        if missing:
            raise MappingError(f"{where}: required parameters missing: {', '.join(missing)}")
        return params

    async def submit(
        self, client: AsyncStackClient, source: SourceFile, data: bytes, params: dict[str, Any],
        key: str,
    ) -> str:  # fmt: skip
        body = {"workflow": self.workflow, "params": params}
        files = {self.image_param: (source.relative.name, data, source.media_type)}
        task = await client.generate(body, files, idempotency_key=key)
        return str(task["id"])


@dataclass(frozen=True)
class GraphMapping:
    graph: dict[str, Any]
    image_node: str
    image_input: str = "image"
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        digest = hashlib.sha256(_canonical(self.graph).encode()).hexdigest()
        target = f"{self.image_node}.{self.image_input}"
        return {"graph_sha256": digest, "image_target": target, "params": self.params}

    def check(self, params: dict[str, Any], where: str) -> dict[str, Any]:
        for name in params:
            node, _, input_name = name.partition(".")
            if not input_name or node not in self.graph:
                raise MappingError(f"{where}: {name!r} names no node of the graph (NODE.input)")
        return params

    async def submit(
        self, client: AsyncStackClient, source: SourceFile, data: bytes, params: dict[str, Any],
        key: str,
    ) -> str:  # fmt: skip
        name = f"{hashlib.sha256(data).hexdigest()[:32]}{source.relative.suffix.lower()}"
        uploaded = await client.upload_image(name, data, source.media_type)
        graph = json.loads(json.dumps(self.graph))
        for target, value in params.items():
            node, _, input_name = target.partition(".")
            graph[node]["inputs"][input_name] = value
        reference = "/".join(filter(None, (uploaded.get("subfolder"), uploaded["name"])))
        graph[self.image_node]["inputs"][self.image_input] = reference
        prompt_id = str(uuid.UUID(hex=hashlib.sha256(key.encode()).hexdigest()[:32], version=4))
        try:
            await client.queue_prompt(graph, prompt_id)
        except ApiError as exc:
            if exc.status != 409:  # 409: sent before under this key (the id is the key's)
                raise
        return prompt_id


async def template_mapping(
    client: AsyncStackClient,
    workflow: str,
    raw_params: list[str],
    image_param: str | None = None,
) -> TemplateMapping:
    """The mapping for ``workflow`` as the API describes it, ``raw_params`` (``NAME=VALUE``)
    typed by its schema; ``image_param`` may be left out when the template has one image
    parameter."""
    schema = (await client.workflow(workflow))["parameters"]
    properties = schema.get("properties", {})
    images = [name for name, spec in properties.items() if spec.get("contentEncoding") == "base64"]
    if image_param is None and len(images) != 1:
        choices = ", ".join(images) or "none"
        raise MappingError(f"{workflow}: name its image parameter with --image-param ({choices})")
    chosen = image_param or images[0]
    if chosen not in images:
        raise MappingError(f"{workflow}: {chosen!r} is not an image parameter ({images})")
    params = dict(parse_template_param(properties, item) for item in raw_params)
    return TemplateMapping(workflow, schema, chosen, params)


def graph_mapping(path: Path, image_target: str, raw_params: list[str]) -> GraphMapping:
    """The mapping for the API-format graph in ``path``; ``image_target`` is ``NODE`` or
    ``NODE.input``; ``raw_params`` are ``NODE.input=VALUE`` (VALUE is JSON if it parses)."""
    try:
        graph = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MappingError(f"{path}: not an API-format graph: {exc}") from exc
    node, _, input_name = image_target.partition(".")
    if not isinstance(graph, dict) or not isinstance(graph.get(node), dict):
        raise MappingError(f"{path}: no node {node!r} for the image")
    mapping = GraphMapping(graph, node, input_name or "image")
    params = dict(_split(item, loose_json) for item in raw_params)
    return GraphMapping(graph, node, input_name or "image", mapping.check(params, "--param"))


def parse_template_param(properties: dict[str, Any], item: str) -> tuple[str, Any]:
    """``NAME=VALUE`` typed by the parameter's schema (an integer, a number, true/false, or
    the text as it is: a prompt "42" stays a string)."""
    name, raw = _split(item, str)
    spec = properties.get(name)
    if spec is None:
        raise MappingError(f"--param {name}: unknown parameter (known: {', '.join(properties)})")
    value = _typed(spec, raw)
    if problem := value_problem(properties, name, value):
        raise MappingError(f"--param {name}: {problem}")
    return name, value


def value_problem(properties: dict[str, Any], name: str, value: Any) -> str | None:
    """Why ``value`` does not fit the schema of parameter ``name``, or None."""
    spec = properties.get(name)
    if spec is None:
        return f"unknown parameter (known: {', '.join(properties)})"
    if "enum" in spec:
        return None if value in spec["enum"] else f"expected one of {spec['enum']}"
    expected = spec.get("type")
    if expected == "string" or expected is None:
        return None if isinstance(value, str) else "expected a string"
    if expected == "boolean":
        return None if isinstance(value, bool) else "expected true or false"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"expected {'an integer' if expected == 'integer' else 'a number'}"
    if expected == "integer" and not float(value).is_integer():
        return "expected an integer"
    if "minimum" in spec and value < spec["minimum"]:
        return f"{value} is below the minimum {spec['minimum']}"
    if "maximum" in spec and value > spec["maximum"]:
        return f"{value} is above the maximum {spec['maximum']}"
    return None


def _typed(spec: dict[str, Any], raw: str) -> Any:
    expected = spec.get("type")
    try:
        if expected == "integer":
            return int(raw)
        if expected == "number":
            return float(raw)
    except ValueError:
        return raw  # value_problem names what was expected
    if expected == "boolean":
        return {"true": True, "false": False}.get(raw.lower(), raw)
    return raw


def _split(item: str, convert: Any) -> tuple[str, Any]:
    name, separator, raw = item.partition("=")
    if not separator or not name:
        raise MappingError(f"--param {item!r}: expected NAME=VALUE")
    return name, convert(raw)


def loose_json(raw: str) -> Any:
    """``raw`` as JSON if it parses, else the text."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


class FolderParams:
    """The parameters of each folder's ``batch.json`` (nearest folder up to the root wins),
    read once per folder."""

    def __init__(self) -> None:
        self._found: dict[Path, tuple[Path | None, dict[str, Any]]] = {}

    def of(self, source: SourceFile) -> tuple[Path | None, dict[str, Any]]:
        """The file that applies to ``source`` (None: no file) and its parameters."""
        return self._lookup(source.root, source.path.parent)

    def _lookup(self, root: Path, folder: Path) -> tuple[Path | None, dict[str, Any]]:
        if folder not in self._found:
            candidate = folder / FOLDER_PARAMS_FILE
            if candidate.is_file():
                self._found[folder] = (candidate, _read_params(candidate))
            elif folder == root or folder.parent == folder:
                self._found[folder] = (None, {})
            else:
                self._found[folder] = self._lookup(root, folder.parent)
        return self._found[folder]


def _read_params(path: Path) -> dict[str, Any]:
    try:
        params = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MappingError(f"{path}: {exc}") from exc
    if not isinstance(params, dict):
        raise MappingError(f"{path}: expected a JSON object of parameters")
    return params


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def file_key(mapping: Mapping, params: dict[str, Any], data: bytes) -> str:
    """A digest of what a file's task is made of (the mapping, its parameters, the file's
    bytes): the same file with the same parameters has the same key in any run."""
    what = {name: value for name, value in mapping.describe().items() if name != "params"}
    digest = hashlib.sha256(_canonical([what, params]).encode())
    digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()[:40]
