"""Can a node run a graph? Pure checks of a graph against a node's capabilities.

A node can run a graph when its ComfyUI offers every node class the graph uses and, for every
loader input (e.g. ``ckpt_name`` of ``CheckpointLoaderSimple``), lists the model file the
graph names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, Field

from comfy_shared.models import Capabilities


class MissingCapabilities(BaseModel):
    node_classes: list[str] = Field(default_factory=list)
    models: list[str] = Field(
        default_factory=list, description='"Class.input = file" for each model file not offered.'
    )

    def __bool__(self) -> bool:
        return bool(self.node_classes or self.models)


def missing_capabilities(
    prompt: Mapping[str, Any], capabilities: Capabilities
) -> MissingCapabilities:
    """What ``prompt`` needs that the node lacks (falsy when the node can run it)."""
    offered = capabilities.node_class_set
    missing = MissingCapabilities()
    for class_type, inputs in _nodes(prompt):
        if class_type not in offered:
            missing.node_classes.append(class_type)
            continue
        loaders = capabilities.models.get(class_type, {})
        for input_name, files in loaders.items():
            value = inputs.get(input_name)
            if isinstance(value, str) and value not in files:
                missing.models.append(f"{class_type}.{input_name} = {value}")
    missing.node_classes = sorted(set(missing.node_classes))
    missing.models = sorted(set(missing.models))
    return missing


def _nodes(prompt: Mapping[str, Any]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    for node in prompt.values():
        if isinstance(node, Mapping) and isinstance(node.get("class_type"), str):
            inputs = node.get("inputs")
            yield node["class_type"], inputs if isinstance(inputs, Mapping) else {}
