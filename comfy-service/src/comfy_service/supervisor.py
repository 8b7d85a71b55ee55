"""ComfyUI as a child of the service (``--comfyui-command``): started with the service,
started again when it dies, stopped with it, its output in the service's logs.

- A ComfyUI that died is started again after :class:`RestartBackoff` (1 s, doubling to 30 s
  while it keeps dying soon after its start; 1 s again once it stayed up a minute). Every exit
  is logged with its exit code, every restart counted in the node's lifecycle
  (``comfyui_restarts`` in each health document; ``comfyui_recycles`` of them for a
  recycle). While it is down the loop reports failing, so ``/readyz`` names it.
- Its output (stdout and stderr, one pipe) is read as it comes, whatever it writes: lines are
  cut at :data:`MAX_LINE_CHARS`, and a flood beyond :data:`LINES_PER_S` is dropped (counted,
  and said once), so neither a full pipe stalls ComfyUI nor its output the event loop. Each line
  goes to ``on_line``: the event tracker logs it with ``source=comfyui`` and the task running
  then, as it does the lines ComfyUI sends over its WebSocket.
- Stop: SIGTERM, then SIGKILL after :data:`STOP_GRACE_S`. On Linux the child also gets SIGTERM
  when the service dies, even by SIGKILL.
- A ComfyUI that died leaves the node ``warming-up`` (a recycled one, ``recycling``). Each
  restart (not the first start) calls ``on_restart`` as the new process starts (the warm-up is
  requested then, so no task slips in), and ``after_restart`` once it answers and the event
  listener follows it again (with no warm-up set, the node is ready then).
  :meth:`ComfySupervisor.restart` (recycling) returns once that is done.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from loguru import logger

from comfy_service.lifecycle import Lifecycle
from comfy_shared.child_processes import die_with_parent_hook
from comfy_shared.comfyui import ComfyClient, ComfyError
from comfy_shared.loops import LoopHandle
from comfy_shared.models import NodeReadiness
from comfy_shared.settings import INTERNAL_TOKEN_ENV

MAX_LINE_CHARS: Final = 4000
LINES_PER_S: Final = 500.0
LINE_BURST: Final = 2000
"""Lines logged at once before :data:`LINES_PER_S` applies (start-up prints a few hundred)."""
READ_CHUNK_BYTES: Final = 16384
STOP_GRACE_S: Final = 10.0
ANSWER_POLL_S: Final = 0.2
FOLLOW_WAIT_S: Final = 10.0
OUTPUT_DRAIN_S: Final = 1.0
"""How long the output of a child that exited is still read: a grandchild that inherited the
pipe may hold it open for good."""
CUT_MARK: Final = " [cut]"
_LINE_END = re.compile(r"\r\n|\r|\n")


class ComfyUIExited(Exception):
    """The supervised ComfyUI stopped; it is started again after a backoff."""


@dataclass
class RestartBackoff:
    """The wait before each restart of a ComfyUI that died."""

    first_s: float = 1.0
    longest_s: float = 30.0
    steady_s: float = 60.0
    """Up this long, a ComfyUI that dies is a fresh failure: the wait starts over."""

    def __post_init__(self) -> None:
        self._next_s = self.first_s

    def after_exit(self, uptime_s: float) -> float:
        if uptime_s >= self.steady_s:
            self._next_s = self.first_s
        delay_s = self._next_s
        self._next_s = min(delay_s * 2, self.longest_s)
        return delay_s


class LineSplitter:
    """Text in, whole lines out. ``\\n``, ``\\r\\n`` and a lone ``\\r`` (a progress bar
    redrawn) end a line; empty lines are left out; a line longer than ``max_chars`` is cut
    there (marked with :data:`CUT_MARK`) and the rest of it dropped."""

    def __init__(self, max_chars: int = MAX_LINE_CHARS) -> None:
        self._max_chars = max_chars
        self._partial = ""
        self._cutting = False  # dropping the rest of a line that was cut

    def feed(self, text: str) -> list[str]:
        *complete, rest = _LINE_END.split(self._partial + text)
        lines = []
        for line in complete:
            if line and not self._cutting:
                lines.append(self._cut(line))
            self._cutting = False
        self._partial = "" if self._cutting else rest
        if len(self._partial) > self._max_chars:
            lines.append(self._cut(self._partial))
            self._partial, self._cutting = "", True
        return lines

    def flush(self) -> list[str]:
        """The last line, if the output ended without a newline."""
        rest, self._partial = self._partial, ""
        return [rest] if rest else []

    def _cut(self, line: str) -> str:
        return line if len(line) <= self._max_chars else line[: self._max_chars] + CUT_MARK


class LineBudget:
    """At most ``per_s`` lines a second on average and ``burst`` at once; the lines beyond
    are dropped and counted in :attr:`dropped`."""

    def __init__(
        self,
        per_s: float = LINES_PER_S,
        burst: int = LINE_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_s = per_s
        self._burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self.dropped = 0

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._per_s)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self.dropped += 1
        return False


async def pump_output(
    stream: asyncio.StreamReader,
    on_line: Callable[[str], None],
    budget: LineBudget | None = None,
) -> None:
    """Read ``stream`` until it ends, handing each line to ``on_line`` within ``budget``."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    splitter = LineSplitter()
    budget = budget or LineBudget()
    while chunk := await stream.read(READ_CHUNK_BYTES):
        _hand_out(splitter.feed(decoder.decode(chunk)), on_line, budget)
        # A read that finds data buffered does not yield: without this a flood would hold
        # the event loop for as long as it lasts.
        await asyncio.sleep(0)
    _hand_out(splitter.feed(decoder.decode(b"", final=True)) + splitter.flush(), on_line, budget)


def _hand_out(lines: list[str], on_line: Callable[[str], None], budget: LineBudget) -> None:
    for line in lines:
        if not budget.take():
            continue
        if budget.dropped:
            logger.warning("comfyui output dropped: too many lines", lines=budget.dropped)
            budget.dropped = 0
        try:
            on_line(line)
        except Exception:  # the pump must go on: a pipe nobody reads stalls ComfyUI
            logger.opt(exception=True).debug("a comfyui line could not be logged")


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The service's environment less its own secrets and settings; Python output unbuffered,
    so lines arrive as they are written (not in 8 KB blocks)."""
    kept = {
        name: value
        for name, value in environ.items()
        if name != INTERNAL_TOKEN_ENV and not name.startswith("COMFY_SERVICE_")
    }
    return kept | {"PYTHONUNBUFFERED": "1"}


@dataclass(frozen=True, slots=True)
class _Exit:
    code: int | None
    """None: it could not be started."""
    uptime_s: float
    wanted: bool
    """It was stopped to be restarted (:meth:`ComfySupervisor.restart`)."""


class ComfySupervisor:
    def __init__(
        self,
        argv: Sequence[str],
        *,
        comfy: ComfyClient,
        lifecycle: Lifecycle,
        on_line: Callable[[str], None],
        on_restart: Callable[[], None],
        after_restart: Callable[[], Awaitable[None]],
        connections: Callable[[], int] = lambda: 0,
        backoff: RestartBackoff | None = None,
        stop_grace_s: float = STOP_GRACE_S,
    ) -> None:
        self._argv = list(argv)
        self._comfy = comfy
        self._lifecycle = lifecycle
        self._on_line = on_line
        self._on_restart = on_restart
        self._after_restart = after_restart
        self._connections = connections
        self._backoff = backoff or RestartBackoff()
        self._stop_grace_s = stop_grace_s
        self._process: asyncio.subprocess.Process | None = None
        self._restart_wanted = asyncio.Event()
        self._starts = 0
        self._stopped_to_restart = False
        """Whether the last ComfyUI was stopped on purpose (a recycle), not dead."""
        self._answered_start = 0
        self._answered = asyncio.Condition()

    @property
    def pid(self) -> int | None:
        """The running ComfyUI's process id (None while it is down)."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    @property
    def starts(self) -> int:
        """How often ComfyUI was started so far (1 after the first start)."""
        return self._starts

    async def run(self, handle: LoopHandle) -> None:
        """The loop (under the process's loop supervisor): start ComfyUI, follow it, start it
        again when it exits; stop it when cancelled."""
        try:
            while True:
                ended = await self._run_child(handle)
                self._stopped_to_restart = ended.wanted
                if not ended.wanted:
                    await self._pause(handle, ended)
        finally:
            await self._stop_child()  # if it was being started when the service stopped

    async def restart(self, reason: str) -> None:
        """Stop ComfyUI and start it again at once; returns once the new one answers and its
        warm-up (``after_restart``) ran."""
        started_before = self._starts
        logger.info("restarting comfyui", reason=reason)
        self._restart_wanted.set()
        async with self._answered:
            await self._answered.wait_for(lambda: self._answered_start > started_before)

    async def _run_child(self, handle: LoopHandle) -> _Exit:
        self._restart_wanted.clear()
        started = time.monotonic()
        connections = self._connections()
        try:
            process = await self._spawn()
        except OSError as exc:
            logger.error("could not start comfyui", command=self._argv[0], error=str(exc))
            handle.failing(exc)
            return _Exit(None, 0.0, wanted=False)
        with contextlib.ExitStack() as helpers:
            assert process.stdout is not None  # piped
            pump = asyncio.create_task(pump_output(process.stdout, self._on_line))
            helpers.callback(pump.cancel)
            came_up = asyncio.create_task(self._came_up(handle, self._starts, connections))
            helpers.callback(came_up.cancel)
            try:
                code, wanted = await self._until_exit(process)
            except asyncio.CancelledError:  # the service stops: ComfyUI first, output still read
                if (code := await self._stop_child()) is not None:
                    logger.info("comfyui stopped", exit_code=code)
                raise
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(pump), OUTPUT_DRAIN_S)
        return _Exit(code, time.monotonic() - started, wanted)

    async def _spawn(self) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            *self._argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=child_environment(os.environ),
            # Its own process group: a Ctrl-C in the terminal reaches the service, which stops
            # ComfyUI in turn, and a stop reaches whatever ComfyUI started itself.
            start_new_session=True,
            preexec_fn=die_with_parent_hook(),
        )
        self._process = process
        self._starts += 1
        if self._starts > 1:
            self._lifecycle.comfyui_restarted(recycled=self._stopped_to_restart)
            self._on_restart()
        restarts = self._lifecycle.current().comfyui_restarts
        logger.info("comfyui started", pid=process.pid, restarts=restarts)
        return process

    async def _until_exit(self, process: asyncio.subprocess.Process) -> tuple[int | None, bool]:
        """Wait until ComfyUI exits, or stop it when a restart is wanted: its exit code, and
        whether the exit was wanted."""
        waiters = [
            asyncio.ensure_future(process.wait()),
            asyncio.ensure_future(self._restart_wanted.wait()),
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if process.returncode is not None:
            return process.returncode, False
        await self._stop_child()
        logger.info("comfyui stopped to restart", exit_code=process.returncode)
        return process.returncode, True

    async def _came_up(self, handle: LoopHandle, start: int, connections: int) -> None:
        """Once ComfyUI answers: the loop works again; after a restart, once its events are
        followed again too, the warm-up."""
        await self._until_answering()
        handle.working()
        if start > 1:
            await self._until_followed(connections)
            try:
                await self._after_restart()
            except Exception:
                logger.opt(exception=True).error("the step after a comfyui restart failed")
        async with self._answered:
            self._answered_start = start
            self._answered.notify_all()

    async def _until_answering(self) -> None:
        while True:
            try:
                await self._comfy.get_prompt_info()
            except ComfyError:
                await asyncio.sleep(ANSWER_POLL_S)
            else:
                return

    async def _until_followed(self, connections: int) -> None:
        """Until the event listener connected to the new ComfyUI (it tries every 2 s at most):
        a task placed before would run with nobody following it, its lines named to no task.
        Bounded: a listener that cannot connect must not keep the node out for good."""
        try:
            async with asyncio.timeout(FOLLOW_WAIT_S):
                while True:
                    if self._connections() > connections:
                        return
                    await asyncio.sleep(ANSWER_POLL_S)
        except TimeoutError:
            logger.warning("comfyui's events are not followed yet", waited_s=FOLLOW_WAIT_S)

    async def _pause(self, handle: LoopHandle, ended: _Exit) -> None:
        delay_s = self._backoff.after_exit(ended.uptime_s)
        if ended.code is not None:
            logger.warning(
                "comfyui exited",
                exit_code=ended.code,
                uptime_s=round(ended.uptime_s, 1),
                restart_in_s=delay_s,
            )
            handle.failing(ComfyUIExited(f"exit code {ended.code}"))
        if self._lifecycle.current().state is not NodeReadiness.RECYCLING:
            # Not ready before the step after its restart: the health document would else
            # say ready the moment the new ComfyUI answers, before that step ran.
            self._lifecycle.warming_up()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self._restart_wanted.wait()  # a recycle does not wait for the backoff

    async def _stop_child(self) -> int | None:
        """SIGTERM to ComfyUI's process group, SIGKILL after the grace; returns its exit code
        once it is gone (None: it was not running)."""
        process = self._process
        if process is None or process.returncode is not None:
            return None
        _signal_group(process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(self._stop_grace_s):
                return await process.wait()
        except TimeoutError:
            logger.warning("comfyui ignored SIGTERM: killing it", pid=process.pid)
            _signal_group(process.pid, signal.SIGKILL)
            return await process.wait()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
