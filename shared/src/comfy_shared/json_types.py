"""Checks that make pydantic take JSON's values as JSON Schema defines them."""

from __future__ import annotations

from typing import Any


def json_integer(value: Any) -> Any:
    """A ``mode="before"`` field validator for an ``int`` field (its bounds stay in its
    ``Field``, so the JSON schema shows them): pydantic's lax int takes ``true`` and ``"12"``,
    which JSON Schema's ``integer`` does not; it does take ``12.0``, as JSON Schema does."""
    if isinstance(value, bool | str):
        raise ValueError("must be an integer")
    return value


def json_number(value: Any) -> Any:
    """The same for a ``float`` field: ``true`` and ``"1.5"`` are no JSON number."""
    if isinstance(value, bool | str):
        raise ValueError("must be a number")
    return value
