"""Whether this node takes new tasks: the one owner of its lifecycle state.

A node that is alive and whose ComfyUI answers may still refuse work: while its warm-up
workflow runs (at start and after every ComfyUI restart), after a warm-up failed, and while it
recycles (finishes its tasks, restarts ComfyUI, warms up again). The state goes out in every
health document, so balancers place nothing on it; a task sent anyway is refused with 503
``node_not_ready`` and no attempt is spent.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from loguru import logger

from comfy_shared.clock import utc_now
from comfy_shared.models import NodeLifecycle, NodeReadiness


class Lifecycle:
    def __init__(self, clock: Callable[[], datetime] = utc_now) -> None:
        self._clock = clock
        self._current = NodeLifecycle(since=clock())

    def current(self) -> NodeLifecycle:
        return self._current

    @property
    def accepting(self) -> bool:
        return self._current.state is NodeReadiness.READY

    def warming_up(self) -> None:
        self._enter(NodeReadiness.WARMING_UP)

    def warmed_up(self) -> None:
        self._enter(NodeReadiness.READY)

    def warm_up_failed(self, reason: str) -> None:
        self._enter(NodeReadiness.WARM_UP_FAILED, reason)

    def recycling(self, reason: str) -> None:
        self._enter(NodeReadiness.RECYCLING, reason)

    def comfyui_restarted(self, *, recycled: bool) -> None:
        """Count a restart of the supervised ComfyUI: to recycle it, or after it died."""
        current = self._current
        self._current = current.model_copy(
            update={
                "comfyui_restarts": current.comfyui_restarts + 1,
                "comfyui_recycles": current.comfyui_recycles + int(recycled),
            }
        )

    def _enter(self, state: NodeReadiness, reason: str | None = None) -> None:
        if (state, reason) == (self._current.state, self._current.reason):
            return
        logger.info("node lifecycle", state=state.value, reason=reason)
        self._current = self._current.model_copy(
            update={"state": state, "reason": reason, "since": self._clock()}
        )
