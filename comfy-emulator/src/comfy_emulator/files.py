"""The input/output/temp folders and ComfyUI's path rules (folder_paths.py).

All folder paths are absolute and resolved, so the "does this escape the folder" checks
(`os.path.commonpath`) compare like with like, as ComfyUI's do.
"""

from __future__ import annotations

import mimetypes
import os
import re
import shutil
import time
from dataclasses import dataclass

ANNOTATIONS = {"[output]": "output", "[input]": "input", "[temp]": "temp"}
_IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Folders:
    input: str
    output: str
    temp: str

    def by_type(self, kind: str | None) -> str | None:
        """get_directory_by_type: None for anything but output/input/temp."""
        return {"output": self.output, "input": self.input, "temp": self.temp}.get(kind or "")

    def ensure(self) -> None:
        for path in (self.input, self.output, self.temp):
            os.makedirs(path, exist_ok=True)

    def wipe_temp(self) -> None:
        """ComfyUI deletes its temp folder at start and exit (cleanup_temp)."""
        shutil.rmtree(self.temp, ignore_errors=True)
        os.makedirs(self.temp, exist_ok=True)


def make_folders(input_dir: str, output_dir: str, temp_dir: str) -> Folders:
    return Folders(
        *(os.path.realpath(os.path.abspath(p)) for p in (input_dir, output_dir, temp_dir))
    )


def split_annotation(name: str) -> tuple[str, str | None]:
    """`"x.png [output]"` -> `("x.png", "output")`; names without a suffix -> `(name, None)`."""
    for suffix, kind in ANNOTATIONS.items():
        if name.endswith(suffix):
            return name[: -len(suffix) - 1], kind
    return name, None


def annotated_path(folders: Folders, name: str) -> str:
    """get_annotated_filepath: a suffix picks the folder, the default is input."""
    base, kind = split_annotation(name)
    return os.path.join(folders.by_type(kind or "input") or folders.input, base)


def is_within(root: str, path: str) -> bool:
    return os.path.commonpath((root, os.path.abspath(path))) == root


def input_image_files(folders: Folders) -> list[str]:
    """LoadImage's combo: top-level files of the input folder with an image content type."""
    try:
        names = os.listdir(folders.input)
    except FileNotFoundError:
        return []
    files = [n for n in names if os.path.isfile(os.path.join(folders.input, n))]
    return sorted(n for n in files if _is_image_name(n))


def _is_image_name(name: str) -> bool:
    kind = mimetypes.guess_type(name)[0] or ""
    return kind.startswith("image/") or os.path.splitext(name)[1].lower() in _IMAGE_EXTENSIONS


@dataclass(frozen=True)
class SaveTarget:
    folder: str  # absolute folder the files go to
    filename: str  # prefix base name (may still hold %batch_num%)
    counter: int  # first free counter
    subfolder: str


class PathEscapeError(Exception):
    """A filename prefix that would save outside its folder."""


def save_target(prefix: str, root: str, width: int, height: int) -> SaveTarget:
    """get_save_image_path: expand variables, split the subfolder, find the next counter."""
    if "%" in prefix:
        prefix = _expand_vars(prefix, width, height)
    normalised = os.path.normpath(prefix)
    subfolder, filename = os.path.dirname(normalised), os.path.basename(normalised)
    folder = os.path.join(root, subfolder)
    if not is_within(root, folder):
        raise PathEscapeError(_escape_message(folder, root))
    os.makedirs(folder, exist_ok=True)
    return SaveTarget(folder, filename, _next_counter(folder, filename), subfolder)


def _escape_message(folder: str, root: str) -> str:
    full = os.path.abspath(folder)
    return (
        "**** ERROR: Saving image outside the output folder is not allowed."
        f"\n full_output_folder: {full}\n         output_dir: {root}"
        f"\n         commonpath: {os.path.commonpath((root, full))}"
    )


def _expand_vars(text: str, width: int, height: int) -> str:
    now = time.localtime()
    values = {
        "%width%": str(width),
        "%height%": str(height),
        "%year%": str(now.tm_year),
        "%month%": f"{now.tm_mon:02}",
        "%day%": f"{now.tm_mday:02}",
        "%hour%": f"{now.tm_hour:02}",
        "%minute%": f"{now.tm_min:02}",
        "%second%": f"{now.tm_sec:02}",
    }
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def _next_counter(folder: str, filename: str) -> int:
    # Files look like "<filename>_<counter:05>_.png"; the next counter is 1 + the highest one.
    pattern = re.compile(re.escape(os.path.normcase(filename)) + r"_(\d+)(?:_|$)")
    counters = [0]
    for entry in os.listdir(folder):
        match = pattern.match(os.path.normcase(entry))
        if match:
            counters.append(int(match.group(1)))
    return max(counters) + 1
