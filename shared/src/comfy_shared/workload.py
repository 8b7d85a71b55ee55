"""How much work a graph is, and how long a node takes for it.

The unit of work is the sampler step: a graph's size is the sum of the integer ``steps``
inputs of its nodes (KSampler, KSamplerAdvanced, BasicScheduler, StoryDiffusion's sampler...).
Steps dominate a diffusion graph's run time and are known before it runs; resolution and batch
size change the cost of a step too, which the per-node step time absorbs as an average.
"""

from __future__ import annotations

from collections.abc import Mapping
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
