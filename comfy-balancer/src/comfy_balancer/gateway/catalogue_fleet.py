"""What the fleet offers, as one ComfyUI server would say it: pure functions of the nodes'
health documents (no I/O), so each is tested as a table.

- ``/system_stats`` (gateway spec §1.4): every key core sends, with core's types. The
  **highest** ``required_frontend_version`` of the fleet (the pinned frontend must satisfy
  every node), the **lowest** ComfyUI version (the frontend turns features on by it, and only
  what every node has is safe), one device per live node, RAM summed. Nothing of the
  balancer's own command line: ``argv`` could hold a secret.
- ``/models``, ``/models/{folder}``, ``/embeddings``: unions over the live nodes (a graph
  that names a file only some nodes have is placed on those).
- The reference node (frontend extensions): the one named, while it lives, else the first
  live node in id order.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any, Final

from comfy_balancer.registry import NodeView
from comfy_shared.models import NodeHealth

FRONTEND_PACKAGE: Final = "comfyui-frontend-package"
DEPLOY_ENVIRONMENT: Final = "comfy-stack"


def live_nodes(nodes: Iterable[NodeView]) -> list[tuple[str, NodeHealth]]:
    """(node id, health) of every live node, in id order."""
    return sorted(
        (node.node_id, node.health) for node in nodes if node.is_live and node.health is not None
    )


def reference_node(nodes: Iterable[NodeView], wanted: str | None) -> NodeView | None:
    live = sorted((node for node in nodes if node.is_live), key=lambda node: node.node_id)
    named = next((node for node in live if node.node_id == wanted), None)
    return named or (live[0] if live else None)


def version_key(version: str | None) -> tuple[int, ...] | None:
    """ "1.35.9" -> (1, 35, 9); None for anything that is not dotted numbers."""
    if not version:
        return None
    parts = version.strip().lstrip("v").split(".")
    if not all(part.isdigit() for part in parts):
        return None
    return tuple(int(part) for part in parts)


def _extreme_version(versions: Iterable[str | None], *, highest: bool) -> str | None:
    known = [(key, text) for text in versions if text and (key := version_key(text))]
    if not known:
        return None
    pick = max if highest else min
    return pick(known)[1]


def system_stats(
    nodes: Sequence[NodeView], *, frontend_version: str, fallback_version: str
) -> dict[str, Any]:
    live = live_nodes(nodes)
    healths = [health for _, health in live]
    required = _extreme_version(
        (health.comfyui.required_frontend_version for health in healths), highest=True
    )
    comfyui = _extreme_version((health.comfyui.version for health in healths), highest=False)
    ram_total = sum(health.ram_total_bytes for health in healths)
    ram_used = sum(health.ram_used_bytes for health in healths)
    system = {
        "os": sys.platform,
        "ram_total": ram_total,
        "ram_free": max(ram_total - ram_used, 0),
        "comfyui_version": comfyui or fallback_version,
        "required_frontend_version": required,
        "installed_templates_version": None,
        "required_templates_version": None,
        "comfy_package_versions": [
            {"name": FRONTEND_PACKAGE, "installed": frontend_version, "required": required}
        ],
        "python_version": sys.version,
        "pytorch_version": next(
            (h.comfyui.pytorch_version for h in healths if h.comfyui.pytorch_version), ""
        ),
        "embedded_python": False,
        "deploy_environment": DEPLOY_ENVIRONMENT,
        "argv": ["comfy-balancer"],
    }
    return {"system": system, "devices": [_device(i, nid, h) for i, (nid, h) in enumerate(live)]}


def _device(index: int, node_id: str, health: NodeHealth) -> dict[str, Any]:
    comfyui = health.comfyui
    name = comfyui.device or "unknown"
    return {
        "name": f"{name} [{node_id}]",
        "type": _device_type(name),
        "index": index,
        "vram_total": comfyui.vram_total_bytes or 0,
        "vram_free": comfyui.vram_free_bytes or 0,
        "torch_vram_total": 0,
        "torch_vram_free": 0,
    }


def _device_type(name: str) -> str:
    """torch's device type, the first word of ComfyUI's device name ("cuda:0 NVIDIA ...",
    "cpu", "mps")."""
    return name.split(":")[0].split()[0].lower() if name.strip() else "unknown"


def model_folders(nodes: Sequence[NodeView]) -> list[str]:
    """Every folder key some live node lists, in the order the first one lists it."""
    folders: dict[str, None] = {}
    for _, health in live_nodes(nodes):
        folders.update(dict.fromkeys(health.capabilities.model_folders))
    return list(folders)


def models_in(nodes: Sequence[NodeView], folder: str) -> list[str] | None:
    """The union of the folder's files (sorted, as ComfyUI sorts them); None when no live
    node has such a folder."""
    lists = [
        health.capabilities.model_folders[folder]
        for _, health in live_nodes(nodes)
        if folder in health.capabilities.model_folders
    ]
    if not lists:
        return None
    return sorted({name for names in lists for name in names})


def embeddings(nodes: Sequence[NodeView]) -> list[str]:
    """Embedding names without their extension, as ComfyUI's ``/embeddings`` gives them."""
    return sorted({os.path.splitext(name)[0] for name in models_in(nodes, "embeddings") or []})
