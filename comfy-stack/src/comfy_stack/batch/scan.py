"""Finding the images of a batch: several roots walked recursively, folders filtered by
keywords in their names, files taken by extension and then checked by their first bytes.

A file whose extension promises an image its bytes do not start like (a ``.png`` that is a
JPEG, a text file renamed ``.jpg``) is not sent: the balancer would refuse it, or worse, a
mislabelled file would be stored under a misleading name. It is reported instead.
Hidden files and folders (a leading dot) are not looked at, nor the output root when it lies
inside a root (a rerun must not take the batch's own results for input).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

SIGNATURES: Final = {
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpeg": (b"\xff\xd8\xff",),
    "webp": (b"RIFF",),  # + "WEBP" at offset 8, see _looks_like
}
MEDIA_TYPES: Final = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
FORMAT_OF_EXTENSION: Final = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".webp": "webp",
}
DEFAULT_EXTENSIONS: Final = tuple(FORMAT_OF_EXTENSION)
_HEADER_BYTES: Final = 12


@dataclass(frozen=True, slots=True)
class ScanFilter:
    """Which files of the roots are the batch's.

    ``include_folders``: keep only files with a folder on their path (below the root) whose
    name contains one of these words; ``exclude_folders``: skip folders whose name contains
    one (and everything under them). Both ignore case. ``extensions``: the file types taken
    (among ``.png``, ``.jpg``, ``.jpeg``, ``.webp``)."""

    include_folders: tuple[str, ...] = ()
    exclude_folders: tuple[str, ...] = ()
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    skip: tuple[Path, ...] = ()
    """Folders never walked into (the output root)."""


@dataclass(frozen=True, slots=True)
class SourceFile:
    """An image of the batch: ``root / relative``, of ``image_format`` by its first bytes."""

    root: Path
    relative: Path
    image_format: str

    @property
    def path(self) -> Path:
        return self.root / self.relative

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.image_format]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A file with an image extension that was not sent, and why."""

    path: Path
    reason: str


@dataclass
class ScanResult:
    files: list[SourceFile] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    def folders(self) -> dict[Path, list[SourceFile]]:
        """The files grouped by the folder they are in, folders in path order."""
        grouped: dict[Path, list[SourceFile]] = {}
        for source in self.files:
            grouped.setdefault(source.path.parent, []).append(source)
        return grouped


class ScanError(Exception):
    """A root that is not a readable folder, or a file type that cannot be sent."""


def scan(roots: Iterable[Path], scan_filter: ScanFilter = ScanFilter()) -> ScanResult:
    """Every image under ``roots`` that ``scan_filter`` keeps, each folder's files sorted by
    name; rejected files (bytes that do not match the extension, unreadable) listed apart."""
    _check_extensions(scan_filter.extensions)
    result = ScanResult()
    for root in roots:
        if not root.is_dir():
            raise ScanError(f"{root}: not a folder")
        for path in _candidates(root, scan_filter):
            _take(root, path, result)
    return result


def _check_extensions(extensions: tuple[str, ...]) -> None:
    unknown = [ext for ext in extensions if ext.lower() not in FORMAT_OF_EXTENSION]
    if unknown:
        known = ", ".join(FORMAT_OF_EXTENSION)
        raise ScanError(f"cannot send {', '.join(unknown)} files (images only: {known})")


def _candidates(root: Path, scan_filter: ScanFilter) -> Iterator[Path]:
    extensions = {ext.lower() for ext in scan_filter.extensions}
    skip = {path.resolve() for path in scan_filter.skip}
    for folder, subfolders, names in os.walk(root):
        here = Path(folder)
        subfolders[:] = sorted(
            name
            for name in subfolders
            if _walk_into(name, scan_filter) and (here / name).resolve() not in skip
        )
        if not _included(here.relative_to(root), scan_filter):
            continue
        for name in sorted(names):
            if not name.startswith(".") and Path(name).suffix.lower() in extensions:
                yield here / name


def _walk_into(name: str, scan_filter: ScanFilter) -> bool:
    lowered = name.lower()
    if name.startswith("."):
        return False
    return not any(word.lower() in lowered for word in scan_filter.exclude_folders)


def _included(relative_folder: Path, scan_filter: ScanFilter) -> bool:
    if not scan_filter.include_folders:
        return True
    names = [part.lower() for part in relative_folder.parts]
    words = [word.lower() for word in scan_filter.include_folders]
    return any(word in name for name in names for word in words)


def _take(root: Path, path: Path, result: ScanResult) -> None:
    expected = FORMAT_OF_EXTENSION[path.suffix.lower()]
    try:
        with path.open("rb") as file:
            header = file.read(_HEADER_BYTES)
    except OSError as exc:
        result.rejected.append(Rejected(path, f"unreadable: {exc.strerror}"))
        return
    actual = sniff(header)
    if actual != expected:
        found = f"its bytes are {actual.upper()}" if actual else "its bytes are no image"
        result.rejected.append(Rejected(path, f"not a {expected.upper()} file ({found})"))
        return
    result.files.append(SourceFile(root, path.relative_to(root), expected))


def sniff(header: bytes) -> str | None:
    """The image format ``header`` (a file's first 12 bytes) starts like, or None."""
    for image_format, signatures in SIGNATURES.items():
        if any(header.startswith(signature) for signature in signatures):
            if image_format == "webp" and header[8:12] != b"WEBP":
                continue
            return image_format
    return None
