"""The one JSON parser for request bodies: every route of both APIs that takes JSON uses it.

Python's ``json`` module (and so FastAPI's own body parsing) accepts values that JSON does not
have or that nothing downstream can hold: ``NaN``, ``Infinity``, ``-Infinity``, float literals
that overflow to infinity (``1e400``), integers of any size, strings with a lone surrogate
escape (``"\\ud800"``, not Unicode) and nesting as deep as the interpreter's stack. Accepted,
such a value is stored with the task and fails later, where the caller no longer hears of it:
the record cannot be written back as JSON, the graph cannot be sent to a node, a stored record
cannot be read again. Here they are refused up front, with the place in the body as a JSON
path (``$.params.cfg``, ``$.prompt["3"].inputs.seed``):

- integers must lie in [-(2**63), 2**64 - 1], so both signed and unsigned 64-bit values pass
  (a ComfyUI seed goes up to 2**64 - 1): ``InvalidNumber``;
- floats must be finite: ``InvalidNumber``;
- strings (keys too) must be valid Unicode: ``InvalidString``;
- containers nest at most ``MAX_DEPTH`` deep: ``NestedTooDeep``;
- anything that is not JSON text in UTF-8: ``MalformedJson``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final

from comfy_shared.errors import ComfyStackError

MIN_INT: Final = -(2**63)
MAX_INT: Final = 2**64 - 1
MAX_DEPTH: Final = 64
"""A ComfyUI graph nests five deep; a stored task wraps the body a few levels further, and
pydantic refuses to read JSON nested 200 deep, so a deeper body would make a record that can
never be read back."""

_MAX_INT_DIGITS: Final = len(str(MAX_INT))
_SHOWN_CHARS: Final = 40
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

JsonPath = tuple[str | int, ...]
_PLAIN_SCALARS: Final = frozenset({int, float, bool, type(None)})


class MalformedJson(ComfyStackError):
    """The body is not JSON text (or not UTF-8)."""


class InvalidJsonValue(ComfyStackError):
    """Valid JSON syntax, but a value no part of the stack can hold; ``path`` says where."""

    def __init__(self, path: JsonPath, problem: str) -> None:
        self.path = format_path(path)
        super().__init__(f"{self.path}: {problem}")


class InvalidNumber(InvalidJsonValue):
    def __init__(self, path: JsonPath, literal: str) -> None:
        shown = literal if len(literal) <= _SHOWN_CHARS else f"{literal[:_SHOWN_CHARS]}..."
        super().__init__(
            path,
            f"{shown} is not allowed: numbers must be finite, integers within "
            f"[-(2**63), 2**64 - 1]",
        )
        self.literal = shown


class InvalidString(InvalidJsonValue):
    def __init__(self, path: JsonPath) -> None:
        super().__init__(path, "the string has a lone surrogate escape, which is not Unicode")


class NestedTooDeep(InvalidJsonValue):
    def __init__(self, path: JsonPath) -> None:
        super().__init__(path, f"arrays and objects may nest at most {MAX_DEPTH} deep")


def format_path(path: JsonPath) -> str:
    """``("prompt", "3", "inputs", "seed")`` -> ``$.prompt["3"].inputs.seed``."""
    return "$" + "".join(_path_step(key) for key in path)


def _path_step(key: str | int) -> str:
    if isinstance(key, int):
        return f"[{key}]"
    if len(key) > _SHOWN_CHARS:  # an error must not echo a huge key back (nor log it)
        return f"[{json.dumps(key[:_SHOWN_CHARS] + '...')}]"
    if _IDENTIFIER.fullmatch(key):
        return f".{key}"
    return f"[{json.dumps(key)}]"


@dataclass(frozen=True, slots=True)
class _Refused:
    """Stands in for a number the parser met but must not keep; the walk reports its path."""

    literal: str


def parse_strict_json(raw: bytes | str) -> Any:
    """The document in ``raw``; raises MalformedJson or an InvalidJsonValue (see above)."""
    text = _utf8_text(raw)
    try:
        document = json.loads(
            text,
            parse_constant=_Refused,
            parse_int=_int_or_refused,
            parse_float=_float_or_refused,
        )
    except json.JSONDecodeError as exc:
        raise MalformedJson(f"the body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise NestedTooDeep(()) from exc
    _check_values(document, (), depth=0)
    return document


def _utf8_text(raw: bytes | str) -> str:
    # json.loads would also guess UTF-16 and UTF-32; JSON on the wire is UTF-8 (RFC 8259 §8.1).
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedJson(f"the body is not UTF-8: {exc}") from exc


def _int_or_refused(literal: str) -> int | _Refused:
    # Checked by length first: int() of a literal over 4300 digits raises instead of parsing.
    if len(literal.lstrip("-")) > _MAX_INT_DIGITS:
        return _Refused(literal)
    value = int(literal)
    return value if MIN_INT <= value <= MAX_INT else _Refused(literal)


def _float_or_refused(literal: str) -> float | _Refused:
    value = float(literal)
    return value if math.isfinite(value) else _Refused(literal)


def _check_values(value: Any, path: JsonPath, *, depth: int) -> None:
    """Raise for the first refused number, non-Unicode string or too-deep container, in
    document order. Recursion is safe: it stops at MAX_DEPTH."""
    if isinstance(value, _Refused):
        raise InvalidNumber(path, value.literal)
    if isinstance(value, str):
        _check_string(value, path)
    elif isinstance(value, dict | list):
        if depth == MAX_DEPTH:
            raise NestedTooDeep(path)
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str):
                _check_string(key, (*path, key))
            # Checked where parsed (numbers) or fine as they are: skipping them keeps a body
            # of millions of numbers from costing a call each.
            if type(item) not in _PLAIN_SCALARS:
                _check_values(item, (*path, key), depth=depth + 1)


def _check_string(value: str, path: JsonPath) -> None:
    # isascii() is a flag lookup in CPython, so only non-ASCII strings pay for the encode.
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidString(path) from exc
