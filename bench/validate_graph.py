"""What checking a graph at the door costs: the balancer validates every submitted graph
against its fleet's object_info (``comfy_shared.comfyui.validation``).

In this process, no server: validates the shipped workflow templates (their graphs as saved)
and synthetic graphs of 100 and 500 nodes (a chain, and many small branches) against the
emulator's object_info, then against a synthetic large install (``--classes`` classes, each
with a combo of file names, about the size of a real ComfyUI with many node packs), and
prints the time per graph. Then what a large install's object_info costs when it changes
(never per submit): packing it (the service), unpacking and merging two (the balancer).

    ./dev bench validate_graph --repeat 300
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from importlib.resources import files
from pathlib import Path
from typing import Any

from _common import percentile, print_grid

from comfy_balancer.object_info_merge import MergeMode, merge_object_info
from comfy_emulator.config import default_models
from comfy_emulator.files import make_folders
from comfy_emulator.nodes import build_registry
from comfy_emulator.nodes.base import NodeEnv
from comfy_emulator.workflows import solid_image
from comfy_shared.comfyui.validation import validate_prompt
from comfy_shared.node_object_info import PackedObjectInfo

JsonDict = dict[str, Any]
PACK = PackedObjectInfo.pack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=300, help="validations per graph")
    parser.add_argument("--classes", type=int, default=2000, help="classes of the large install")
    args = parser.parse_args()

    emulator = emulator_object_info()
    large = large_install(emulator, args.classes)
    graphs = {**templates(), **synthetic_graphs()}
    rows = []
    for name, graph in graphs.items():
        for label, object_info in (("emulator", emulator), ("large", large)):
            samples, ok = time_validation(graph, object_info, args.repeat)
            rows.append(_row(name, len(graph), label, ok, samples))
    header = ("graph", "nodes", "object_info", "valid", "p50 ms", "p99 ms", "graphs/s")
    print_grid(header, rows)
    print()
    print_grid(("when an object_info changes", "size", "ms"), change_costs(large))


def emulator_object_info() -> JsonDict:
    with tempfile.TemporaryDirectory() as tmp:
        folders = make_folders(*(str(Path(tmp) / d) for d in ("in", "out", "tmp")))
        env, registry = NodeEnv(folders, default_models()), build_registry()
        info = {name: registry.object_info(name, env) for name in registry.names()}
    decoded: JsonDict = json.loads(json.dumps(info))  # as a client gets it over HTTP
    return decoded


def large_install(base: JsonDict, classes: int, files_per_class: int = 10) -> JsonDict:
    """The emulator's classes, then more like them until ``classes``, each with a combo of
    ``files_per_class`` model-like file names (a real install's lists of models and presets)."""
    large = dict(base)
    names = list(base)
    for index in range(classes - len(base)):
        template = base[names[index % len(names)]]
        required = dict(template["input"].get("required", {}))
        options = [f"pack_{index}/variant-{n:03}-fp16.safetensors" for n in range(files_per_class)]
        required["preset"] = [options, {"tooltip": "A file of this pack."}]
        inputs = {**template["input"], "required": required}
        large[f"Pack{index}Node"] = {**template, "input": inputs}
    return large


def templates() -> dict[str, JsonDict]:
    folder = files("comfy_shared") / "templates"
    return {
        f"template {entry.name.removesuffix('.json')}": json.loads(entry.read_text())
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".json")
    }


def synthetic_graphs() -> dict[str, JsonDict]:
    return {
        "chain of 100": chain(100),
        "chain of 500": chain(500),
        "250 branches (500 nodes)": branches(250),
    }


def chain(count: int) -> JsonDict:
    """EmptyImage -> ``count`` - 2 ImageBlur -> SaveImage, nodes "0" to ``count`` - 1."""
    graph: JsonDict = {"0": solid_image()["1"]}
    for index in range(1, count - 1):
        inputs = {"image": [str(index - 1), 0], "blur_radius": 3, "sigma": 1.0}
        graph[str(index)] = {"class_type": "ImageBlur", "inputs": inputs}
    save = {"images": [str(count - 2), 0], "filename_prefix": "chain"}
    graph[str(count - 1)] = {"class_type": "SaveImage", "inputs": save}
    return graph


def branches(count: int) -> JsonDict:
    """``count`` independent EmptyImage -> SaveImage pairs: 2 x ``count`` nodes, as many
    outputs."""
    graph: JsonDict = {}
    for index in range(count):
        pair = solid_image(f"b{index}")
        graph[f"{index}.1"] = pair["1"]
        inputs = {**pair["3"]["inputs"], "images": [f"{index}.1", 0]}
        graph[f"{index}.3"] = {**pair["3"], "inputs": inputs}
    return graph


def time_validation(
    graph: JsonDict, object_info: JsonDict, repeat: int
) -> tuple[list[float], bool]:
    ok = validate_prompt(graph, object_info).ok
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        validate_prompt(graph, object_info)
        samples.append((time.perf_counter() - started) * 1000)
    return samples, ok


def change_costs(large: JsonDict) -> list[tuple[str, str, str]]:
    """The other install: one class more, one checkpoint more (so the loader merges)."""
    loader = large["CheckpointLoaderSimple"]
    required = loader["input"]["required"]
    more = {**required, "ckpt_name": [[*required["ckpt_name"][0], "x.safetensors"]]}
    other = {
        **large,
        "OnlyOnTheOtherNode": large["SaveImage"],
        "CheckpointLoaderSimple": {**loader, "input": {**loader["input"], "required": more}},
    }
    packed = PackedObjectInfo.pack(large)
    size = f"{packed.json_bytes / 1e6:.2f} MB JSON, {len(packed.data) / 1e3:.0f} KB stored"

    def merged(mode: MergeMode) -> Callable[[], object]:
        return lambda: merge_object_info([large, other], mode)

    return [
        ("pack (service: JSON, hash, zlib, base64)", size, _ms(partial(PACK, large))),
        ("unpack (balancer: base64, zlib, hash, parse)", "", _ms(packed.unpack)),
        ("merge two installs, union", "", _ms(merged("union"))),
        ("merge two installs, intersection", "", _ms(merged("intersection"))),
    ]  # fmt: skip


def _ms(work: Callable[[], object], repeat: int = 5) -> str:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        samples.append((time.perf_counter() - started) * 1000)
    return f"{statistics.median(samples):.1f}"


def _row(name: str, nodes: int, label: str, ok: bool, samples: list[float]) -> tuple[str, ...]:
    p50 = percentile(samples, 50)
    return (
        name, str(nodes), label, "yes" if ok else "no",
        f"{p50:.3f}", f"{percentile(samples, 99):.3f}", f"{1000 / p50:,.0f}",
    )  # fmt: skip


if __name__ == "__main__":
    main()
