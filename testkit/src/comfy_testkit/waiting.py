"""Wait on a condition with a timeout, never for a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class ConditionTimeout(AssertionError):
    """The condition did not hold in time; an AssertionError so pytest shows it as a failure."""


async def wait_for_condition(
    check: Callable[[], Awaitable[T | None]],
    *,
    timeout_s: float = 10.0,
    interval_s: float = 0.02,
    what: str = "condition",
) -> T:
    """Poll ``check`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise ConditionTimeout(f"{what} did not hold within {timeout_s}s")
        await asyncio.sleep(interval_s)


def wait_for_condition_sync(
    check: Callable[[], T | None],
    *,
    timeout_s: float = 10.0,
    interval_s: float = 0.02,
    what: str = "condition",
) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise ConditionTimeout(f"{what} did not hold within {timeout_s}s")
        time.sleep(interval_s)
