"""``/api/jobs``: ComfyUI's normalised job view, which the frontend's queue and history panels
read (and validate: a page that does not fit its schema is dropped whole, so every field here
has the type the frontend's ``jobTypes.ts`` asks for).

- A job is one of the user's tasks: ``pending`` (queued), ``in_progress`` (placed on a node
  or running), ``completed``, ``failed``, ``cancelled`` (a cancel before or while it ran).
- Every job: ``id``, ``status``, ``priority`` (the ``number`` ``/prompt`` answered),
  ``create_time`` (ms), ``outputs_count``, ``previewable_outputs_count``, ``workflow_id``
  (``extra_pnginfo.workflow.id``, a string, when sent); an ended one also
  ``execution_start_time``, ``execution_end_time``, ``preview_output`` (one output file with
  its ``nodeId`` and ``mediaType``: saved media first) and, when it failed,
  ``execution_error`` (ComfyUI's payload, every required field a string). Null keys are
  left out, as ComfyUI does.
- The detail adds ``outputs`` (as in history), ``execution_status`` (history's status, once
  ended), ``workflow: {prompt, extra_data}`` and ``update_time``.
- The list takes ComfyUI's query (``status``, ``workflow_id``, ``sort_by`` ``created_at`` or
  ``execution_duration``, ``sort_order``, ``limit``, ``offset``; a bad value: 400
  ``{"error"}``) and always answers a numeric ``pagination.limit`` (the frontend requires
  one; ComfyUI sends null without a ``limit``): at most :data:`MAX_LIMIT` jobs a page.
  It lists the user's retained tasks with their status in one round trip, then reads only
  the page's tasks (all matching ones when filtering by workflow or sorting by duration).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Final

from comfy_balancer.gateway.history import (
    MAX_HISTORY_ITEMS,
    execution_error,
    extra_data,
    history_status,
    ms,
    shown_graph,
)
from comfy_balancer.gateway.naming import ui_outputs
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import Submission, TaskStore

JsonObject = dict[str, Any]
JOB_STATUSES: Final = ("pending", "in_progress", "completed", "failed", "cancelled")
JOB_STATUS_OF: Final = {
    TaskStatus.QUEUED: "pending",
    TaskStatus.DISPATCHED: "in_progress",
    TaskStatus.RUNNING: "in_progress",
    TaskStatus.SUCCEEDED: "completed",
    TaskStatus.FAILED: "failed",
    TaskStatus.CANCELLED: "cancelled",
}
MAX_LIMIT: Final = 1_000
PREVIEW_MEDIA: Final = ("images", "video", "audio")
TEXT_SUFFIXES: Final = (".txt", ".md", ".json")


class BadJobQuery(ValueError):
    """A query ComfyUI answers with 400 ``{"error": <this message>}``."""


@dataclass(frozen=True, slots=True)
class JobQuery:
    statuses: tuple[str, ...] = JOB_STATUSES
    workflow_id: str | None = None
    by_duration: bool = False
    descending: bool = True
    limit: int = MAX_LIMIT
    offset: int = 0

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> JobQuery:
        """Checked as ComfyUI checks it, in its order, with its messages."""
        sort_by = query.get("sort_by", "created_at").lower()
        if sort_by not in ("created_at", "execution_duration"):
            raise BadJobQuery("sort_by must be 'created_at' or 'execution_duration'")
        sort_order = query.get("sort_order", "desc").lower()
        if sort_order not in ("asc", "desc"):
            raise BadJobQuery("sort_order must be 'asc' or 'desc'")
        return cls(
            statuses=_statuses(query.get("status")),
            workflow_id=query.get("workflow_id") or None,
            by_duration=sort_by == "execution_duration",
            descending=sort_order == "desc",
            limit=_limit(query.get("limit")),
            offset=_offset(query.get("offset")),
        )


def _statuses(param: str | None) -> tuple[str, ...]:
    wanted = tuple(s.strip().lower() for s in (param or "").split(",") if s.strip())
    if invalid := [s for s in wanted if s not in JOB_STATUSES]:
        raise BadJobQuery(
            f"Invalid status value(s): {', '.join(invalid)}. "
            f"Valid values: {', '.join(JOB_STATUSES)}"
        )
    return wanted or JOB_STATUSES


def _limit(param: str | None) -> int:
    if param is None:
        return MAX_LIMIT
    try:
        limit = int(param)
    except ValueError:
        raise BadJobQuery("limit must be an integer") from None
    if limit <= 0:
        raise BadJobQuery("limit must be a positive integer")
    return min(limit, MAX_LIMIT)


def _offset(param: str | None) -> int:
    try:
        return max(0, int(param)) if param is not None else 0
    except ValueError:
        raise BadJobQuery("offset must be an integer") from None


async def list_jobs(store: TaskStore, tenant: str, query: JobQuery) -> JsonObject:
    listed = await store.recent_statuses(tenant, MAX_HISTORY_ITEMS)  # newest first
    matching = [
        item.task_id
        for item in listed
        if item.status is not None and JOB_STATUS_OF[item.status] in query.statuses
    ]
    if query.workflow_id is not None or query.by_duration:
        jobs = await _jobs_of(store, tenant, matching)
        jobs = [j for j in jobs if query.workflow_id in (None, j.get("workflow_id"))]
        jobs.sort(key=_duration if query.by_duration else _created, reverse=query.descending)
        return _page(jobs[query.offset : query.offset + query.limit], query, len(jobs))
    if not query.descending:
        matching.reverse()
    page = matching[query.offset : query.offset + query.limit]
    return _page(await _jobs_of(store, tenant, page), query, len(matching))


async def _jobs_of(store: TaskStore, tenant: str, ids: list[str]) -> list[JsonObject]:
    found = await store.find_submissions(ids)
    return [
        job(submission)
        for submission in found.values()
        if submission is not None and submission.record.tenant == tenant
    ]


def _page(jobs: list[JsonObject], query: JobQuery, total: int) -> JsonObject:
    return {
        "jobs": jobs,
        "pagination": {
            "offset": query.offset,
            "limit": query.limit,
            "total": total,
            "has_more": query.offset + len(jobs) < total,
        },
    }


def _created(job: JsonObject) -> int:
    return int(job["create_time"])


def _duration(job: JsonObject) -> int:
    start, end = job.get("execution_start_time"), job.get("execution_end_time")
    return int(end - start) if start is not None and end is not None else 0


async def find_job(store: TaskStore, tenant: str, job_id: str) -> JsonObject | None:
    """The detail of the tenant's job, or None (ComfyUI: 404 ``Job not found``)."""
    submission = (await store.find_submissions([job_id]))[job_id]
    if submission is None or submission.record.tenant != tenant:
        return None
    return job(submission, detail=True)


def job(submission: Submission, *, detail: bool = False) -> JsonObject:
    record = submission.record
    origin = submission.origin
    outputs = ui_outputs(record.id, record.outputs)
    files = list(_files(outputs))
    fields: JsonObject = {
        "id": record.id,
        "status": JOB_STATUS_OF[record.status],
        "priority": origin.number if origin is not None else 0,
        "create_time": ms(record.created_at),
        "outputs_count": len(files),
        "previewable_outputs_count": len(files),
        "workflow_id": _workflow_id(origin.extra_data if origin is not None else {}),
    }
    if record.status.is_terminal:
        fields |= {
            "execution_start_time": ms(record.started_at),
            "execution_end_time": ms(record.finished_at),
            "preview_output": _preview(files),
            "execution_error": execution_error(submission)
            if record.status is TaskStatus.FAILED
            else None,
        }
    if detail:
        fields |= {
            "outputs": outputs,
            "execution_status": history_status(submission) if record.status.is_terminal else None,
            "workflow": {"prompt": shown_graph(submission), "extra_data": extra_data(submission)},
            "update_time": ms(record.updated_at),
        }
    return {key: value for key, value in fields.items() if value is not None}


def _workflow_id(data: Mapping[str, Any]) -> str | None:
    pnginfo = data.get("extra_pnginfo")
    workflow = pnginfo.get("workflow") if isinstance(pnginfo, dict) else None
    workflow_id = workflow.get("id") if isinstance(workflow, dict) else None
    return workflow_id if isinstance(workflow_id, str) else None


def _files(outputs: Mapping[str, JsonObject]) -> list[tuple[str, str, JsonObject]]:
    return [
        (node_id, media, item)
        for node_id, ui in outputs.items()
        for media, items in ui.items()
        if media in PREVIEW_MEDIA and isinstance(items, list)
        for item in items
    ]


def _preview(files: list[tuple[str, str, JsonObject]]) -> JsonObject | None:
    """ComfyUI's choice: saved media first, then other media, then a saved text file."""
    if not files:
        return None
    node_id, media, item = min(files, key=_preview_rank)
    return {**item, "nodeId": node_id, "mediaType": media}


def _preview_rank(file: tuple[str, str, JsonObject]) -> int:
    item = file[2]
    if PurePosixPath(str(item.get("filename", ""))).suffix.lower() in TEXT_SUFFIXES:
        return 2
    return 0 if item.get("type") == "output" else 1
