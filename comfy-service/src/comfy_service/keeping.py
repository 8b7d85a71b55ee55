"""Copying a finished prompt's outputs from ComfyUI into the output store.

A task succeeds only once every output is stored and held for it (``comfy_shared.outputs``):
then the node that made them may vanish, and the balancer still serves them. A file is
streamed from ComfyUI's ``/view``; a text a node reported is stored from the text the output
carries (``comfy_shared.outputs.texts``), which the stored output then drops. Storing is
idempotent: a second finish of the same task (a reconciliation after a restart) stores
nothing new and holds nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from comfy_shared.comfyui import ComfyClient
from comfy_shared.models import TaskOutput, TaskRecord
from comfy_shared.outputs.catalog import (
    OutputCatalog,
    hold_when_free,
    missing_blobs,
    release_outputs,
)
from comfy_shared.outputs.store import OutputStore, StoredBlob
from comfy_shared.outputs.texts import is_text, text_bytes


class OutputKeeper:
    def __init__(
        self,
        *,
        store: OutputStore,
        catalog: OutputCatalog,
        comfy: ComfyClient,
        ttl_s: int,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._comfy = comfy
        self._ttl_s = ttl_s

    async def keep(
        self, task: TaskRecord, outputs: list[TaskOutput], finished_at: datetime
    ) -> tuple[list[TaskOutput], bool]:
        """The outputs with their digests and sizes once stored and held for ``task``, and
        whether this call held them (False: an earlier finish of the task did). Raises
        :class:`StoreUnavailable` or a ComfyUI error when an output cannot be copied."""
        task_id = task.id
        ttl_s = min(task.output_ttl_s or self._ttl_s, self._ttl_s)
        blobs = [await self._copy(output) for output in outputs]
        held = await self._hold(task_id, outputs, blobs, finished_at, ttl_s)
        stored = [
            output.model_copy(update={"sha256": blob.digest, "size": blob.size, "text": None})
            for output, blob in zip(outputs, blobs, strict=True)
        ]
        if held:
            await self._store.put_manifest(task_id, _manifest(task_id, stored))
        return stored, held

    async def release(self, task_id: str) -> None:
        """Let go of outputs held for an attempt that turned out to be over."""
        await release_outputs(self._catalog, self._store, task_id)

    async def _copy(self, output: TaskOutput) -> StoredBlob:
        if is_text(output):
            return await self._store.put(_one_chunk(text_bytes(output)))
        async with self._comfy.stream_view(output.filename, output.subfolder, output.type) as view:
            return await self._store.put(view.iter_bytes())

    async def _hold(
        self,
        task_id: str,
        outputs: list[TaskOutput],
        blobs: list[StoredBlob],
        finished_at: datetime,
        ttl_s: int,
    ) -> bool:
        expires_at = finished_at + timedelta(seconds=ttl_s)
        hold = await hold_when_free(
            self._catalog,
            task_id,
            blobs,
            finished_ms=int(finished_at.timestamp() * 1000),
            expires_ms=int(expires_at.timestamp() * 1000),
        )
        for position in await missing_blobs(self._store, blobs):
            await self._copy(outputs[position])
        return hold.outcome == "held"


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _manifest(task_id: str, outputs: list[TaskOutput]) -> bytes:
    """What the task made, readable from the store alone (Redis forgets the task after its
    retention)."""
    listed = [output.model_dump(mode="json") for output in outputs]
    return json.dumps({"task_id": task_id, "outputs": listed}, indent=1).encode()
