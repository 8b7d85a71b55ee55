"""Finding a batch's images: roots, folder keywords, extensions and the bytes behind them."""

from pathlib import Path

import pytest

from comfy_stack.batch.scan import ScanError, ScanFilter, SourceFile, scan, sniff
from comfy_testkit.image_files import image_bytes, write_image, write_tree


def relative(result_files: list[SourceFile]) -> list[str]:
    return [source.relative.as_posix() for source in result_files]


def test_every_image_under_several_roots_is_found_in_path_order(tmp_path: Path) -> None:
    write_tree(tmp_path / "one", ["b.png", "a/x.jpg", "a/deep/y.webp", "notes.txt"])
    write_tree(tmp_path / "two", ["z.jpeg"])

    result = scan([tmp_path / "one", tmp_path / "two"])

    assert relative(result.files) == ["b.png", "a/x.jpg", "a/deep/y.webp", "z.jpeg"]
    assert [source.image_format for source in result.files] == ["png", "jpeg", "webp", "jpeg"]
    assert result.rejected == []


def test_folder_keywords_include_and_exclude_ignoring_case(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        ["top.png", "Portraits/p.png", "portraits/old-Drafts/d.png", "landscapes/l.png",
         "people/portrait-2024/q.png"],
    )  # fmt: skip
    kept = scan([tmp_path], ScanFilter(include_folders=("portrait",), exclude_folders=("draft",)))
    assert relative(kept.files) == ["Portraits/p.png", "people/portrait-2024/q.png"]


def test_extensions_choose_the_file_types(tmp_path: Path) -> None:
    write_tree(tmp_path, ["a.png", "b.JPG", "c.webp"])
    assert relative(scan([tmp_path], ScanFilter(extensions=(".jpg",))).files) == ["b.JPG"]
    with pytest.raises(ScanError, match=r"\.gif"):
        scan([tmp_path], ScanFilter(extensions=(".gif",)))


def test_a_file_whose_bytes_do_not_match_its_extension_is_rejected_and_reported(
    tmp_path: Path,
) -> None:
    write_image(tmp_path / "good.png")
    (tmp_path / "jpeg-inside.png").write_bytes(image_bytes(".jpg"))
    (tmp_path / "text.jpg").write_text("not an image at all")
    (tmp_path / "empty.webp").write_bytes(b"")

    result = scan([tmp_path])

    assert relative(result.files) == ["good.png"]
    reasons = {path.name: reason for path, reason in ((r.path, r.reason) for r in result.rejected)}
    assert reasons == {
        "empty.webp": "not a WEBP file (its bytes are no image)",
        "jpeg-inside.png": "not a PNG file (its bytes are JPEG)",
        "text.jpg": "not a JPEG file (its bytes are no image)",
    }


def test_hidden_entries_and_skipped_folders_are_not_walked(tmp_path: Path) -> None:
    write_tree(tmp_path, ["a.png", ".hidden.png", ".cache/b.png", "out/c.png"])
    result = scan([tmp_path], ScanFilter(skip=(tmp_path / "out",)))
    assert relative(result.files) == ["a.png"]


def test_a_root_that_is_not_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ScanError, match="not a folder"):
        scan([tmp_path / "missing"])


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (image_bytes(".png")[:12], "png"),
        (image_bytes(".jpg")[:12], "jpeg"),
        (image_bytes(".webp")[:12], "webp"),
        (b"RIFF\x00\x00\x00\x00WAVE", None),  # a RIFF that is a sound
        (b"GIF89a", None),
    ],
)
def test_sniff_reads_the_signature(header: bytes, expected: str | None) -> None:
    assert sniff(header) == expected
