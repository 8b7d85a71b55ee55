"""Wait on a condition with a timeout, never for a fixed time (async side; the sync one lives
in ``comfy_stack.waiting`` because the launcher needs it too)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from comfy_stack.waiting import ConditionTimeout, wait_for_condition_sync

__all__ = ["ConditionTimeout", "wait_for_condition", "wait_for_condition_sync"]

T = TypeVar("T")


async def wait_for_condition(
    check: Callable[[], Awaitable[T | None]],
    *,
    timeout_s: float = 10.0,
    interval_s: float = 0.02,
    what: str = "condition",
) -> T:
    """Await ``check`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise ConditionTimeout(f"{what} did not hold within {timeout_s}s")
        await asyncio.sleep(interval_s)
