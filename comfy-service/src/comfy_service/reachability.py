"""Whether this node's ComfyUI answers, and for how long it has not.

Fed by the health publisher's probe every health interval. An outage is logged twice: when it
starts and when it ends, with its duration; never on every probe.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from loguru import logger


class Reachability:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._down_since: float | None = None
        self._known = False

    def reachable(self) -> None:
        if self._down_since is not None:
            outage_s = round(self._clock() - self._down_since, 3)
            logger.info("comfyui reachable again", outage_s=outage_s)
        elif not self._known:
            logger.info("comfyui reachable")
        self._down_since, self._known = None, True

    def unreachable(self, error: str) -> None:
        if self._down_since is None:
            logger.warning("comfyui unreachable", error=error)
            self._down_since = self._clock()
        self._known = True

    def down_for_s(self) -> float:
        """Seconds since ComfyUI last answered a probe (0 while it answers)."""
        return 0.0 if self._down_since is None else self._clock() - self._down_since
