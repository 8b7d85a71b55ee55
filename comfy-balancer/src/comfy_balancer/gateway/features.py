"""The feature flags the gateway announces, in one place: ``GET /api/features`` answers them,
and the WebSocket's ``feature_flags`` reply carries the same dict.

Honest about what the fleet does through the gateway: previews keep their metadata (the
services ask their ComfyUI for it), uploads are bounded by the balancer's body limit, and what
the gateway does not do is announced as off rather than left out: the assets service, node
replacements (``POST /prompt`` would have to rewrite the graph) and the ComfyUI-Manager UI
(its routes assume one process). Core's ``supports_model_type_tags`` goes with assets.
"""

from __future__ import annotations

from typing import Any


def server_feature_flags(*, max_upload_bytes: int) -> dict[str, Any]:
    """A fresh dict each call: callers may send or change it without touching another's."""
    return {
        "supports_preview_metadata": True,
        "max_upload_size": max_upload_bytes,
        "supports_model_type_tags": False,
        "node_replacements": False,
        "assets": False,
        "extension": {"manager": {"supports_v4": False}},
    }
