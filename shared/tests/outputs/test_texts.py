"""Text outputs: named, typed and capped so they are stored and served like files."""

from comfy_shared.models import OutputKind, TaskOutput
from comfy_shared.outputs.texts import (
    MAX_TEXT_BYTES,
    capped,
    is_text,
    text_bytes,
    text_output,
)


def test_a_text_is_an_output_of_kind_text_served_as_utf8_plain_text() -> None:
    output = text_output("5", 1, "ünïcode ✓")

    assert (output.node_id, output.kind, output.filename, output.type) == (
        "5",
        OutputKind.TEXT,
        "5-text-1.txt",
        "text",
    )
    assert output.media_type == "text/plain; charset=utf-8"
    assert is_text(output)
    assert text_bytes(output) == "ünïcode ✓".encode()


def test_the_text_is_in_the_record_only_while_it_is_carried() -> None:
    carried = text_output("5", 0, "hello")
    stored = carried.model_copy(update={"sha256": "ab" * 32, "size": 5, "text": None})
    image = TaskOutput(node_id="3", kind=OutputKind.IMAGE, filename="a.png")

    assert '"text":"hello"' in carried.model_dump_json()
    assert TaskOutput.model_validate_json(carried.model_dump_json()) == carried
    assert "text" not in stored.model_dump()
    assert "text" not in image.model_dump()
    assert not is_text(image)


def test_a_long_text_is_cut_at_the_cap_on_a_character_boundary() -> None:
    fits = "a" * MAX_TEXT_BYTES
    straddles = "a" * (MAX_TEXT_BYTES - 1) + "é"  # 2 bytes: the last one would cross

    assert capped(fits) == fits
    assert capped(fits + "b") == fits
    assert capped(straddles) == "a" * (MAX_TEXT_BYTES - 1)
    assert len(text_bytes(text_output("5", 0, "€" * MAX_TEXT_BYTES))) == MAX_TEXT_BYTES - 1


def test_a_lone_surrogate_becomes_a_question_mark_so_the_text_is_utf8() -> None:
    assert capped("a\udc80b") == "a?b"
    assert text_bytes(text_output("5", 0, "a\udc80b")) == b"a?b"
