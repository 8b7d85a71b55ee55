"""The normalised job view of ComfyUI 0.26.0's `/api/jobs` (protocol notes §9.3).

A job is one prompt seen from the queue or from history:

- `pending` / `in_progress` (from the queue): `id, status, priority, create_time,
  outputs_count` (0), `previewable_outputs_count` (0), `workflow_id`;
- `completed` / `failed` / `cancelled` (from history; `cancelled` = an error whose messages
  hold `execution_interrupted`): the same keys plus `execution_start_time`,
  `execution_end_time`, `execution_error` and `preview_output`;
- keys whose value is None are dropped; the detail view adds `outputs` (normalised),
  `execution_status` (finished jobs) and `workflow: {prompt, extra_data}` (every job).

`preview_output` is one output item plus `nodeId` and `mediaType`, chosen in this order: saved
visual media, other visual media, a saved text file, raw text (`{content, truncated?}`, at most
1024 characters). Everything here is pure: it reads a `PromptQueue` and never changes it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from comfy_emulator.prompt_queue import PromptQueue, QueueEntry

JsonDict = dict[str, Any]

JOB_STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")
SORT_KEYS = ("created_at", "execution_duration")
PREVIEWABLE_MEDIA = frozenset({"images", "video", "audio", "3d", "text"})
THREE_D_SUFFIXES = (".obj", ".fbx", ".gltf", ".glb", ".usdz")
TEXT_FILE_SUFFIXES = (".txt", ".md", ".json")
TEXT_PREVIEW_MAX_CHARS = 1024
_END_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


class BadJobQuery(ValueError):
    """A query parameter of GET /api/jobs that ComfyUI answers with 400."""


@dataclass(frozen=True)
class JobQuery:
    """The parsed query of GET /api/jobs."""

    statuses: tuple[str, ...] = JOB_STATUSES
    workflow_id: str | None = None
    sort_by: str = "created_at"
    descending: bool = True
    limit: int | None = None
    offset: int = 0

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> JobQuery:
        """Validate like ComfyUI, in its order; BadJobQuery carries ComfyUI's message."""
        statuses = _statuses(query.get("status"))
        sort_by = query.get("sort_by", "created_at").lower()
        if sort_by not in SORT_KEYS:
            raise BadJobQuery("sort_by must be 'created_at' or 'execution_duration'")
        sort_order = query.get("sort_order", "desc").lower()
        if sort_order not in ("asc", "desc"):
            raise BadJobQuery("sort_order must be 'asc' or 'desc'")
        return cls(
            statuses=statuses,
            workflow_id=query.get("workflow_id") or None,
            sort_by=sort_by,
            descending=sort_order == "desc",
            limit=_limit(query.get("limit")),
            offset=_offset(query.get("offset")),
        )


def _statuses(param: str | None) -> tuple[str, ...]:
    if not param:
        return JOB_STATUSES
    wanted = tuple(s.strip().lower() for s in param.split(",") if s.strip())
    invalid = [s for s in wanted if s not in JOB_STATUSES]
    if invalid:
        raise BadJobQuery(
            f"Invalid status value(s): {', '.join(invalid)}. "
            f"Valid values: {', '.join(JOB_STATUSES)}"
        )
    return wanted or JOB_STATUSES


def _limit(param: str | None) -> int | None:
    if param is None:
        return None
    try:
        limit = int(param)
    except ValueError:
        raise BadJobQuery("limit must be an integer") from None
    if limit <= 0:
        raise BadJobQuery("limit must be a positive integer")
    return limit


def _offset(param: str | None) -> int:
    if param is None:
        return 0
    try:
        return max(int(param), 0)  # a negative offset counts as 0
    except ValueError:
        raise BadJobQuery("offset must be an integer") from None


# ---- the two views --------------------------------------------------------------------------


def list_jobs(queue: PromptQueue, query: JobQuery) -> JsonDict:
    """GET /api/jobs: `{"jobs": [...], "pagination": {offset, limit, total, has_more}}`."""
    jobs = [job for job in _all_jobs(queue) if job["status"] in query.statuses]
    if query.workflow_id:
        jobs = [job for job in jobs if job.get("workflow_id") == query.workflow_id]
    sort_key = _duration if query.sort_by == "execution_duration" else _created
    jobs.sort(key=sort_key, reverse=query.descending)  # stable: ties keep queue order
    total = len(jobs)
    end = None if query.limit is None else query.offset + query.limit
    page = jobs[query.offset : end]
    pagination = {
        "offset": query.offset,
        "limit": query.limit,
        "total": total,
        "has_more": query.offset + len(page) < total,
    }
    return {"jobs": page, "pagination": pagination}


def find_job(queue: PromptQueue, prompt_id: str) -> JsonDict | None:
    """GET /api/jobs/{id}: the detail view, or None for an unknown id."""
    if prompt_id in queue.history:
        return finished_job(prompt_id, queue.history[prompt_id], detail=True)
    for status, entries in (("in_progress", queue.running.values()), ("pending", queue.pending)):
        for entry in entries:
            if entry.prompt_id == prompt_id:
                return queued_job(entry, status, detail=True)
    return None


def _all_jobs(queue: PromptQueue) -> Iterator[JsonDict]:
    for entry in queue.running.values():
        yield queued_job(entry, "in_progress")
    for entry in queue.pending:
        yield queued_job(entry, "pending")
    for prompt_id, record in queue.history.items():
        yield finished_job(prompt_id, record)


def _created(job: JsonDict) -> int:
    return int(job.get("create_time", 0))


def _duration(job: JsonDict) -> int:
    start, end = job.get("execution_start_time"), job.get("execution_end_time")
    return int(end - start) if start and end else 0


# ---- one job --------------------------------------------------------------------------------


def queued_job(entry: QueueEntry, status: str, *, detail: bool = False) -> JsonDict:
    job = _without_nones(
        {
            "id": entry.prompt_id,
            "status": status,
            "priority": entry.number,
            "create_time": entry.extra_data.get("create_time"),
            "outputs_count": 0,
            "previewable_outputs_count": 0,
            "workflow_id": _workflow_id(entry.extra_data),
        }
    )
    if detail:
        job["workflow"] = {"prompt": entry.prompt, "extra_data": entry.extra_data}
    return job


def finished_job(prompt_id: str, record: JsonDict, *, detail: bool = False) -> JsonDict:
    number, _, prompt, extra_data, _ = record["prompt"]
    status = record.get("status") or {}
    events = _events(status.get("messages", []))
    outputs = record.get("outputs", {})
    count, previewable, preview = outputs_summary(outputs)
    end_event = next((name for name in _END_EVENTS if name in events), None)
    job = _without_nones(
        {
            "id": prompt_id,
            "status": job_status(status.get("status_str"), events),
            "priority": number,
            "create_time": extra_data.get("create_time"),
            "execution_start_time": events.get("execution_start", {}).get("timestamp"),
            "execution_end_time": events[end_event].get("timestamp") if end_event else None,
            "execution_error": events.get("execution_error"),
            "outputs_count": count,
            "previewable_outputs_count": previewable,
            "preview_output": preview,
            "workflow_id": _workflow_id(extra_data),
        }
    )
    if detail:
        job["outputs"] = normalize_outputs(outputs)
        job["execution_status"] = status
        job["workflow"] = {"prompt": prompt, "extra_data": extra_data}
    return job


def job_status(status_str: str | None, events: Mapping[str, Any]) -> str:
    """A history entry's job status; an interrupted prompt is `cancelled`, not `failed`."""
    if status_str != "error":
        return "completed"
    return "cancelled" if "execution_interrupted" in events else "failed"


def _events(messages: list[Any]) -> dict[str, JsonDict]:
    """History `messages` ([name, data] pairs) by name; a later message of a name wins."""
    return {
        message[0]: message[1]
        for message in messages
        if isinstance(message, list) and len(message) >= 2 and isinstance(message[1], dict)
    }


def _workflow_id(extra_data: JsonDict) -> Any:
    return (extra_data.get("extra_pnginfo") or {}).get("workflow", {}).get("id")


def _without_nones(job: JsonDict) -> JsonDict:
    return {key: value for key, value in job.items() if value is not None}


# ---- outputs --------------------------------------------------------------------------------


def normalize_outputs(outputs: JsonDict) -> JsonDict:
    """History outputs as the detail view shows them: 3D file names become file items and
    None items are dropped; everything else is kept as it is."""
    normalized: JsonDict = {}
    for node_id, ui in outputs.items():
        if not isinstance(ui, dict):
            normalized[node_id] = ui
            continue
        normalized[node_id] = {
            media: items
            if media == "animated" or not isinstance(items, list)
            # a 3D file name becomes a file item; any other item stays as it is
            else [_file_item(item) or item for item in items if item is not None]
            for media, items in ui.items()
        }
    return normalized


def outputs_summary(outputs: JsonDict) -> tuple[int, int, JsonDict | None]:
    """(outputs_count, previewable_outputs_count, preview_output) of history outputs.

    Only file items count (raw text is preview-only metadata); the preview is the best-ranked
    candidate, the first one found within a rank.
    """
    count = previewable = 0
    candidates: dict[int, JsonDict] = {}
    for node_id, media, item in _output_items(outputs):
        file_item = _file_item(item)
        if file_item is None:
            if media == "text" and isinstance(item, str):
                candidates.setdefault(3, _enriched(_text_preview(item), node_id, media))
            continue
        count += 1
        if _is_previewable(media, file_item):
            previewable += 1
            rank = _preview_rank(media, file_item)
            candidates.setdefault(rank, _enriched(file_item, node_id, media))
    return count, previewable, candidates[min(candidates)] if candidates else None


def _output_items(outputs: JsonDict) -> Iterator[tuple[str, str, Any]]:
    for node_id, ui in outputs.items():
        if not isinstance(ui, dict):
            continue
        for media, items in ui.items():
            if media != "animated" and isinstance(items, list):
                yield from ((node_id, media, item) for item in items)


def _file_item(item: Any) -> JsonDict | None:
    if isinstance(item, dict):
        return item
    if isinstance(item, str) and item.lower().endswith(THREE_D_SUFFIXES):
        return {"filename": item, "type": "output", "subfolder": "", "mediaType": "3d"}
    return None


def _is_previewable(media: str, item: JsonDict) -> bool:
    if media in PREVIEWABLE_MEDIA:
        return True
    if str(item.get("format", "")).startswith(("video/", "audio/")):
        return True
    return str(item.get("filename", "")).lower().endswith(THREE_D_SUFFIXES + TEXT_FILE_SUFFIXES)


def _preview_rank(media: str, item: JsonDict) -> int:
    """0 saved visual media, 1 other visual media, 2 a saved text file."""
    if media == "text" or str(item.get("filename", "")).lower().endswith(TEXT_FILE_SUFFIXES):
        return 2
    return 0 if item.get("type") == "output" else 1


def _enriched(item: JsonDict, node_id: str, media: str) -> JsonDict:
    """The preview: the item plus its node id, and its media type unless it names one."""
    return {**item, "nodeId": node_id, "mediaType": item.get("mediaType", media)}


def _text_preview(text: str) -> JsonDict:
    if len(text) <= TEXT_PREVIEW_MAX_CHARS:
        return {"content": text}
    return {"content": text[:TEXT_PREVIEW_MAX_CHARS], "truncated": True}
