"""The emulated ComfyUI versions: their traits and the canonical-UUID rule of 0.26.0."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from comfy_emulator import EmulatorConfig
from comfy_emulator.versions import COMFYUI_VERSIONS, is_canonical_uuid, traits_of

CANONICAL = "7b0c2d7e-0a8e-4a43-9a55-0f3c3d6f8c11"


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        (CANONICAL, True),
        ("5f0c2a9e-8d3b-4c71-9e26-b4a1f07d3c58", True),  # a version 4 one
        (str(uuid.uuid5(uuid.NAMESPACE_URL, "x")), True),  # any UUID version
        ("00000000-0000-0000-0000-000000000000", True),
        (CANONICAL.upper(), False),
        (CANONICAL.replace("-", ""), False),  # bare 32 hex
        ("{" + CANONICAL + "}", False),
        ("urn:uuid:" + CANONICAL, False),
        (" " + CANONICAL, False),
        (CANONICAL[:-1], False),
        ("p-1", False),
        ("", False),
        (12345, False),
        (uuid.UUID(CANONICAL), False),  # not a str (cannot arrive as JSON anyway)
        (None, False),
        ([CANONICAL], False),
    ],
)
def test_is_canonical_uuid(value: Any, canonical: bool) -> None:
    assert is_canonical_uuid(value) is canonical


def test_only_0_26_0_has_the_2026_traits() -> None:
    old, new = traits_of("0.8.0"), traits_of("0.26.0")
    assert (old.canonical_prompt_ids, old.jobs_api, old.missing_node_type) == (False,) * 3
    assert (new.canonical_prompt_ids, new.jobs_api, new.missing_node_type) == (True,) * 3
    assert COMFYUI_VERSIONS == ("0.8.0", "0.26.0")


def test_the_default_is_0_8_0_and_an_unknown_version_is_refused() -> None:
    assert EmulatorConfig().comfyui_version == "0.8.0"
    assert EmulatorConfig().traits == traits_of("0.8.0")
    assert EmulatorConfig(comfyui_version="0.26.0").traits == traits_of("0.26.0")
    with pytest.raises(ValueError, match=re.escape("one of 0.8.0, 0.26.0, got '0.9.0'")):
        EmulatorConfig(comfyui_version="0.9.0")  # type: ignore[arg-type]
