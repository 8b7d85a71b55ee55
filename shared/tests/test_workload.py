"""How much work a graph is: the literal sampler steps it asks for, and its shape."""

from typing import Any

import pytest

from comfy_shared.models import NodeSpeed
from comfy_shared.workload import expected_run_s, graph_models, graph_shape, sampler_steps
from comfy_testkit import graphs


def test_counts_the_steps_of_every_sampler() -> None:
    graph = graphs.txt2img("w", steps=12)
    assert sampler_steps(graph) == 12
    graph["90"] = {"class_type": "KSamplerAdvanced", "inputs": {"steps": 8, "model": ["4", 0]}}
    assert sampler_steps(graph) == 20


@pytest.mark.parametrize(
    "steps",
    [["5", 0], True, -3, 0, "20", None],  # a link, a bool, nonsense: not a known count
)
def test_ignores_what_is_not_a_literal_step_count(steps: object) -> None:
    graph = {"1": {"class_type": "KSampler", "inputs": {"steps": steps}}}
    assert sampler_steps(graph) == 0


def test_a_graph_without_sampler_is_no_steps() -> None:
    assert sampler_steps(graphs.solid_image("w")) == 0
    assert sampler_steps({"1": "not a node", "2": {"inputs": []}}) == 0


def test_expected_run_time_is_overhead_plus_steps() -> None:
    speed = NodeSpeed(seconds_per_step=0.25, overhead_s=1.5, tasks_measured=4)
    assert expected_run_s(speed, 0) == 1.5
    assert expected_run_s(speed, 20) == 6.5


def test_a_graph_s_shape_ignores_its_texts_seeds_and_input_files() -> None:
    def graph(text: str, seed: int, steps: int, ckpt: str, image: str) -> dict[str, Any]:
        return {
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
            "2": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["1", 1]}},
            "3": {"class_type": "LoadImage", "inputs": {"image": image}},
            "4": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": steps}},
        }

    base = graph_shape(graph("a cat", 1, 20, "sdxl.safetensors", "a.png"))

    assert graph_shape(graph("a dog", 2, 20, "sdxl.safetensors", "b.png")) == base
    assert graph_shape(graph("a cat", 1, 30, "sdxl.safetensors", "a.png")) != base
    assert graph_shape(graph("a cat", 1, 20, "sd15.safetensors", "a.png")) != base


LOADERS = {
    "CheckpointLoaderSimple": {"ckpt_name": ["sdxl.safetensors", "sd15.safetensors"]},
    "LoraLoader": {"lora_name": ["detail.safetensors"]},
}


def test_graph_models_are_the_literal_values_of_the_loader_inputs_object_info_names() -> None:
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl.safetensors"}},
        "2": {"class_type": "LoraLoader", "inputs": {"lora_name": "detail.safetensors"}},
        "3": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl.safetensors"}},
        # sampler_name ends in _name but no object_info lists it as a loader input
        "4": {"class_type": "KSampler", "inputs": {"sampler_name": "euler", "steps": 20}},
        "5": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ["9", 0]}},
        "6": "not a node",
    }
    assert graph_models(graph, LOADERS) == ("detail.safetensors", "sdxl.safetensors")
    assert graph_models(graph, {}) == ()
