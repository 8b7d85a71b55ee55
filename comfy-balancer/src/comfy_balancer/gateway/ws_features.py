"""The feature flags the gateway announces: in its WebSocket's answer to a client's first
``feature_flags`` frame, and (the same dict) at ``GET /api/features``.

Honest, fixed: previews come with their metadata (type 4) to clients that ask; uploads up to
the balancer's body limit; no assets API. Flags the gateway cannot back (ComfyUI-Manager's
``extension.manager.supports_v4``, ``node_replacements``, prompt-tagged progress texts) are
left out: absent reads as false.
"""

from __future__ import annotations

from typing import Any


def server_feature_flags(max_upload_bytes: int) -> dict[str, Any]:
    return {
        "supports_preview_metadata": True,
        "max_upload_size": max_upload_bytes,
        "assets": False,
    }
