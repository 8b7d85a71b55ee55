"""Cache signatures: what makes two nodes "the same" for the classic cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from comfy_emulator.cache import CacheEntry, OutputCache, SignatureBuilder
from comfy_emulator.config import default_models
from comfy_emulator.files import make_folders
from comfy_emulator.nodes import build_registry
from comfy_emulator.nodes.base import NodeEnv
from comfy_emulator.workflows import solid_image


@pytest.fixture
def env(tmp_path: Path) -> NodeEnv:
    folders = make_folders(str(tmp_path / "in"), str(tmp_path / "out"), str(tmp_path / "tmp"))
    folders.ensure()
    return NodeEnv(folders, default_models())


def keys(env: NodeEnv, prompt: dict[str, Any]) -> dict[str, Any]:
    return SignatureBuilder(build_registry(), env, prompt).all_keys()


def test_identical_graph_under_other_ids_has_the_same_keys(env: NodeEnv) -> None:
    first = solid_image()
    renamed = {
        "a": first["1"],
        "b": {"class_type": "ImageInvert", "inputs": {"image": ["a", 0]}},
        "c": {
            "class_type": "SaveImage",
            "inputs": {"images": ["b", 0], "filename_prefix": "emu/solid"},
        },
    }
    assert list(keys(env, first).values()) == list(keys(env, renamed).values())


def test_a_changed_constant_changes_the_node_and_its_descendants(env: NodeEnv) -> None:
    before, after = keys(env, solid_image(color=1)), keys(env, solid_image(color=2))
    assert [before[n] == after[n] for n in ("1", "2", "3")] == [False, False, False]
    other_prefix = keys(env, solid_image(color=1, prefix="other"))
    assert [before[n] == other_prefix[n] for n in ("1", "2", "3")] == [True, True, False]


def test_loadimage_key_follows_the_file_content(env: NodeEnv) -> None:
    path = Path(env.folders.input, "a.png")
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}}}
    path.write_bytes(b"one")
    first = keys(env, prompt)["1"]
    assert keys(env, prompt)["1"] == first
    path.write_bytes(b"two")
    assert keys(env, prompt)["1"] != first
    path.unlink()
    assert keys(env, prompt)["1"] != keys(env, prompt)["1"]  # unreadable: never cached


def test_unique_id_nodes_include_their_id(env: NodeEnv) -> None:
    image = {
        "class_type": "EmptyImage",
        "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
    }
    a = {"1": image, "2": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}}}
    b = {"1": image, "3": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}}}
    assert keys(env, a)["2"] != keys(env, b)["3"]


def test_cache_keeps_only_entries_the_new_prompt_uses(env: NodeEnv) -> None:
    cache = OutputCache()
    cache.set_prompt(keys(env, solid_image(color=1)))
    cache.set("1", CacheEntry(None, ("image",)))
    cache.set_prompt(keys(env, solid_image(color=2)))
    cache.set_prompt(keys(env, solid_image(color=1)))
    assert cache.get("1") is None  # evicted by the prompt in between
    disabled = OutputCache(enabled=False)
    disabled.set_prompt(keys(env, solid_image()))
    disabled.set("1", CacheEntry(None, ()))
    assert disabled.get("1") is None
