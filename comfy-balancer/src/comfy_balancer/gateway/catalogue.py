"""The catalogue routes a ComfyUI frontend (and many scripts) read at start: what the server
is and offers, synthesized over the live nodes (:mod:`.catalogue_fleet`), the custom nodes'
extensions from the reference node (:mod:`.catalogue_extensions`), and stubs where the
gateway has nothing to offer, each in the shape the frontend accepts without an error:

- ``/system_stats``, ``/features``, ``/embeddings``, ``/models[/{folder}]``,
  ``/experiment/models[/{folder}]``, ``/extensions``: at ``/x`` and ``/api/x``;
- ``/i18n`` ``{}`` (no custom-node translations), ``/workflow_templates`` ``{}``,
  ``/global_subgraphs`` ``{}``: likewise;
- ``/templates/index.json`` (and per locale) ``[]``, ``/templates/fuse_options.json``
  ``null``: core serves these from the ``comfyui-workflow-templates`` package, not installed
  here (the template browser shows none);
- ``/internal/logs`` ``""``, ``/internal/logs/raw`` (no entries), ``PATCH
  /internal/logs/subscribe``, ``/internal/folder_paths`` ``{}``, ``/internal/files/{type}``
  ``[]``: only under ``/internal``, as in core (where they describe one machine).
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from comfy_balancer.deps import CallerOf, State
from comfy_balancer.gateway import catalogue_fleet as fleet
from comfy_balancer.gateway.catalogue_extensions import ExtensionCatalogue
from comfy_balancer.gateway.features import server_feature_flags
from comfy_balancer.registry import NodeView

_REGISTRY_AGE_S: Final = 1.0
"""A page load asks for several of these at once: one read of the nodes serves them all."""
MODEL_FOLDERS_HIDDEN: Final = frozenset({"configs", "custom_nodes"})
"""Not model folders to a user; the frontend drops them from its model library too."""
INTERNAL_FILE_TYPES: Final = frozenset({"output", "input", "temp"})

router = APIRouter(include_in_schema=False)
"""Served at ``/x`` and ``/api/x``."""
unprefixed = APIRouter(include_in_schema=False)
"""Served at ``/x`` only (core's static and internal routes)."""


async def _nodes(state: State) -> list[NodeView]:
    return await state.registry.recent(_REGISTRY_AGE_S)


@router.get("/system_stats")
async def system_stats(_: CallerOf, state: State) -> dict[str, Any]:
    return fleet.system_stats(
        await _nodes(state),
        frontend_version=version("comfyui-frontend-package"),
        fallback_version=version("comfy-balancer"),
    )


@router.get("/features")
async def features(_: CallerOf, state: State) -> dict[str, Any]:
    return server_feature_flags(max_upload_bytes=state.settings.max_body_bytes)


@router.get("/embeddings")
async def embeddings(_: CallerOf, state: State) -> list[str]:
    return fleet.embeddings(await _nodes(state))


@router.get("/models")
async def model_folders(_: CallerOf, state: State) -> list[str]:
    return fleet.model_folders(await _nodes(state))


@router.get("/models/{folder}")
async def models_in_folder(folder: str, _: CallerOf, state: State) -> Response:
    names = fleet.models_in(await _nodes(state), folder)
    return JSONResponse(names) if names is not None else Response(status_code=404)


@router.get("/experiment/models")
async def experiment_model_folders(_: CallerOf, state: State) -> list[dict[str, Any]]:
    # "folders" are the server's own paths in core: nothing a browser needs from a fleet.
    folders = fleet.model_folders(await _nodes(state))
    return [{"name": name, "folders": []} for name in folders if name not in MODEL_FOLDERS_HIDDEN]


@router.get("/experiment/models/{folder}")
async def experiment_models_in_folder(folder: str, _: CallerOf, state: State) -> Response:
    names = fleet.models_in(await _nodes(state), folder)
    if names is None:
        return Response(status_code=404)
    return JSONResponse([{"name": name, "pathIndex": 0} for name in names])


@router.get("/extensions")
async def extensions(request: Request, _: CallerOf, state: State) -> list[str]:
    return await extension_catalogue(request).listing(state.registry, state.nodes_client)


@router.get("/i18n")
async def i18n(_: CallerOf) -> dict[str, Any]:
    return {}


@router.get("/workflow_templates")
async def workflow_templates(_: CallerOf) -> dict[str, Any]:
    return {}


@router.get("/global_subgraphs")
async def global_subgraphs(_: CallerOf) -> dict[str, Any]:
    return {}


@router.get("/global_subgraphs/{subgraph_id}")
async def global_subgraph(subgraph_id: str, _: CallerOf) -> Response:
    return Response(status_code=404)


@unprefixed.get("/templates/{name}")
async def templates_file(name: str) -> Response:
    """Public like the rest of the frontend's files: nothing of a user's."""
    if name == "fuse_options.json":
        return JSONResponse(None)
    if name.startswith("index") and name.endswith(".json"):
        return JSONResponse({} if name == "index_logo.json" else [])
    return Response(status_code=404)


@unprefixed.get("/internal/logs")
async def internal_logs(_: CallerOf) -> str:
    return ""


@unprefixed.get("/internal/logs/raw")
async def internal_raw_logs(_: CallerOf) -> dict[str, Any]:
    return {"entries": [], "size": {"cols": 80, "rows": 24}}


@unprefixed.patch("/internal/logs/subscribe")
async def internal_logs_subscribe(_: CallerOf) -> Response:
    return Response(status_code=200)


@unprefixed.get("/internal/folder_paths")
async def internal_folder_paths(_: CallerOf) -> dict[str, Any]:
    return {}


@unprefixed.get("/internal/files/{directory_type}")
async def internal_files(directory_type: str, _: CallerOf) -> Response:
    if directory_type not in INTERNAL_FILE_TYPES:
        return JSONResponse({"error": "Invalid directory type"}, status_code=400)
    return JSONResponse([])


def extension_catalogue(request: Request) -> ExtensionCatalogue:
    catalogue: ExtensionCatalogue = request.app.state.gateway_extensions
    return catalogue
