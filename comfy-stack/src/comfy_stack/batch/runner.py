"""Running a batch: files submitted through the balancer with a bounded number in flight,
followed to their end, their outputs saved; every step in the manifest.

Errors, by who can mend them:
- **the API asks to wait** (429 ``rate_limited``/``queue_full``/..., 503): every worker waits
  for its ``Retry-After`` (else a backoff) and sends the same request again; no attempt of the
  file is spent, since no task was made;
- **transient** (no answer, 5xx): the same request again after a growing backoff, up to
  ``transient_tries``; then the run stops as on Ctrl-C (``unreachable``). Failing the file
  instead would send it again under a new key while its first task may well run on;
- **the task failed**: another attempt (a new idempotency key, so a new task) up to
  ``retries``, unless its error is ``validation`` (the graph or the image is wrong: it would
  fail again) or the API refused the request (4xx): those are final;
- **the key is refused** (401, 403): the run stops, nothing is recorded against the files.

Stopping (``stop`` set, e.g. on Ctrl-C): no new submit; the workers are cancelled where they
are and the manifest keeps what each file reached, so the next run resumes tasks in flight
(following the same task, or sending the same request under the same key) instead of
running them again.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from comfy_stack.batch.manifest import FileRecord, Manifest
from comfy_stack.batch.mapping import Mapping
from comfy_stack.batch.plan import WorkItem, make_items, make_plan
from comfy_stack.batch.report import BatchSummary, Counts, FileFailure, ProgressSink
from comfy_stack.batch.scan import ScanFilter, ScanResult, SourceFile, scan
from comfy_stack.client import TERMINAL, ApiError, AsyncStackClient

T = TypeVar("T")
WAIT_STATUSES = frozenset({429, 503})
TRANSIENT_STATUSES = frozenset({408, 500, 502, 504})
FATAL_STATUSES = frozenset({401, 403})
POLL_S = (0.05, 1.0)
"""First and longest pause between two looks at a running task (each pause 1.5 times the last)."""


@dataclass(frozen=True)
class BatchSpec:
    """A batch: which images (``roots``, ``scan_filter``), what runs on each (``mapping``,
    with its parameters), where results go (``output_root``) and how hard to push."""

    roots: tuple[Path, ...]
    mapping: Mapping
    output_root: Path
    scan_filter: ScanFilter = field(default_factory=ScanFilter)
    concurrency: int = 8
    """Files in flight at once (submitted and not yet saved)."""
    retries: int = 2
    """Further attempts of a failed file, over this run and later ones."""
    overwrite: bool = False
    """Replace existing files in the output root (else the run refuses to start)."""
    transient_tries: int = 6
    poll_s: tuple[float, float] = POLL_S

    def scan(self) -> ScanResult:
        skip = (*self.scan_filter.skip, self.output_root)
        return scan(self.roots, ScanFilter(**{**_fields(self.scan_filter), "skip": skip}))


class OutputConflict(Exception):
    """Outputs would replace existing files (and ``overwrite`` is off): nothing was sent."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        shown = ", ".join(str(path) for path in paths[:5])
        more = f" and {len(paths) - 5} more" if len(paths) > 5 else ""
        super().__init__(f"would overwrite {shown}{more} (use --overwrite to replace them)")


class _FileFailed(Exception):
    def __init__(self, error: dict[str, str], *, final: bool) -> None:
        super().__init__(error.get("message", ""))
        self.error = error
        self.final = final


class _Aborted(Exception):
    """The whole run must stop: the key is refused, or the API no longer answers."""

    def __init__(self, reason: str, *, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.unreachable = unreachable


async def run_batch(
    spec: BatchSpec,
    client: AsyncStackClient,
    *,
    progress: ProgressSink | None = None,
    stop: asyncio.Event | None = None,
    files: list[SourceFile] | None = None,
) -> BatchSummary:
    """Run ``spec`` (or only ``files`` of it, already scanned) and say how it went.

    Raises MappingError (parameters that do not fit) or OutputConflict before anything is
    sent. ``stop``: set it to end the run early, consistently (see the module's docstring).
    """
    scanned = spec.scan() if files is None else ScanResult(files=files)
    items = make_items(scanned.files, spec.mapping, spec.roots)
    manifest = Manifest.open(spec.output_root)
    try:
        plan = make_plan(
            items, manifest.records(), spec.output_root,
            retries=spec.retries, overwrite=spec.overwrite,
        )  # fmt: skip
        if plan.conflicts:
            raise OutputConflict(plan.conflicts)
        summary = BatchSummary(found=len(items), already_done=len(plan.done))
        summary.manifest = str(manifest.path)
        summary.rejected = [{"path": str(r.path), "reason": r.reason} for r in scanned.rejected]
        summary.failed = [_given_up(record) for _, record in plan.given_up]
        run = _Run(spec, client, manifest, summary, progress)
        await run.all(plan.todo, stop or asyncio.Event())
        return summary
    finally:
        manifest.close()


def _given_up(record: FileRecord) -> FileFailure:
    return FileFailure(record.file, record.error or {}, record.attempt, final=True)


def _fields(scan_filter: ScanFilter) -> dict[str, Any]:
    return {name: getattr(scan_filter, name) for name in scan_filter.__slots__}


class _Run:
    def __init__(
        self,
        spec: BatchSpec,
        client: AsyncStackClient,
        manifest: Manifest,
        summary: BatchSummary,
        progress: ProgressSink | None,
    ) -> None:
        self._spec = spec
        self._client = client
        self._manifest = manifest
        self._summary = summary
        self._progress = progress
        self._counts = Counts()
        self._started = time.monotonic()
        self._resume_at = 0.0
        """Monotonic time before which no request is sent (the API asked to wait)."""

    async def all(self, items: list[WorkItem], stop: asyncio.Event) -> None:
        self._counts.total = len(items)
        self._report()
        pending: asyncio.Queue[WorkItem] = asyncio.Queue()
        for item in items:
            pending.put_nowait(item)
        workers = [
            asyncio.create_task(self._work(pending), name=f"batch-worker-{n}")
            for n in range(max(1, min(self._spec.concurrency, len(items))))
        ]
        stopping = asyncio.create_task(stop.wait())
        try:
            await _until_done_or_stopped(set(workers), stopping)
        except _Aborted as exc:
            self._summary.aborted = str(exc)
            self._summary.unreachable = exc.unreachable
        finally:
            for task in (*workers, stopping):
                task.cancel()
            await asyncio.gather(*workers, stopping, return_exceptions=True)
            self._summary.interrupted = len(items) - self._counts.finished
            self._summary.elapsed_s = time.monotonic() - self._started
            self._report()

    async def _work(self, pending: asyncio.Queue[WorkItem]) -> None:
        while not pending.empty():
            item = pending.get_nowait()
            self._counts.running += 1
            self._report()
            try:
                await self._one(item)
            finally:
                self._counts.running -= 1
                self._report()

    async def _one(self, item: WorkItem) -> None:
        record = self._manifest.get(item.name)
        if record is None or record.key != item.key:
            record = FileRecord(item.name, item.key, "failed", attempt=0)
        while True:
            try:
                record = await self._attempt(item, record)
            except _FileFailed as failed:
                record = self._manifest.get(item.name) or record  # the step it reached
                record = record.step("failed", error=failed.error, final=failed.final)
                self._manifest.record(record)
                if failed.final or record.attempt > self._spec.retries:
                    self._fail(record)
                    return
                continue
            self._counts.done += 1
            self._summary.done += 1
            self._summary.outputs += len(record.outputs)
            return

    async def _attempt(self, item: WorkItem, record: FileRecord) -> FileRecord:
        """Take ``item`` from where ``record`` left it to done (its new record)."""
        if record.state in ("failed", "done"):  # done: its outputs went missing
            record = record.step("submitting", attempt=record.attempt + 1, task_id=None)
            self._manifest.record(record)
        if record.state == "submitting":
            task_id = await self._submit(item, record.attempt)
            record = record.step("submitted", task_id=task_id)
            self._manifest.record(record)
        assert record.task_id is not None
        task = await self._follow(record.task_id)
        if task["status"] != "succeeded":
            error = _task_error(task)
            raise _FileFailed(error, final=error["type"] == "validation")
        return await self._save(item, record, task)

    async def _submit(self, item: WorkItem, attempt: int) -> str:
        try:
            data = item.source.path.read_bytes()
        except OSError as exc:  # gone or unreadable since the scan
            error = {"type": "unreadable", "code": "unreadable", "message": str(exc)}
            raise _FileFailed(error, final=True) from exc
        key = f"batch-{item.key}-{attempt}"
        try:
            return await self._call(
                lambda: self._spec.mapping.submit(self._client, item.source, data, item.params, key)
            )
        except ApiError as exc:
            raise _FileFailed(_refusal(exc), final=True) from exc

    async def _follow(self, task_id: str) -> dict[str, Any]:
        pause_s, longest_s = self._spec.poll_s
        while True:
            try:
                task = await self._call(lambda: self._client.task(task_id))
            except ApiError as exc:
                raise _FileFailed(_refusal(exc, "lost"), final=False) from exc
            if task["status"] in TERMINAL:
                return task
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * 1.5, longest_s)

    async def _save(self, item: WorkItem, record: FileRecord, task: dict[str, Any]) -> FileRecord:
        root = self._spec.output_root
        outputs: list[dict[str, Any]] = task["outputs"]
        names = [item.output_name(i, output["filename"]) for i, output in enumerate(outputs)]
        ours = {root / name for name in record.outputs} if record.state == "saving" else set()
        taken = [root / n for n in names if (root / n).exists() and root / n not in ours]
        if taken and not self._spec.overwrite:
            error = {"type": "output_exists", "code": "output_exists", "message": str(taken[0])}
            raise _FileFailed(error, final=True)
        parts = [_part_path(root / name) for name in names]
        try:
            for output, part in zip(outputs, parts, strict=True):
                part.parent.mkdir(parents=True, exist_ok=True)
                await self._download(output["url"], part)
            # From here to the end nothing awaits: a cancelled run never stops half-way.
            record = record.step("saving", outputs=names)
            self._manifest.record(record)
            for part, name in zip(parts, names, strict=True):
                part.replace(root / name)
        except ApiError as exc:
            raise _FileFailed(_refusal(exc, "download"), final=False) from exc
        finally:
            for part in parts:
                part.unlink(missing_ok=True)
        record = record.step("done")
        self._manifest.record(record)
        return record

    async def _download(self, url: str, part: Path) -> None:
        await self._call(lambda: self._client.download(url, part))

    async def _call(self, request: Callable[[], Awaitable[T]]) -> T:
        """``request`` until it is answered: waiting as the API asks, retrying what is
        transient, stopping the run on a refused key or once retrying is spent."""
        tries = 0
        while True:
            await self._wait_turn()
            try:
                return await request()
            except ApiError as exc:
                if exc.status in FATAL_STATUSES:
                    raise _Aborted(f"the API refused the key: {exc}") from exc
                if exc.status in WAIT_STATUSES:
                    self._summary.throttled += 1
                    self._hold(exc.retry_after_s or _backoff_s(tries))
                    continue  # not a try: the API said when
                if exc.status not in TRANSIENT_STATUSES:
                    raise
                error = _refusal(exc, "service")
            except httpx.TransportError as exc:
                error = {"type": "transport", "code": type(exc).__name__, "message": str(exc)}
            tries += 1
            if tries >= self._spec.transient_tries:
                reason = f"no answer after {tries} tries: {error['message']}"
                raise _Aborted(reason, unreachable=True)
            await asyncio.sleep(_backoff_s(tries))

    async def _wait_turn(self) -> None:
        # A deadline, not an event: a later 429 may push it further while we sleep.
        while (wait_s := self._resume_at - time.monotonic()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(wait_s)

    def _hold(self, seconds: float) -> None:
        self._resume_at = max(self._resume_at, time.monotonic() + seconds)

    def _fail(self, record: FileRecord) -> None:
        self._counts.failed += 1
        final = record.final or record.attempt > self._spec.retries
        self._summary.failed.append(
            FileFailure(record.file, record.error or {}, record.attempt, final=final)
        )

    def _report(self) -> None:
        if self._progress is not None:
            self._counts.elapsed_s = time.monotonic() - self._started
            self._progress.update(self._counts)


async def _until_done_or_stopped(
    workers: set[asyncio.Task[None]], stopping: asyncio.Task[Any]
) -> None:
    """Wait for every worker, or ``stopping``; a worker's error is raised at once."""
    while workers and not stopping.done():
        done, _ = await asyncio.wait({*workers, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in done - {stopping}:
            workers.discard(task)
            task.result()


def _task_error(task: dict[str, Any]) -> dict[str, str]:
    if task["status"] == "cancelled":
        return {"type": "cancelled", "code": "cancelled", "message": "the task was cancelled"}
    error = task.get("error") or {}
    return {
        "type": str(error.get("type", "service")),
        "code": str(error.get("code", error.get("type", "error"))),
        "message": str(error.get("message", "")),
    }


def _refusal(exc: ApiError, kind: str = "validation") -> dict[str, str]:
    return {"type": kind, "code": exc.code, "message": f"HTTP {exc.status}: {exc}"}


def _part_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.part")


def _backoff_s(tries: int) -> float:
    return float(min(8.0, 0.25 * 2**tries) * random.uniform(0.5, 1.0))
