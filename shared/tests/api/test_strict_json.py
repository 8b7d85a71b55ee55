import json
from typing import Any

import pytest

from comfy_shared.api.strict_json import (
    MAX_DEPTH,
    MAX_INT,
    MIN_INT,
    InvalidJsonValue,
    InvalidNumber,
    InvalidString,
    MalformedJson,
    NestedTooDeep,
    format_path,
    parse_strict_json,
)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f'{{"seed": {MAX_INT}}}', {"seed": 2**64 - 1}),
        (f'{{"seed": {MIN_INT}}}', {"seed": -(2**63)}),
        (
            '{"cfg": 7.5, "big": 1e308, "tiny": 1e-400, "e": 1E2}',
            {"cfg": 7.5, "big": 1e308, "tiny": 0.0, "e": 100.0},
        ),
        (
            '{"neg": -0, "f": -0.0, "t": true, "n": null}',
            {"neg": 0, "f": -0.0, "t": True, "n": None},
        ),
        (
            '{"emoji": "\\ud83d\\ude00", "\\u00e9": "caf\\u00e9"}',
            {"emoji": "\U0001f600", "é": "café"},
        ),
        ('"just a string"', "just a string"),
        (nested(MAX_DEPTH), json.loads(nested(MAX_DEPTH))),
    ],
)
def test_valid_json_within_the_limits_parses_as_the_json_module_does(
    text: str, expected: Any
) -> None:
    assert parse_strict_json(text.encode()) == expected
    assert parse_strict_json(text) == expected


@pytest.mark.parametrize(
    ("text", "error", "path", "shown"),
    [
        ('{"cfg": NaN}', InvalidNumber, "$.cfg", "NaN"),
        ('{"cfg": Infinity}', InvalidNumber, "$.cfg", "Infinity"),
        ('{"cfg": -Infinity}', InvalidNumber, "$.cfg", "-Infinity"),
        ('{"cfg": 1e400}', InvalidNumber, "$.cfg", "1e400"),
        ('{"cfg": -1.5e309}', InvalidNumber, "$.cfg", "-1.5e309"),
        (f'{{"seed": {MAX_INT + 1}}}', InvalidNumber, "$.seed", str(MAX_INT + 1)),
        (f'{{"seed": {MIN_INT - 1}}}', InvalidNumber, "$.seed", str(MIN_INT - 1)),
        ('{"seed": 1' + "0" * 400 + "}", InvalidNumber, "$.seed", "1" + "0" * 39 + "..."),
        # Longer than int() converts (4300 digits): refused, not a ValueError from int().
        ('{"seed": ' + "9" * 5000 + "}", InvalidNumber, "$.seed", "9" * 40 + "..."),
        (
            '{"prompt": {"3": {"inputs": {"seed": NaN}}}}',
            InvalidNumber,
            '$.prompt["3"].inputs.seed',
            "NaN",
        ),
        ('{"client": {"tags": [1, 2, Infinity]}}', InvalidNumber, "$.client.tags[2]", "Infinity"),
        ('[{"a b": [NaN]}]', InvalidNumber, '$[0]["a b"][0]', "NaN"),
        ("NaN", InvalidNumber, "$", "NaN"),
        ('{"first": NaN, "second": 1e999}', InvalidNumber, "$.first", "NaN"),
        ('{"note": "\\ud800"}', InvalidString, "$.note", None),
        ('{"note": ["ok", "x\\udfff"]}', InvalidString, "$.note[1]", None),
        ('{"\\udc00": 1}', InvalidString, '$["\\udc00"]', None),
        ('{"deep": ' + nested(MAX_DEPTH) + "}", NestedTooDeep, "$.deep" + "[0]" * 63, None),
        (nested(MAX_DEPTH + 1), NestedTooDeep, "$" + "[0]" * MAX_DEPTH, None),
        # Deeper than the json module's own recursion limit: no path is known.
        (nested(100_000), NestedTooDeep, "$", None),
    ],
)
def test_values_nothing_downstream_can_hold_are_refused_naming_their_path(
    text: str, error: type[InvalidJsonValue], path: str, shown: str | None
) -> None:
    with pytest.raises(error) as refused:
        parse_strict_json(text.encode())

    assert refused.value.path == path
    if shown is not None:
        assert isinstance(refused.value, InvalidNumber)
        assert refused.value.literal == shown
        assert shown in str(refused.value)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b'{"a": 1,}',
        b"{'a': 1}",
        b'{"a": 1} trailing',
        b'{"a": "\xff"}',
        '{"a": 1}'.encode("utf-16"),  # json.loads would guess UTF-16; the wire is UTF-8
        b'\xef\xbb\xbf{"a": 1}',  # a byte-order mark
    ],
)
def test_anything_but_json_text_in_utf8_is_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedJson):
        parse_strict_json(raw)


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ((), "$"),
        (("params", "cfg"), "$.params.cfg"),
        (("prompt", "3", "inputs", "seed"), '$.prompt["3"].inputs.seed'),
        (("tags", 0, "_x1"), "$.tags[0]._x1"),
        (("a.b", 'q"uote'), '$["a.b"]["q\\"uote"]'),
    ],
)
def test_paths_read_as_json_paths(path: tuple[str | int, ...], shown: str) -> None:
    assert format_path(path) == shown
