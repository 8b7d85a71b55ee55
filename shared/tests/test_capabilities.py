from comfy_shared.capabilities import missing_capabilities
from comfy_shared.models import Capabilities
from comfy_testkit import graphs

SDXL_NODE = Capabilities(
    node_classes=[
        "CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler",
        "VAEDecode", "SaveImage", "EmptyImage", "ImageInvert",
    ],
    models={"CheckpointLoaderSimple": {"ckpt_name": [graphs.SDXL_CHECKPOINT]}},
)  # fmt: skip


def test_a_node_with_every_class_and_model_can_run_the_graph() -> None:
    assert not missing_capabilities(graphs.txt2img("x"), SDXL_NODE)
    assert not missing_capabilities(graphs.solid_image("x"), SDXL_NODE)


def test_a_missing_model_file_is_named_with_its_loader() -> None:
    missing = missing_capabilities(graphs.txt2img("x", checkpoint="other.safetensors"), SDXL_NODE)
    assert missing.models == ["CheckpointLoaderSimple.ckpt_name = other.safetensors"]
    assert missing.node_classes == []


def test_missing_node_classes_are_listed_once() -> None:
    graph = {
        "1": {"class_type": "StoryDiffusion_Apply", "inputs": {}},
        "2": {"class_type": "StoryDiffusion_Apply", "inputs": {}},
        "3": {"class_type": "SaveImage", "inputs": {}},
    }
    assert missing_capabilities(graph, SDXL_NODE).node_classes == ["StoryDiffusion_Apply"]


def test_linked_model_inputs_are_not_checked() -> None:
    graph = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ["9", 0]}}}
    assert not missing_capabilities(graph, SDXL_NODE)
