"""Admission control for submits: past its capacity a node says so at once.

Without a limit an overloaded service accepts every request and answers each later and later
until Redis or ComfyUI calls time out, and the caller learns nothing useful. With it, the
excess gets 503 ``overloaded`` with Retry-After in a millisecond; the balancer takes such a
refusal as "try another node" and keeps the task queued.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from comfy_service.errors import Overloaded


class SubmitGate:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._active = 0

    @property
    def active(self) -> int:
        """Submits under way (each may be about to add a prompt to ComfyUI's queue)."""
        return self._active

    @contextmanager
    def enter(self) -> Iterator[None]:
        if self._active >= self._limit:
            raise Overloaded(self._limit)
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1
