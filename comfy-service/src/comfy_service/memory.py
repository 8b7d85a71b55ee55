"""Out of GPU memory on ComfyUI: unload its models and drop its caches (``POST /free``) before
the failure is reported, so the retry (the balancer's retry policy covers out of memory) or
the next task finds the memory free rather than fragmented by what failed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from loguru import logger

from comfy_shared.comfyui import ComfyClient, ComfyError
from comfy_shared.models import TaskError

OUT_OF_MEMORY_MARKS: Final = ("outofmemoryerror", "out of memory")
"""ComfyUI reports torch.OutOfMemoryError (CUDA, or MPS: "MPS backend out of memory")."""


def is_out_of_memory(error: TaskError) -> bool:
    details = error.details
    said = f"{details.get('exception_type', '')} {details.get('exception_message', '')}"
    text = f"{said} {error.message}".lower()
    return any(mark in text for mark in OUT_OF_MEMORY_MARKS)


class MemoryRelief:
    def __init__(self, comfy: ComfyClient, on_freed: Callable[[], None]) -> None:
        self._comfy = comfy
        self._on_freed = on_freed

    async def relieve(self, error: TaskError) -> bool:
        """Free ComfyUI's memory if ``error`` is an out-of-memory one; True if it was freed.
        Logged in the caller's context (a task's timeline)."""
        if not is_out_of_memory(error):
            return False
        try:
            await self._comfy.free(unload_models=True, free_memory=True)
        except ComfyError as exc:
            logger.warning("comfyui out of memory; could not free it", error=str(exc))
            return False
        self._on_freed()
        logger.warning("comfyui out of memory; models unloaded and caches freed (POST /free)")
        return True
