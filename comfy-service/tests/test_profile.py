"""The node's profile as learnt from ComfyUI's events and log lines: a clock under test control,
ComfyUI's line formats, no I/O."""

from collections.abc import Iterable
from typing import Any

import pytest

from comfy_service.profile import (
    MAX_MODEL_FILES,
    MAX_SHAPES,
    MB,
    FinishedRun,
    ModelProfiler,
    loaded_mb,
)
from comfy_service.speed import SpeedMeter
from comfy_shared.models import NodeProfile, NodeSpeed
from comfy_shared.workload import graph_shape

SDXL = "juggernautXL_v8Rundiffusion.safetensors"
SD15 = "v1-5-pruned-emaonly-fp16.safetensors"
LORA = "add-detail-xl.safetensors"
LOADERS = {
    "CheckpointLoaderSimple": {"ckpt_name": [SDXL, SD15]},
    "LoraLoader": {"lora_name": [LORA]},
}
SPEED = NodeSpeed(seconds_per_step=0.2, overhead_s=1.0, tasks_measured=3)
"""A hot run of 20 steps takes 5 s by this speed."""
GB = 1024 * MB


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def txt2img(checkpoint: str = SDXL, *, steps: int = 20, lora: str | None = None) -> dict[str, Any]:
    graph: dict[str, Any] = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "steps": steps, "seed": 1}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "a"}},
    }
    if lora is not None:
        graph["10"] = {"class_type": "LoraLoader", "inputs": {"lora_name": lora, "model": ["4", 0]}}
    return graph


MODEL_FREE = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "b"}},
}


def loaded_line(mb: float, *, partially: bool = False) -> str:
    """A line of comfy/model_patcher.py."""
    if partially:
        return f"loaded partially {mb + 100:.1f} {mb:.1f} 0"
    return f"loaded completely {20000:.1f} {mb:.1f} True"


class Node:
    """A profiler, its speed meter and their clock."""

    def __init__(self, initial: NodeProfile | None = None, speed: NodeSpeed | None = SPEED):
        self.clock = Clock()
        self.speed = SpeedMeter(speed, clock=self.clock)
        self.switches: list[tuple[str, float]] = []
        self.profiler = ModelProfiler(
            self.speed, initial, clock=self.clock,
            on_switch=lambda name, s: self.switches.append((name, s)),
        )  # fmt: skip
        self.runs = 0

    def run(
        self,
        graph: dict[str, Any],
        run_s: float,
        *,
        cached: Iterable[str] = (),
        lines: Iterable[str] = (),
        succeeded: bool = True,
    ) -> FinishedRun | None:
        self.runs += 1
        prompt_id = f"p{self.runs}"
        self.profiler.started(prompt_id, graph, LOADERS)
        self.profiler.cached(prompt_id, list(cached))
        for line in lines:
            self.profiler.log_line(line)
        self.clock.now += run_s
        if succeeded:
            self.profiler.succeeded(prompt_id)
        return self.profiler.ended(prompt_id)

    @property
    def profile(self) -> NodeProfile:
        return self.profiler.current()


@pytest.mark.parametrize(
    ("line", "mb"),
    [
        ("loaded completely 21538.9 4897.0 True", 4897.0),
        ("loaded partially 5000.0 4120.5 12", 4120.5),
        ("loaded completely -100.0 159.6 False", 159.6),
        ("  loaded completely 9.0 1.0 True\n", 1.0),
        ("loaded completely; 21538.87 MB usable, 4897.05 MB loaded, full load: True", 4897.05),
        ("Requested to load SDXL", None),
        ("got prompt", None),
        ("loaded completely", None),
        ("model weight dtype torch.float16, manual cast: None", None),
    ],
)
def test_the_mbs_a_comfyui_line_says_were_loaded(line: str, mb: float | None) -> None:
    assert loaded_mb(line) == mb


def test_a_cold_run_makes_its_checkpoint_resident_and_teaches_its_switch_cost() -> None:
    node = Node()
    finished = node.run(txt2img(), 15.0)  # 5 s of work by the node's speed, 10 s of loading
    assert finished == FinishedRun(succeeded=True, loaded=frozenset({SDXL}))
    assert not finished.hot
    assert node.profile.model_dump() == {
        "resident": [SDXL],
        "load_s": {SDXL: pytest.approx(10.0)},
        "shape_run_s": {},
        "shape_vram_bytes": {},
        "model_bytes": {},
    }


def test_a_hot_run_teaches_its_shape_and_becomes_the_baseline_of_a_switch() -> None:
    node = Node()
    node.run(txt2img(), 15.0)
    finished = node.run(txt2img(), 6.0)  # resident: its 6 s are the shape's run time
    assert finished is not None
    assert finished.hot
    node.profiler.reconnected()  # ComfyUI restarted: the checkpoint is loaded again
    node.run(txt2img(), 14.0)  # 8 s more than the shape's 6 s
    profile = node.profile
    assert profile.shape_run_s == {graph_shape(txt2img()): pytest.approx(6.0)}
    assert profile.load_s == {SDXL: pytest.approx((10.0 + 8.0) / 2)}


def test_without_any_known_hot_time_the_whole_run_counts_as_the_switch() -> None:
    node = Node(speed=None)
    node.run(txt2img(), 15.0)
    assert node.profile.load_s == {SDXL: pytest.approx(15.0)}


def test_a_loader_comfyui_reports_cached_loaded_nothing() -> None:
    node = Node()
    node.profiler.reconnected()  # nothing believed resident...
    finished = node.run(txt2img(), 5.5, cached=["4"])  # ...but ComfyUI still had it
    assert finished == FinishedRun(succeeded=True, loaded=frozenset())
    profile = node.profile
    assert profile.resident == [SDXL]
    assert profile.load_s == {}
    assert profile.shape_run_s == {graph_shape(txt2img()): pytest.approx(5.5)}


def test_models_are_ordered_least_recently_used_first() -> None:
    node = Node()
    node.run(txt2img(SDXL), 15.0)
    node.run(txt2img(SD15, lora=LORA), 15.0)
    node.run(txt2img(SDXL), 5.0)
    assert node.profile.resident == [LORA, SD15, SDXL]


def test_the_mbs_loaded_during_a_run_are_its_shapes_vram_and_a_lone_files_size() -> None:
    node = Node()
    lines = [
        "got prompt",
        "Requested to load SDXLClipModel",
        loaded_line(1560.8),
        "Requested to load SDXL",
        loaded_line(4897.0, partially=True),
        "Requested to load AutoencoderKL",
        loaded_line(159.6),
        "Prompt executed in 14.98 seconds",
    ]
    node.run(txt2img(), 15.0, lines=lines)
    node.run(txt2img(), 5.0, lines=[loaded_line(159.6)])  # the VAE moved back: not a max
    expected = round((1560.8 + 4897.0 + 159.6) * MB)
    assert node.profile.shape_vram_bytes == {graph_shape(txt2img()): expected}
    assert node.profiler.learned().model_bytes == {SDXL: expected}


def test_a_run_loading_two_files_teaches_no_file_size_and_splits_its_switch() -> None:
    node = Node()
    node.run(txt2img(SD15, lora=LORA), 17.0, lines=[loaded_line(2000.0)])  # 12 s of switch
    assert node.profiler.learned().model_bytes == {}
    assert node.profile.load_s == {SD15: pytest.approx(6.0), LORA: pytest.approx(6.0)}
    node.profiler.reconnected()
    node.run(txt2img(SD15, lora=LORA), 11.0)  # 6 s, split as believed: equal again
    assert node.profile.load_s == {SD15: pytest.approx(4.5), LORA: pytest.approx(4.5)}


def test_each_load_learned_is_reported_with_its_seconds() -> None:
    node = Node()
    node.run(txt2img(SD15, lora=LORA), 17.0)  # 12 s of switch, split equally
    node.run(txt2img(SD15, lora=LORA), 5.0)  # resident: no load
    node.run(txt2img(), 9.0, succeeded=False)  # loads SDXL, but a failed run teaches nothing
    assert [(name, round(s, 6)) for name, s in node.switches] == [(LORA, 6.0), (SD15, 6.0)]


def test_a_switch_is_split_in_proportion_to_what_each_file_is_believed_to_cost() -> None:
    node = Node()
    node.run(txt2img(SD15), 13.0)  # SD15: 8 s
    node.run(txt2img(SD15, lora=LORA), 5.0 + 2.0)  # the LoRA alone: 2 s
    node.profiler.reconnected()
    node.run(txt2img(SD15, lora=LORA), 5.0 + 5.0)  # 5 s over 8:2 -> 4 s and 1 s
    assert node.profile.load_s == {
        SD15: pytest.approx((8.0 + 4.0) / 2),
        LORA: pytest.approx((2.0 + 1.0) / 2),
    }


def test_run_times_average_the_first_four_then_follow_the_newest() -> None:
    node = Node()
    for run_s in (1.0, 4.0, 8.0, 6.0):
        node.run(MODEL_FREE, run_s)  # no model: every run is hot
    shape = graph_shape(MODEL_FREE)
    assert node.profile.shape_run_s[shape] == pytest.approx(4.75)
    node.run(MODEL_FREE, 10.0)
    assert node.profile.shape_run_s[shape] == pytest.approx(4.75 + 0.25 * (10.0 - 4.75))


def test_a_failed_run_moves_its_models_but_teaches_no_time() -> None:
    node = Node()
    finished = node.run(txt2img(), 3.0, lines=[loaded_line(1000.0)], succeeded=False)
    assert finished == FinishedRun(succeeded=False, loaded=frozenset({SDXL}))
    assert node.profile == NodeProfile(
        resident=[SDXL],
        shape_vram_bytes={graph_shape(txt2img()): 1000 * MB},
        model_bytes={SDXL: 1000 * MB},  # loaded alone: its size
    )


def test_a_run_served_whole_from_the_cache_teaches_nothing() -> None:
    node = Node()
    node.run(txt2img(), 15.0)
    node.run(txt2img(), 0.01, cached=["4", "3", "9"])
    assert graph_shape(txt2img()) not in node.profile.shape_run_s


def test_a_reconnection_forgets_the_residency_and_the_run_in_progress() -> None:
    node = Node()
    node.run(txt2img(), 15.0)
    node.profiler.started("lost", txt2img(SD15), LOADERS)
    node.profiler.reconnected()
    node.clock.now += 30.0
    node.profiler.succeeded("lost")
    assert node.profiler.ended("lost") is None
    profile = node.profile
    assert profile.resident == []
    assert profile.load_s == {SDXL: pytest.approx(10.0)}


def test_before_the_capabilities_are_known_a_run_is_not_followed() -> None:
    node = Node()
    node.profiler.started("early", txt2img(), None)
    node.profiler.succeeded("early")
    assert node.profiler.ended("early") is None
    assert node.profile == NodeProfile()


def sized_node() -> Node:
    """SDXL (6 GB) then SD15 (2 GB) resident, each size learned from a run loading it alone."""
    node = Node()
    node.run(txt2img(SDXL), 15.0, lines=[loaded_line(6 * 1024)])
    node.run(txt2img(SD15), 15.0, lines=[loaded_line(2 * 1024)])
    return node


@pytest.mark.parametrize(
    ("total", "in_use", "resident"),
    [
        (24 * GB, 8 * GB + 300 * MB, [SDXL, SD15]),  # both there (and ComfyUI's buffers)
        (24 * GB, 8 * GB - 300 * MB, [SDXL, SD15]),  # rounding and partial loads: not "clearly"
        (24 * GB, 2 * GB + 300 * MB, [SD15]),  # the least recently used was evicted
        (24 * GB, 1 * GB, []),  # even SD15 does not fit in what is used
        (24 * GB, 0, []),  # nothing in use: nothing loaded
        (24 * GB, 100 * MB, []),
    ],
)
def test_evictions_are_inferred_from_the_vram_in_use(
    total: int, in_use: int, resident: list[str]
) -> None:
    node = sized_node()
    node.profiler.observe_vram(total, total - in_use)
    assert node.profile.resident == resident


def test_models_of_unknown_size_stay_resident_until_about_no_vram_is_used() -> None:
    node = Node()
    node.run(txt2img(SDXL), 15.0)  # no log line: its size is unknown
    node.profiler.observe_vram(24 * GB, 23 * GB)
    assert node.profile.resident == [SDXL]
    node.profiler.observe_vram(None, None)  # no GPU reported: nothing to infer
    assert node.profile.resident == [SDXL]
    node.profiler.observe_vram(24 * GB, 24 * GB - 50 * MB)  # about nothing in use
    assert node.profile.resident == []


def numbered(index: int) -> dict[str, Any]:
    """A model-free graph of its own shape."""
    return MODEL_FREE | {"3": {"class_type": "ImageBlur", "inputs": {"blur_radius": index}}}


def test_the_least_recently_run_shapes_are_forgotten() -> None:
    node = Node()
    for index in range(MAX_SHAPES + 10):
        node.run(numbered(index), 1.0)
    node.run(numbered(0), 1.0)  # run again: the most recent
    shapes = list(node.profile.shape_run_s)
    assert len(shapes) == MAX_SHAPES
    assert shapes[-1] == graph_shape(numbered(0))
    assert graph_shape(numbered(1)) not in shapes
    assert graph_shape(numbered(11)) in shapes


def test_the_least_recently_used_model_files_are_forgotten() -> None:
    many = [f"model-{index:03}.safetensors" for index in range(MAX_MODEL_FILES + 10)]
    node = Node()
    loaders = {"CheckpointLoaderSimple": {"ckpt_name": many}}
    for name in many:
        node.profiler.started(name, txt2img(name), loaders)
        node.clock.now += 15.0
        node.profiler.succeeded(name)
        node.profiler.ended(name)
    profile = node.profile
    assert list(profile.load_s) == many[-MAX_MODEL_FILES:]
    assert profile.resident == many[-MAX_MODEL_FILES:]


def test_what_is_learned_survives_a_restart_and_the_residency_does_not() -> None:
    node = sized_node()
    node.run(txt2img(SDXL), 5.0)
    stored = node.profiler.learned().model_dump_json()

    restarted = Node(NodeProfile.model_validate_json(stored))
    assert NodeProfile.model_validate_json(stored).resident == []  # a plain reader's view
    assert restarted.profile == node.profile.model_copy(update={"resident": []})
    assert restarted.profiler.learned() == node.profiler.learned()
    # Restored averages go on with the newest sample's usual weight.
    restarted.run(txt2img(SDXL), 9.0, cached=["4"])
    assert restarted.profile.shape_run_s[graph_shape(txt2img())] == pytest.approx(5 + 0.25 * 4)
    # The sizes came back too: an eviction is still inferred.
    restarted.run(txt2img(SD15), 15.0)
    restarted.profiler.observe_vram(24 * GB, 22 * GB)
    assert restarted.profile.resident == [SD15]
