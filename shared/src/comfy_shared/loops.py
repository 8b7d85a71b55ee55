"""Background loops: one named task each, a failing tick is logged and the loop goes on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable

from loguru import logger


async def run_every(interval_s: float, tick: Callable[[], Awaitable[object]], *, name: str) -> None:
    """Call ``tick`` every ``interval_s`` seconds until cancelled.

    An exception in one tick is logged and the next tick runs as planned; ``CancelledError``
    is never swallowed, so stopping the loop is always prompt.
    """
    while True:
        try:
            await tick()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.opt(exception=True).warning("loop tick failed", loop=name)
        await asyncio.sleep(interval_s)


def start_loop(coro: Awaitable[None], name: str) -> asyncio.Task[None]:
    async def wrapper() -> None:
        await coro

    return asyncio.create_task(wrapper(), name=name)


async def stop_tasks(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel the tasks and wait until every one has finished; nothing is left behind."""
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError):
            await task
