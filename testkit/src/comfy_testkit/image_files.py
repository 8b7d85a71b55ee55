"""Small real image files on disk (batch tests and bench): PNG, JPEG and WebP made by Pillow."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def image_bytes(
    suffix: str = ".png", color: str = "red", size: tuple[int, int] = (24, 16)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, FORMATS[suffix])
    return buffer.getvalue()


def write_image(path: Path, color: str = "red", size: tuple[int, int] = (24, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() not in FORMATS:
        path.write_text("not an image\n")
        return path
    path.write_bytes(image_bytes(path.suffix.lower(), color, size))
    return path


def write_tree(root: Path, names: list[str]) -> list[Path]:
    """One distinct image per relative name (sizes differ, so their bytes do); a name that is
    no image's (``notes.txt``) gets a line of text."""
    colors = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
    return [
        write_image(root / name, colors[n % len(colors)], (16 + n, 16))
        for n, name in enumerate(names)
    ]
