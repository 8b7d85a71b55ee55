"""folder_paths rules: annotated names and SaveImage file naming."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfy_emulator.files import PathEscapeError, make_folders, save_target, split_annotation


def test_split_annotation() -> None:
    assert split_annotation("a.png [output]") == ("a.png", "output")
    assert split_annotation("sub/a.png [temp]") == ("sub/a.png", "temp")
    assert split_annotation("a.png") == ("a.png", None)


def test_counter_continues_after_the_highest_existing_file(tmp_path: Path) -> None:
    root = str(make_folders(str(tmp_path), str(tmp_path), str(tmp_path)).output)
    for name in ("out_00001_.png", "out_00007_.png", "out_abc_.png", "outer_00009_.png"):
        Path(root, name).write_bytes(b"")
    target = save_target("out", root, 10, 10)
    assert (target.filename, target.counter, target.subfolder) == ("out", 8, "")


def test_prefix_directory_becomes_the_subfolder(tmp_path: Path) -> None:
    root = make_folders(str(tmp_path), str(tmp_path / "o"), str(tmp_path)).output
    target = save_target("jobs/abc/out", root, 10, 10)
    assert (target.subfolder, target.filename, target.counter) == ("jobs/abc", "out", 1)
    assert Path(target.folder).is_dir()


def test_size_variables_are_expanded(tmp_path: Path) -> None:
    root = make_folders(str(tmp_path), str(tmp_path / "o"), str(tmp_path)).output
    assert save_target("img_%width%x%height%", root, 640, 480).filename == "img_640x480"


def test_escaping_prefix_is_refused(tmp_path: Path) -> None:
    root = make_folders(str(tmp_path), str(tmp_path / "o"), str(tmp_path)).output
    with pytest.raises(PathEscapeError):
        save_target("../../evil", root, 1, 1)
