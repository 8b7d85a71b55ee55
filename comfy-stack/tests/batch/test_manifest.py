"""The manifest: a file's last line is its state, a torn line is ignored, opening compacts."""

from pathlib import Path

from comfy_stack.batch.manifest import MANIFEST_NAME, FileRecord, Manifest, read_manifest


def test_the_last_record_of_a_file_wins_and_reopening_keeps_one_line_each(tmp_path: Path) -> None:
    manifest = Manifest.open(tmp_path)
    first = FileRecord("a.png", "k1", "submitting", attempt=1)
    manifest.record(first)
    manifest.record(first.step("submitted", task_id="t1"))
    manifest.record(FileRecord("b.png", "k2", "submitting", attempt=1))
    manifest.record(first.step("done", task_id="t1", outputs=["a.png"]))
    manifest.close()

    records = read_manifest(tmp_path)
    assert records["a.png"] == FileRecord("a.png", "k1", "done", 1, "t1", ["a.png"])
    assert records["b.png"].state == "submitting"
    Manifest.open(tmp_path).close()
    assert len((tmp_path / MANIFEST_NAME).read_text().splitlines()) == 2
    assert read_manifest(tmp_path) == records


def test_a_line_torn_by_a_crash_is_ignored(tmp_path: Path) -> None:
    manifest = Manifest.open(tmp_path)
    manifest.record(FileRecord("a.png", "k1", "submitted", attempt=1, task_id="t1"))
    manifest.close()
    with (tmp_path / MANIFEST_NAME).open("a") as file:
        file.write('{"file": "a.png", "key": "k1", "state": "do')  # killed mid-write

    assert read_manifest(tmp_path)["a.png"].state == "submitted"
    Manifest.open(tmp_path).close()  # compacting drops the torn line
    assert read_manifest(tmp_path)["a.png"].task_id == "t1"
