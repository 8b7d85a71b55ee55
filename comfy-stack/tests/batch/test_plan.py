"""Names and parameters of each file: outputs mirror the tree, roots and clashes named apart,
the nearest batch.json applies."""

from pathlib import Path

import pytest

from comfy_stack.batch.mapping import GraphMapping, MappingError
from comfy_stack.batch.plan import make_items
from comfy_stack.batch.scan import scan
from comfy_testkit.image_files import write_tree

GRAPH = {"10": {"class_type": "LoadImage", "inputs": {}}, "6": {"class_type": "T", "inputs": {}}}


def mapping(**params: object) -> GraphMapping:
    return GraphMapping(GRAPH, "10", params=dict(params))


def test_outputs_mirror_the_tree_and_files_differing_by_extension_keep_it(tmp_path: Path) -> None:
    write_tree(tmp_path / "in", ["a/b/photo.jpg", "a/b/photo.png", "a/c.webp"])
    items = make_items(scan([tmp_path / "in"]).files, mapping())
    names = {item.name: item.output_name(0, "ComfyUI_00001_.png") for item in items}
    assert names == {
        "a/b/photo.jpg": "a/b/photo.jpg.png",
        "a/b/photo.png": "a/b/photo.png.png",
        "a/c.webp": "a/c.png",
    }
    webp = next(item for item in items if item.name == "a/c.webp")
    assert webp.output_name(2, "clip.webp") == "a/c-2.webp"


def test_several_roots_go_under_their_names_even_when_they_clash(tmp_path: Path) -> None:
    write_tree(tmp_path / "x" / "shots", ["one.png"])
    write_tree(tmp_path / "y" / "shots", ["one.png"])
    write_tree(tmp_path / "studio", ["two.png"])
    roots = [tmp_path / "x" / "shots", tmp_path / "y" / "shots", tmp_path / "studio"]
    items = make_items(scan(roots).files, mapping(), roots)
    assert [item.name for item in items] == ["shots/one.png", "shots-2/one.png", "studio/two.png"]


def test_the_nearest_batch_json_applies_over_the_batch_parameters(tmp_path: Path) -> None:
    write_tree(tmp_path, ["top.png", "a/x.png", "a/b/y.png", "a/b/c/z.png"])
    (tmp_path / "a" / "batch.json").write_text('{"6.text": "from a"}')
    (tmp_path / "a" / "b" / "batch.json").write_text('{"6.seed": 3}')
    items = make_items(scan([tmp_path]).files, mapping(**{"6.text": "everywhere"}))
    params = {item.name: item.params for item in items}
    assert params == {
        "top.png": {"6.text": "everywhere"},
        "a/x.png": {"6.text": "from a"},
        "a/b/y.png": {"6.text": "everywhere", "6.seed": 3},  # only the nearest file counts
        "a/b/c/z.png": {"6.text": "everywhere", "6.seed": 3},
    }
    assert len({item.key for item in items}) == 4
    (tmp_path / "a" / "batch.json").write_text('["not", "an object"]')
    with pytest.raises(MappingError, match="expected a JSON object"):
        make_items(scan([tmp_path]).files, mapping())
