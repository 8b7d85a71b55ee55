"""Wait on a condition with a timeout, never for a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class ConditionTimeout(AssertionError):
    """The condition did not hold in time; an AssertionError so pytest shows it as a failure."""


def wait_for_condition_sync(
    check: Callable[[], T | None],
    *,
    timeout_s: float = 10.0,
    interval_s: float = 0.02,
    what: str = "condition",
) -> T:
    """Call ``check`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise ConditionTimeout(f"{what} did not hold within {timeout_s}s")
        time.sleep(interval_s)
