"""Retention of stored outputs: a task's outputs go when their TTL is over, and the oldest
finished tasks' outputs go first while the store holds more than ``--outputs-max-bytes``.

Every service and balancer sweeps (a service used on its own keeps its outputs in bounds
too): releasing a task is atomic in Redis, so two sweeps never delete for the same task
twice, and a sweep that dies mid-way leaves marks the next one finishes
(``OutputCatalog.abandoned``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from loguru import logger

from comfy_shared.clock import now_ms
from comfy_shared.loops import Supervisor
from comfy_shared.outputs.catalog import OutputCatalog, delete_blob, release_outputs
from comfy_shared.outputs.store import OutputStore

if TYPE_CHECKING:
    from comfy_shared.settings import ApiServerSettings

BATCH: Final = 100
"""Tasks released per round, so one sweep never holds Redis or the store for long."""


class OutputRetention:
    def __init__(
        self, *, catalog: OutputCatalog, store: OutputStore, max_bytes: int | None
    ) -> None:
        self._catalog = catalog
        self._store = store
        self._max_bytes = max_bytes

    async def sweep_once(self) -> int:
        """Release what is due; returns how many tasks' outputs went."""
        released = 0
        while due := await self._catalog.due(now_ms=now_ms(), limit=BATCH):
            released += await self._release(due, "expired")
        while self._max_bytes is not None and await self._catalog.total_bytes() > self._max_bytes:
            oldest = await self._catalog.oldest(1)
            if not oldest:
                break
            released += await self._release(oldest, "over the size cap")
        for digest in await self._catalog.abandoned(now_ms=now_ms()):
            await delete_blob(self._catalog, self._store, digest)
        return released

    async def _release(self, task_ids: list[str], why: str) -> int:
        for task_id in task_ids:
            await release_outputs(self._catalog, self._store, task_id)
            logger.info("outputs released", task_id=task_id, reason=why)
        return len(task_ids)


def start_retention(
    loops: Supervisor, settings: ApiServerSettings, catalog: OutputCatalog, store: OutputStore
) -> None:
    """The supervised sweep of ``settings`` (``--outputs-max-bytes``, 0: no cap)."""
    retention = OutputRetention(
        catalog=catalog, store=store, max_bytes=settings.outputs_max_bytes or None
    )
    loops.start_every("output-retention", settings.outputs_sweep_interval_s, retention.sweep_once)
