"""Follows ComfyUI's WebSocket events and mirrors them onto the tasks in Redis.

Only events about prompts this node follows are used; ComfyUI may run prompts of other
clients too. The end of a prompt is taken from ``executing`` with ``node: null``, which ComfyUI
sends after the history entry is written, and the outcome is then read from history. A prompt
that starts although its attempt is over (the task moved to another node while this one was
cut off) is withdrawn at once. An event that could not be recorded (Redis unreachable) asks
for a reconciliation, which reads the outcome from ComfyUI once Redis answers again.

ComfyUI's own log lines arrive on the same socket (after subscribing on every connection), or,
when the service supervises ComfyUI, from its output (``comfy_line``; the socket's copy is then
not asked for). Either way they are logged again with ``source=comfyui`` and the ``task_id`` of
the prompt running when they were written, so they join that task's timeline.

Runs, cached nodes and log lines also feed the node's speed (``speed``) and model profile
(``profile``): which models are resident, what a switch and each workflow shape cost here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable

from loguru import logger

from comfy_service.ending import TaskEndings
from comfy_service.profile import Loaders, ModelProfiler
from comfy_service.prompts import FollowedPrompts, Prompt
from comfy_service.speed import SpeedMeter
from comfy_shared.comfyui import (
    ComfyClient,
    ComfyError,
    Connected,
    Executing,
    ExecutionCached,
    ExecutionStart,
    ExecutionSuccess,
    ListenerEvent,
    Logs,
    Progress,
)
from comfy_shared.lifecycle import AttemptOver, Progressed, Refused, Started
from comfy_shared.task_store import TaskStore

_PROGRESS_BAR = re.compile(r"^\s*\d+%\|")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b")
_SUMMARY_GRACE_S = 2.0
PROGRESS_WRITE_INTERVAL_S = 0.05
"""A task's progress is stored at most this often (each write is a record update and an
event); a node's last step is always stored. Fast samplers report hundreds of steps a second."""


class ComfyErrorLines:
    """Tells ComfyUI's error lines from the rest. Its log lines carry no level, but an error
    has one shape: "!!! Exception during processing !!! ...", then a Python traceback that
    ends with the exception's own line."""

    def __init__(self) -> None:
        self._in_traceback = False

    def is_error(self, line: str) -> bool:
        if line.startswith("Traceback (most recent call last)"):
            self._in_traceback = True
            return True
        if self._in_traceback and line[:1].isspace():
            return True
        if _EXCEPTION_LINE.match(line):
            self._in_traceback = False
            return True
        self._in_traceback = False
        return line.startswith(("!!! Exception", "Exception in thread"))


class EventTracker:
    def __init__(
        self,
        *,
        store: TaskStore,
        prompts: FollowedPrompts,
        endings: TaskEndings,
        comfy: ComfyClient,
        on_connected: Callable[[], Awaitable[object]],
        on_missed: Callable[[], object],
        speed: SpeedMeter,
        profile: ModelProfiler,
        loaders: Callable[[], Loaders | None],
        logs_from_socket: bool = True,
    ) -> None:
        """``logs_from_socket=False``: ComfyUI's lines come through :meth:`comfy_line`."""
        self._store = store
        self._prompts = prompts
        self._endings = endings
        self._comfy = comfy
        self._on_connected = on_connected
        self._on_missed = on_missed
        self._speed = speed
        self._profile = profile
        self._loaders = loaders
        self._running: str | None = None  # task id of the prompt running now
        self._finished: tuple[str, float] | None = None  # last task that ended, and when
        self._progress_written: dict[str, float] = {}
        self._errors = ComfyErrorLines()
        self._logs_from_socket = logs_from_socket
        self.connections = 0
        """Connections to ComfyUI's WebSocket so far: events are followed from each."""

    async def handle(self, event: ListenerEvent) -> None:
        try:
            await self._handle(event)
        except Exception:
            # Lost (Redis did not answer, most likely): ComfyUI sends no event twice, so
            # reconciliation reads what it said from its queue and history instead.
            self._on_missed()
            raise

    async def _handle(self, event: ListenerEvent) -> None:
        if isinstance(event, Connected):
            self.connections += 1
            logger.info("comfyui websocket connected; reconciling tasks")
            self._speed.forget_runs()
            self._profile.reconnected()
            if self._logs_from_socket:
                await self._subscribe_to_comfy_logs(event.client_id)
            await self._on_connected()
            return
        if isinstance(event, Logs):
            self._relog(event)
            return
        prompt_id = getattr(event, "prompt_id", None)
        if (
            not isinstance(prompt_id, str)
            or (prompt := await self._prompts.find(prompt_id)) is None
        ):
            return
        self._prompts.touch(prompt.prompt_id)
        with logger.contextualize(task_id=prompt.task_id, attempt=prompt.attempt.number):
            try:
                await self._apply(prompt, event)
            except AttemptOver as over:
                await self._endings.withdraw(prompt, over.reason, over.record)
            except Refused:
                return  # nothing to change (e.g. a start that was seen already)

    async def _apply(self, prompt: Prompt, event: ListenerEvent) -> None:
        task_id, attempt = prompt.task_id, prompt.attempt
        if isinstance(event, ExecutionStart):
            self._running = task_id
            self._speed.started(prompt.prompt_id)
            await self._profile_start(prompt)
            await self._store.apply(task_id, Started(attempt))
            logger.info("task running")
        elif isinstance(event, ExecutionCached):
            self._profile.cached(prompt.prompt_id, event.nodes)
        elif isinstance(event, ExecutionSuccess):
            self._profile.succeeded(prompt.prompt_id)
        elif isinstance(event, Executing) and event.done:
            self._running = None
            self._finished = (task_id, time.monotonic())
            finished = self._profile.ended(prompt.prompt_id)
            self._speed.ended(prompt.prompt_id, hot=finished is not None and finished.hot)
            self._progress_written.pop(prompt.prompt_id, None)
            await self._endings.finish(prompt)
        elif isinstance(event, Executing):
            await self._store.apply(task_id, Progressed(attempt, event.node))
        elif isinstance(event, Progress):
            node, value, maximum = event.node, int(event.value), int(event.max)
            self._speed.progressed(prompt.prompt_id, node, value)
            if value < maximum and self._wrote_progress_lately(prompt.prompt_id):
                return
            await self._store.apply(task_id, Progressed(attempt, node, value, maximum))

    async def _profile_start(self, prompt: Prompt) -> None:
        """The models a run needs come from its graph, kept with the task."""
        graph = await self._store.get_prompt(prompt.task_id)
        loaders = self._loaders() if graph is not None else None
        self._profile.started(prompt.prompt_id, graph or {}, loaders)

    def _wrote_progress_lately(self, task_id: str) -> bool:
        now = time.monotonic()
        if now - self._progress_written.get(task_id, -PROGRESS_WRITE_INTERVAL_S) < (
            PROGRESS_WRITE_INTERVAL_S
        ):
            return True
        self._progress_written[task_id] = now
        return False

    async def _subscribe_to_comfy_logs(self, client_id: str) -> None:
        try:
            await self._comfy.subscribe_logs(client_id, enabled=True)
        except ComfyError as exc:
            logger.warning("could not subscribe to comfyui's log lines", error=str(exc))

    def _relog(self, event: Logs) -> None:
        if not self._logs_from_socket:
            return  # a copy of what the supervised ComfyUI's output brings
        for entry in event.entries:
            for line in entry.m.splitlines():
                self.comfy_line(line)

    def comfy_line(self, line: str) -> None:
        """Log one line ComfyUI wrote, with the task it belongs to (and learn from it)."""
        self._profile.log_line(line)
        # Progress bars are redrawn per step; the task's progress already says that.
        if line.strip() and not _PROGRESS_BAR.match(line):
            task_id = self._task_writing(line)
            level = "ERROR" if self._errors.is_error(line) else "INFO"
            comfy_log = logger.bind(source="comfyui")
            (comfy_log.bind(task_id=task_id) if task_id else comfy_log).log(level, line)

    def _task_writing(self, line: str) -> str | None:
        """The task a ComfyUI line belongs to: the running prompt; while none runs, the one
        that just ended (ComfyUI prints its summary, e.g. "Prompt executed in 0.3 seconds",
        after signalling the end). "got prompt" is printed on submission, for an unknown one."""
        if self._running is not None:
            return self._running
        if self._finished is None or line.startswith("got prompt"):
            return None
        task_id, ended = self._finished
        return task_id if time.monotonic() - ended < _SUMMARY_GRACE_S else None
