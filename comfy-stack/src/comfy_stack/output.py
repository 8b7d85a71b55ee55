"""How the command-line client prints: tables and summaries for people, one JSON document
with ``--json``, and the API's error shape either way."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from comfy_stack.client import ApiError


def print_json(data: Any, out: TextIO | None = None) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False), file=out or sys.stdout)


def print_table(rows: list[list[str]], out: TextIO | None = None) -> None:
    """Columns padded to their widest cell; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip(), file=out or sys.stdout)


def error_document(exc: ApiError) -> dict[str, Any]:
    """``{"error": {"status", "code", "type", "detail", ...}}``: the API's body as it came."""
    return {"error": {"status": exc.status, **exc.body, "code": exc.code, "type": exc.type,
                      "detail": str(exc)}}  # fmt: skip


def unreachable_document(url: str, reason: str) -> dict[str, Any]:
    detail = f"cannot reach {url}: {reason}"
    return {"error": {"status": None, "code": "unreachable", "type": "service", "detail": detail}}


def describe_error(exc: ApiError) -> str:
    """``error (TYPE, CODE): detail`` and then, one per line, what the body adds: the fields
    of ``errors`` (422 invalid_params), each node of ``node_errors`` (422 prompt_rejected),
    and any other field."""
    lines = [f"error ({exc.type}, {exc.code}): {exc} [HTTP {exc.status}]"]
    for name, value in exc.body.items():
        if name in ("detail", "code", "type"):
            continue
        if name == "errors" and isinstance(value, dict):
            lines += [f"  {field}: {message}" for field, message in value.items()]
        elif name == "node_errors" and isinstance(value, dict):
            lines += [f"  node {node}: {_node_error(error)}" for node, error in value.items()]
        elif value not in (None, "", [], {}):
            lines.append(f"  {name}: {_compact(value)}")
    return "\n".join(lines)


def _node_error(error: Any) -> str:
    """ComfyUI's ``{"errors": [{"message", "details"}], "class_type"}`` as one line."""
    if not isinstance(error, dict):
        return _compact(error)
    items = [item for item in error.get("errors", []) if isinstance(item, dict)]
    reasons = [
        ": ".join(str(item[k]) for k in ("message", "details") if item.get(k)) for item in items
    ]
    return f"({error.get('class_type', '?')}) " + "; ".join(reasons)


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
