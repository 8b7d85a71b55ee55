"""Supervised background loops: every loop of a process runs under one :class:`Supervisor`.

A loop that raises is logged once, with its name, and started again after a backoff that
grows while it keeps failing; it never dies silently. Each loop says when it works
(:meth:`LoopHandle.working`) and when it cannot (:meth:`LoopHandle.failing`), so the process
can report the loops that are stuck (``/readyz`` answers 503 naming them) and an outage is
logged twice: when it starts and when it ends, with its duration, never on every tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from loguru import logger

RESTART_BACKOFF_S: Final = (0.1, 2.0)
"""First and longest wait before a loop that raised is started again (doubling in between).
The longest is short, so a loop that failed because Redis was down (the balancer's
dispatcher) works again within 2 s of Redis answering; a failing start costs little and is
logged once per outage."""


@dataclass(frozen=True, slots=True)
class LoopProblem:
    """A loop that cannot do its work right now."""

    loop: str
    error: str
    since_s: float
    """Seconds since the loop last worked (or since it started, if it never did)."""


class LoopHandle:
    """What a loop body reports about itself to its supervisor."""

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self._failing_since: float | None = None
        self._error = ""
        self.restarts = 0

    @property
    def problem(self) -> LoopProblem | None:
        if self._failing_since is None:
            return None
        return LoopProblem(self.name, self._error, self._clock() - self._failing_since)

    def working(self) -> None:
        """The loop did its work: ends an outage (logged once, with its duration)."""
        if self._failing_since is not None:
            outage_s = round(self._clock() - self._failing_since, 3)
            logger.info("loop working again", loop=self.name, outage_s=outage_s)
            self._failing_since = None

    def failing(self, exc: BaseException) -> None:
        """The loop could not do its work: the first failure of an outage is logged with its
        traceback, later ones only update the reported error."""
        self._error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self._failing_since is None:
            self._failing_since = self._clock()
            logger.opt(exception=exc).error("loop failing", loop=self.name, error=self._error)


LoopBody = Callable[[LoopHandle], Awaitable[None]]


class Supervisor:
    """Starts, restarts and stops a process's background loops, and knows which are stuck."""

    def __init__(self) -> None:
        self._handles: dict[str, LoopHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, name: str, body: LoopBody) -> LoopHandle:
        """Run ``body`` as the loop ``name``; it is started again whenever it raises."""
        if name in self._handles:
            raise ValueError(f"a loop named {name!r} is running already")
        handle = self._handles[name] = LoopHandle(name)
        self._tasks.append(asyncio.create_task(_supervise(handle, body), name=name))
        return handle

    def start_every(
        self, name: str, interval_s: float, tick: Callable[[], Awaitable[object]]
    ) -> LoopHandle:
        """Run ``tick`` every ``interval_s`` seconds; a tick that raises marks the loop as
        failing until a later tick succeeds."""

        async def body(handle: LoopHandle) -> None:
            await run_every(interval_s, tick, handle)

        return self.start(name, body)

    def problems(self) -> list[LoopProblem]:
        """The loops that cannot work right now, by name."""
        return sorted(
            (problem for handle in self._handles.values() if (problem := handle.problem)),
            key=lambda problem: problem.loop,
        )

    async def stop(self) -> None:
        await stop_tasks(self._tasks)
        self._tasks.clear()
        self._handles.clear()


async def run_every(
    interval_s: float, tick: Callable[[], Awaitable[object]], handle: LoopHandle
) -> None:
    """Call ``tick`` every ``interval_s`` seconds until cancelled, reporting each outcome."""
    while True:
        try:
            await tick()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            handle.failing(exc)
        else:
            handle.working()
        await asyncio.sleep(interval_s)


def restart_delays() -> Iterator[float]:
    """The waits before the restarts of a loop that keeps raising."""
    delay_s, longest_s = RESTART_BACKOFF_S
    while True:
        yield delay_s
        delay_s = min(delay_s * 2, longest_s)


async def _supervise(handle: LoopHandle, body: LoopBody) -> None:
    delays = restart_delays()
    while True:
        started = time.monotonic()
        try:
            await body(handle)
            raise RuntimeError("the loop returned")  # loops run until cancelled
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            handle.failing(exc)
        handle.restarts += 1
        if time.monotonic() - started > RESTART_BACKOFF_S[1]:
            delays = restart_delays()  # it ran a good while: a fresh failure
        await asyncio.sleep(next(delays))


async def stop_tasks(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel the tasks and wait until every one has finished; nothing is left behind."""
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError):
            await task
