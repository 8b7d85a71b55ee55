"""Text outputs: the strings nodes report in their UI dict's ``text`` list (core PreviewAny,
"Preview as Text"; the ShowText nodes of custom packs) instead of writing a file.

Each string becomes a task output of kind text with type ``"text"`` and a made-up name,
``<node id>-text-<n>.txt`` (``n``: its index in the node's list), unique in its task and the
same on every run. Its UTF-8 bytes are stored like a file's (content-addressed, held with
the task) and served under that name as ``text/plain; charset=utf-8``. Nothing fetches a
text from ComfyUI's ``/view``: it has no file there.

Until stored, the text travels in its ``TaskOutput.text``; a stored output drops it, so a
succeeded task's record in Redis holds digests, not texts. The outputs of a failed task are
not stored: its texts stay in its record and are served from there. To keep records and
events small, a text is cut to its first :data:`MAX_TEXT_BYTES` (1 MiB) of UTF-8, at a
character boundary.
"""

from __future__ import annotations

from typing import Final

from comfy_shared.models import OutputKind, TaskOutput

TEXT_OUTPUT_TYPE: Final = "text"
MAX_TEXT_BYTES: Final = 1 << 20


def text_output(node_id: str, position: int, text: str) -> TaskOutput:
    """The output for the ``position``-th string of node ``node_id``'s ``text`` list."""
    return TaskOutput(
        node_id=node_id,
        kind=OutputKind.TEXT,
        filename=f"{node_id}-text-{position}.txt",
        type=TEXT_OUTPUT_TYPE,
        text=capped(text),
    )


def capped(text: str) -> str:
    """``text`` as valid UTF-8 of at most :data:`MAX_TEXT_BYTES`: a lone surrogate (JSON
    allows ``"\\udc80"``, UTF-8 has no such character) becomes ``?``, and a longer text is
    cut before the first character that would cross the limit."""
    encoded = text.encode("utf-8", errors="replace")
    if len(encoded) <= MAX_TEXT_BYTES:
        return encoded.decode("utf-8")
    return encoded[:MAX_TEXT_BYTES].decode("utf-8", errors="ignore")  # drops a split char


def is_text(output: TaskOutput) -> bool:
    return output.type == TEXT_OUTPUT_TYPE


def text_bytes(output: TaskOutput) -> bytes:
    """The bytes to store or serve for a text output that still carries its text."""
    if output.text is None:
        raise ValueError(f"output {output.filename} carries no text")
    return output.text.encode("utf-8")
