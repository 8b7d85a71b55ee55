"""The batch's memory, in the output root: what became of each file, so a rerun skips what is
done, resumes what was in flight and retries what failed.

``batch-manifest.jsonl`` holds one JSON object per line, each a step of one file::

    {"file": "a/photo.jpg", "key": "9f..", "state": "submitting", "attempt": 1}
    {"file": "a/photo.jpg", "key": "9f..", "state": "submitted", "attempt": 1, "task_id": "..."}
    {"file": "a/photo.jpg", "key": "9f..", "state": "saving", ..., "outputs": ["a/photo.png"]}
    {"file": "a/photo.jpg", "key": "9f..", "state": "done", ..., "outputs": ["a/photo.png"]}

A file's last line is its state. Each line is written whole and flushed before the step it
announces happens (``submitting`` before the request, whose idempotency key derives from
``key`` and ``attempt``; ``saving`` before outputs are moved into place), so a process that
dies anywhere, SIGKILL included, leaves a manifest a rerun can act on: a request possibly
sent is sent again under the same key (the same task answers), outputs being moved are known
to be the batch's own. A torn last line (a crash while writing it) is ignored. Opening
rewrites the file with one line per file (a temp file renamed over it), so it does not grow
with reruns.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Final, Literal

MANIFEST_NAME: Final = "batch-manifest.jsonl"

_UNSET: Final[tuple[object, ...]] = (None, [], False)
"""Values left out of a line (the defaults; 0 is False too, and attempt 0 is the default)."""

State = Literal["submitting", "submitted", "saving", "done", "failed"]


@dataclass(frozen=True)
class FileRecord:
    file: str
    key: str
    state: State
    attempt: int = 0
    task_id: str | None = None
    outputs: list[str] = field(default_factory=list)
    error: dict[str, str] | None = None
    final: bool = False
    """A failure no retry would mend (the request or the graph is invalid)."""

    def step(self, state: State, **changes: Any) -> FileRecord:
        return replace(self, state=state, **changes)


class Manifest:
    """The manifest of one output root; ``open`` it, ``record`` steps, ``close`` it."""

    def __init__(self, path: Path, records: dict[str, FileRecord], file: IO[str]) -> None:
        self.path = path
        self._records = records
        self._file = file

    @classmethod
    def open(cls, output_root: Path) -> Manifest:
        output_root.mkdir(parents=True, exist_ok=True)
        path = output_root / MANIFEST_NAME
        records = read_records(path)
        _rewrite(path, records.values())
        return cls(path, records, path.open("a", encoding="utf-8"))

    def get(self, name: str) -> FileRecord | None:
        return self._records.get(name)

    def records(self) -> dict[str, FileRecord]:
        return dict(self._records)

    def record(self, record: FileRecord) -> None:
        """Write ``record`` as the file's state (flushed to the OS before returning)."""
        self._file.write(_line(record))
        self._file.flush()
        self._records[record.file] = record

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def read_manifest(output_root: Path) -> dict[str, FileRecord]:
    """The state of each file of the batch whose output root is ``output_root``."""
    return read_records(output_root / MANIFEST_NAME)


def read_records(path: Path) -> dict[str, FileRecord]:
    """Each file's last record in the manifest at ``path`` (none if there is none)."""
    records: dict[str, FileRecord] = {}
    if not path.exists():
        return records
    with path.open(encoding="utf-8") as file:
        for line in file:
            try:
                record = FileRecord(**json.loads(line))
            except (ValueError, TypeError):
                continue  # a torn last line, from a process killed while writing it
            records[record.file] = record
    return records


def _line(record: FileRecord) -> str:
    fields = {name: value for name, value in asdict(record).items() if value not in _UNSET}
    return json.dumps(fields, separators=(",", ":")) + "\n"


def _rewrite(path: Path, records: Any) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", encoding="utf-8") as file:
        file.writelines(_line(record) for record in records)
        file.flush()
        os.fsync(file.fileno())
    temporary.replace(path)
