"""A model file's family, for metric labels: one of a fixed list, guessed from its name.

File names are not labels (unbounded, and they can say more than an operator should see);
a family is bounded, and a :func:`name_hash8` tells models of one family apart without
naming them.
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Final


class ModelFamily(StrEnum):
    SD15 = "sd15"
    SDXL = "sdxl"
    SD3 = "sd3"
    FLUX = "flux"
    VIDEO = "video"
    OTHER = "other"


_PATTERNS: Final = (
    # Video first: its files often name the image family they build on too (svd_xt, wan...).
    (ModelFamily.VIDEO, r"video|wan2|(?<![a-z])wan(?![a-z])|hunyuan|ltx|(?<![a-z])svd|mochi"
     r"|animatediff"),
    (ModelFamily.FLUX, r"flux"),
    (ModelFamily.SD3, r"sd[-_ ]?3|stable[-_ ]?diffusion[-_ ]?3"),
    (ModelFamily.SDXL, r"sdxl|sd[-_ ]xl|xl(?![a-z])|(?<![a-z])xl|pony"),
    (ModelFamily.SD15, r"sd[-_ ]?1[-_.]?5|v1[-_.]5|stable[-_ ]?diffusion[-_ ]?1"),
)  # fmt: skip


def model_family(file_name: str) -> ModelFamily:
    """The family a model file's name suggests (its folders ignored); ``other`` if none."""
    name = PurePosixPath(file_name.replace("\\", "/")).name.lower()
    return next((f for f, pattern in _PATTERNS if re.search(pattern, name)), ModelFamily.OTHER)


def name_hash8(file_name: str) -> str:
    """The first 8 hex digits of the SHA-256 of a model file's name: the same file gives the
    same label on every node, and the label does not show the name."""
    return hashlib.sha256(file_name.encode()).hexdigest()[:8]
