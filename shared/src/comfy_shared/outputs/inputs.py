"""A task's input files (uploaded images, images fetched from a URL) kept in the output store
while the task lives: content-addressed like outputs, so a file sent with a thousand tasks is
stored once, and Redis keeps a reference per task instead of the bytes.

Whoever accepts a task keeps its inputs (:meth:`InputStash.keep`) before creating it; the node
that runs an attempt loads them (:meth:`InputStash.load`) and uploads them to its ComfyUI. The
blobs are held for the task under :func:`inputs_holder` until it ends: the write that ends a
task makes that hold due (``task_store``), and the next retention sweep releases it. A task
that never ends (its creator died before creating it) lets go when the hold expires, after the
task retention.

A reference is ``sha256:<hex>``; any other value in a task's inputs hash is the file itself in
base64 (what a task created before the store kept inputs holds).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Final

from comfy_shared.clock import now_ms
from comfy_shared.models import InputFile
from comfy_shared.outputs.catalog import (
    OutputCatalog,
    hold_when_free,
    inputs_holder,
    missing_blobs,
    release_outputs,
)
from comfy_shared.outputs.store import BlobMissing, OutputStore, StoredBlob, StoreUnavailable

REFERENCE_PREFIX: Final = "sha256:"


@dataclass(frozen=True, slots=True)
class KeptInputs:
    task_id: str
    references: dict[str, str]
    """Each file's name -> its reference, what the task's inputs hash keeps."""
    held_now: bool
    """The hold was made by this call (not one already there for the same task id)."""


class InputStash:
    def __init__(self, *, store: OutputStore, catalog: OutputCatalog, hold_s: int) -> None:
        self._store = store
        self._catalog = catalog
        self._hold_s = hold_s

    async def keep(self, task_id: str, files: list[InputFile]) -> KeptInputs:
        """Store ``files`` and hold them for the task. Raises :class:`StoreUnavailable`."""
        if not files:
            return KeptInputs(task_id, {}, held_now=False)
        blobs = [await self._store.put(_chunks(file.data)) for file in files]
        hold = await hold_when_free(
            self._catalog,
            inputs_holder(task_id),
            blobs,
            finished_ms=None,
            expires_ms=now_ms() + self._hold_s * 1000,
        )
        for position in await missing_blobs(self._store, blobs):
            await self._store.put(_chunks(files[position].data))
        references = {file.name: _reference(blob) for file, blob in zip(files, blobs, strict=True)}
        return KeptInputs(task_id, references, held_now=hold.outcome == "held")

    async def let_go(self, kept: KeptInputs) -> None:
        """The task was not created after all (refused, or its id was taken): release what
        :meth:`keep` held for it at once, unless the hold was there before (the task that
        has this id holds it)."""
        if kept.held_now:
            await release_outputs(self._catalog, self._store, inputs_holder(kept.task_id))

    async def load(self, references: Mapping[str, str]) -> list[InputFile]:
        """The files a task's inputs hash names, by name. Raises :class:`StoreUnavailable`
        when one cannot be read (the store is down, or the file is gone)."""
        return [
            InputFile(name, await self._bytes_of(name, value))
            for name, value in sorted(references.items())
        ]

    async def _bytes_of(self, name: str, value: str) -> bytes:
        if not value.startswith(REFERENCE_PREFIX):
            return base64.b64decode(value)
        digest = value.removeprefix(REFERENCE_PREFIX)
        try:
            return b"".join([chunk async for chunk in self._store.read(digest)])
        except BlobMissing:
            raise StoreUnavailable(f"input file {name} is no longer stored") from None


def _reference(blob: StoredBlob) -> str:
    return REFERENCE_PREFIX + blob.digest


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data
