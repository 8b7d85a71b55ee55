"""How much work a graph is, and how long a node takes for it.

The unit of work is the sampler step: a graph's size is the sum of the integer ``steps``
inputs of its nodes (KSampler, KSamplerAdvanced, BasicScheduler, StoryDiffusion's sampler...).
Steps dominate a diffusion graph's run time and are known before it runs; resolution and batch
size change the cost of a step too, which the per-node step time absorbs as an average.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from comfy_shared.models import NodeSpeed


def sampler_steps(prompt: Mapping[str, Any]) -> int:
    total = 0
    for node in prompt.values():
        inputs = node.get("inputs") if isinstance(node, Mapping) else None
        steps = inputs.get("steps") if isinstance(inputs, Mapping) else None
        # A linked input is a list ([node id, output]); only literal counts are known upfront.
        if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0:
            total += steps
    return total


def expected_run_s(speed: NodeSpeed, steps: int) -> float:
    return speed.overhead_s + steps * speed.seconds_per_step


# Inputs that name a model: they change what a graph costs. Other strings (prompt text, file
# names of inputs) do not, and seeds vary from run to run.
_MODEL_INPUT_SUFFIX = "_name"
_SEED_INPUTS = frozenset({"seed", "noise_seed"})


def graph_shape(prompt: Mapping[str, Any]) -> str:
    """What decides a graph's cost, as a short digest: its node classes, links and numbers
    (steps, sizes, batch), and the model files it loads; not its texts, seeds or input files.
    Two runs of a template with other prompts have one shape."""
    nodes = []
    for node_id in sorted(prompt):
        node = prompt[node_id]
        if not isinstance(node, Mapping):
            continue
        inputs = node.get("inputs")
        kept = {
            name: value
            for name, value in (inputs.items() if isinstance(inputs, Mapping) else ())
            if _costs(name, value)
        }
        nodes.append([node_id, node.get("class_type"), kept])
    return hashlib.sha256(json.dumps(nodes, sort_keys=True).encode()).hexdigest()[:24]


def _costs(name: str, value: Any) -> bool:
    if name in _SEED_INPUTS:
        return False
    if isinstance(value, str):
        return name.endswith(_MODEL_INPUT_SUFFIX)
    return True


def graph_models(
    prompt: Mapping[str, Any], loaders: Mapping[str, Mapping[str, Sequence[str]]]
) -> tuple[str, ...]:
    """The model files a graph loads, sorted: the literal values of its loader inputs.
    ``loaders`` is ``Capabilities.models`` (class -> loader input -> files), so what counts as
    a loader input is what ComfyUI's object_info says, not a guess from input names."""
    found: set[str] = set()
    for node in prompt.values():
        if not isinstance(node, Mapping):
            continue
        inputs = node.get("inputs")
        class_type = node.get("class_type")
        if not isinstance(inputs, Mapping) or not isinstance(class_type, str):
            continue
        for input_name in loaders.get(class_type, {}):
            value = inputs.get(input_name)
            if isinstance(value, str):
                found.add(value)
    return tuple(sorted(found))
