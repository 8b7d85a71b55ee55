"""What a run will do with each scanned file: its name in the manifest, where its outputs go,
its parameters and its key; and which of them need no work.

Outputs mirror the input tree under the output root: ``in/a/b/photo.jpg`` gives
``out/a/b/photo.png`` (the extension is the output's own), further outputs of the same task
``photo-1.png``, ``photo-2.png``... With several roots each root's tree goes under a folder
named after the root (``out/in/a/b/photo.png``). Two images of one folder that differ only
by extension keep it in their outputs' names (``photo.jpg.png``, ``photo.webp.png``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from comfy_stack.batch.manifest import FileRecord
from comfy_stack.batch.mapping import FolderParams, Mapping, file_key
from comfy_stack.batch.scan import SourceFile


@dataclass(frozen=True)
class WorkItem:
    source: SourceFile
    name: str
    """The file's name in the manifest and the summary: its path below the output root."""
    stem: PurePosixPath
    """Its outputs' path below the output root, without extension."""
    params: dict[str, Any]
    key: str

    def output_name(self, index: int, filename: str) -> str:
        """Where output ``index`` (named ``filename`` by ComfyUI) goes, below the root."""
        suffix = PurePosixPath(filename).suffix
        stem = self.stem if index == 0 else self.stem.with_name(f"{self.stem.name}-{index}")
        return str(stem.with_name(stem.name + suffix))


@dataclass
class Plan:
    todo: list[WorkItem] = field(default_factory=list)
    done: list[WorkItem] = field(default_factory=list)
    """Done by an earlier run (same key, outputs still there)."""
    given_up: list[tuple[WorkItem, FileRecord]] = field(default_factory=list)
    """Failed for good earlier: a final error, or every attempt used."""
    conflicts: list[Path] = field(default_factory=list)
    """Existing files that outputs of ``todo`` would replace."""


def make_items(
    files: Sequence[SourceFile], mapping: Mapping, roots: Sequence[Path] = ()
) -> list[WorkItem]:
    """A work item per file: the mapping's parameters under its folder's ``batch.json``,
    checked by the mapping (MappingError before anything is sent). ``roots``: all the
    batch's, when ``files`` are some of them (they name the output folders)."""
    labels = _root_labels(list(roots) or sorted({source.root for source in files}))
    stems = _stems(files, labels)
    folder_params = FolderParams()
    items = []
    for source in files:
        params_file, folder = folder_params.of(source)
        where = str(params_file) if params_file else "--param"
        params = mapping.check(mapping.params | folder, where)
        name = str(labels[source.root] / PurePosixPath(source.relative.as_posix()))
        key = file_key(mapping, params, source.path.read_bytes())
        items.append(WorkItem(source, name, stems[source], params, key))
    return items


def make_plan(
    items: Sequence[WorkItem],
    records: dict[str, FileRecord],
    output_root: Path,
    *,
    retries: int,
    overwrite: bool,
) -> Plan:
    plan = Plan()
    listing = _FolderListing(output_root)
    for item in items:
        record = records.get(item.name)
        if record is not None and record.key == item.key:
            if record.state == "done" and all((output_root / o).exists() for o in record.outputs):
                plan.done.append(item)
                continue
            if record.state == "failed" and (record.final or record.attempt > retries):
                plan.given_up.append((item, record))
                continue
        plan.todo.append(item)
        if not overwrite:
            plan.conflicts += listing.taken(item, ours=_ours(record, item, output_root))
    return plan


def _ours(record: FileRecord | None, item: WorkItem, output_root: Path) -> set[Path]:
    """Files a run of this item was moving into place when it stopped: its own to replace."""
    if record is None or record.key != item.key or record.state != "saving":
        return set()
    return {output_root / name for name in record.outputs}


class _FolderListing:
    """The files of each output folder, read once."""

    def __init__(self, output_root: Path) -> None:
        self._root = output_root
        self._names: dict[Path, list[str]] = {}

    def taken(self, item: WorkItem, ours: set[Path]) -> list[Path]:
        folder = self._root / item.stem.parent
        if folder not in self._names:
            self._names[folder] = (
                sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
            )
        pattern = re.compile(rf"{re.escape(item.stem.name)}(-\d+)?\.[^.]+")
        found = [folder / name for name in self._names[folder] if pattern.fullmatch(name)]
        return [path for path in found if path not in ours]


def _root_labels(roots: list[Path]) -> dict[Path, PurePosixPath]:
    if len(roots) == 1:
        return {roots[0]: PurePosixPath()}
    labels: dict[Path, PurePosixPath] = {}
    used: Counter[str] = Counter()
    for root in roots:
        base = root.resolve().name or "root"
        used[base] += 1
        labels[root] = PurePosixPath(base if used[base] == 1 else f"{base}-{used[base]}")
    return labels


def _stems(
    files: Sequence[SourceFile], labels: dict[Path, PurePosixPath]
) -> dict[SourceFile, PurePosixPath]:
    plain = {
        source: labels[source.root] / PurePosixPath(source.relative.with_suffix("").as_posix())
        for source in files
    }
    counts = Counter(plain.values())
    return {
        source: stem if counts[stem] == 1 else stem.with_name(source.relative.name)
        for source, stem in plain.items()
    }
