"""The batch as Prefect flows (``pip install 'comfy-stack[prefect]'``), on the same core as
``comfy-stack batch``:

    main_flow(roots, output_root, workflow=... | graph=..., params={...})
      └ process_folder(root, ...)            one sub-flow per root
          ├ scan_folders(root, ...)          task: the root's images, by folder
          └ process_batch(files, ...)        task: one folder's images through run_batch

Everything is JSON-shaped parameters (a deployment's form can fill them) and the summaries
come back as dicts. Folders run one after another: they share the output root's manifest,
which one run writes at a time; within a folder ``concurrency`` files are in flight. The API
is ``url`` (default ``$COMFY_STACK_URL``, else the local stack) with ``api_key`` (default as
the command line finds it). ``deploy/prefect/prefect.yaml`` deploys ``main_flow`` on a work
pool. This is the only module that imports prefect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from comfy_stack.batch.mapping import Mapping, graph_mapping, template_mapping
from comfy_stack.batch.runner import BatchSpec, run_batch
from comfy_stack.batch.scan import DEFAULT_EXTENSIONS, ScanFilter, ScanResult, SourceFile, scan
from comfy_stack.client import AsyncStackClient
from comfy_stack.credentials import client_key, client_url


@flow(name="comfy-batch")
async def main_flow(
    roots: list[str],
    output_root: str,
    workflow: str | None = None,
    graph: str | None = None,
    image_param: str | None = None,
    image_node: str | None = None,
    params: dict[str, Any] | None = None,
    include_folders: list[str] | None = None,
    exclude_folders: list[str] | None = None,
    extensions: list[str] | None = None,
    concurrency: int = 8,
    retries: int = 2,
    overwrite: bool = False,
    url: str | None = None,
    api_key: str | None = None,
) -> dict[str, Any]:
    """Every image under ``roots`` through ``workflow`` (or the API-format ``graph`` file),
    outputs mirrored under ``output_root``; the summaries of every folder, added up."""
    job = {name: value for name, value in locals().items() if name != "roots"}
    return _added_up([await process_folder(root, roots, job) for root in roots])


@flow(name="comfy-batch-folder")
async def process_folder(root: str, all_roots: list[str], job: dict[str, Any]) -> dict[str, Any]:
    """One root: scanned, then each of its folders as a batch, one after another."""
    found = await scan_folders(
        root, job["output_root"], job["include_folders"], job["exclude_folders"],
        job["extensions"],
    )  # fmt: skip
    summaries = [await process_batch(files, all_roots, job) for files in found.folders().values()]
    rejected = [{"path": str(r.path), "reason": r.reason} for r in found.rejected]
    return _added_up(summaries) | {"rejected": rejected}


@task(cache_policy=NO_CACHE)
async def scan_folders(
    root: str,
    output_root: str,
    include_folders: list[str] | None = None,
    exclude_folders: list[str] | None = None,
    extensions: list[str] | None = None,
) -> ScanResult:
    """The images under ``root`` (``.folders()`` groups them), and the files rejected."""
    scan_filter = ScanFilter(
        include_folders=tuple(include_folders or ()),
        exclude_folders=tuple(exclude_folders or ()),
        extensions=tuple(extensions or DEFAULT_EXTENSIONS),
        skip=(Path(output_root),),
    )
    return scan([Path(root)], scan_filter)


@task(cache_policy=NO_CACHE)
async def process_batch(
    files: list[SourceFile], all_roots: list[str], job: dict[str, Any]
) -> dict[str, Any]:
    """``files`` (one folder's) through ``run_batch``; its summary as JSON."""
    url = client_url(job["url"])
    client = AsyncStackClient.connect(url, client_key(job["api_key"], url))
    try:
        spec = BatchSpec(
            roots=tuple(Path(root) for root in all_roots), mapping=await _mapping(client, job),
            output_root=Path(job["output_root"]), concurrency=job["concurrency"],
            retries=job["retries"], overwrite=job["overwrite"],
        )  # fmt: skip
        return (await run_batch(spec, client, files=files)).to_json()
    finally:
        await client.aclose()


async def _mapping(client: AsyncStackClient, job: dict[str, Any]) -> Mapping:
    raw = [f"{name}={value}" for name, value in (job.get("params") or {}).items()]
    if job.get("graph"):
        return graph_mapping(Path(job["graph"]), job["image_node"], raw)
    return await template_mapping(client, job["workflow"], raw, job.get("image_param"))


def _added_up(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary for many (a batch's, or already added up: ``folders`` counts them)."""
    total: dict[str, Any] = dict.fromkeys(_COUNTED, 0) | {
        "folders": 0,
        "failed": [],
        "rejected": [],
    }
    for summary in summaries:
        total["folders"] += summary.get("folders", 1)
        for name in _COUNTED:
            total[name] += summary[name]
        total["failed"] += summary["failed"]
        total["rejected"] += summary["rejected"]
    total["ok"] = all(summary["ok"] for summary in summaries)
    return total


_COUNTED = ("found", "done", "already_done", "interrupted", "outputs", "throttled")
