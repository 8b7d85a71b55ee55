"""The warm-up: a workflow this node runs on its ComfyUI before it takes any task, at start and
after every ComfyUI restart (``--warmup-workflow``), so the first user task does not pay for
loading models, and a node whose ComfyUI cannot run it (a model file missing, a custom node
broken) takes no task at all.

It is not a task: its prompt goes straight to ComfyUI, under a client id of its own (so its
events never reach the task tracker), and leaves nothing in Redis, usage, task metrics or
webhooks. Only the node's lifecycle (``comfy_service.lifecycle``) shows it: ``warming-up``
while it runs, ``ready`` once it passed, ``warm-up-failed`` with the reason when it did not;
a failed warm-up is tried again with a backoff that grows to ``RETRY_DELAYS_S[1]``, for as
long as it fails, so a node that heals (the model file appears) comes back on its own.

A ComfyUI restart is seen at each WebSocket (re)connect: ComfyUI keeps its history in memory
only, so the last passed warm-up's prompt missing from it means a new ComfyUI process (a
history cleared by hand, or the prompt pushed out by 10,000 newer ones, costs one needless
warm-up). Whoever restarts ComfyUI itself calls :meth:`WarmUp.request` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from loguru import logger

from comfy_service.comfy_results import history_failure
from comfy_service.lifecycle import Lifecycle
from comfy_service.memory import MemoryRelief
from comfy_shared.comfyui import ComfyClient, ComfyError, ComfyUnavailable, PromptRejected
from comfy_shared.comfyui.models import HistoryEntry
from comfy_shared.errors import ComfyStackError
from comfy_shared.loops import LoopHandle
from comfy_shared.models import NodeReadiness
from comfy_shared.workflows import Template, TemplateError, TemplateLibrary

RETRY_DELAYS_S: Final = (1.0, 60.0)
"""First and longest wait before a failed warm-up runs again (doubling in between)."""
POLL_INTERVAL_S: Final = 0.1
"""How often a running warm-up's end is looked for in ComfyUI's queue (only while it runs)."""


@dataclass(frozen=True)
class WarmUpWorkflow:
    """What the warm-up runs: a template expanded anew for each run (a random seed is drawn
    again), or a graph file as it is."""

    name: str
    template: Template | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    fixed_graph: dict[str, Any] | None = None

    def graph(self) -> dict[str, Any]:
        if self.template is None:
            return dict(self.fixed_graph or {})
        return self.template.expand(self.template.resolve(self.params)).graph


def load_warm_up(
    spec: str, params: Mapping[str, Any], templates: TemplateLibrary
) -> WarmUpWorkflow:
    """``spec`` is a template name, or the path of an API-format graph if it ends in .json.
    Raises TemplateError (start-up stops, naming the problem) if it cannot run as given."""
    if spec.endswith(".json"):
        if params:
            raise TemplateError(f"--warmup-params apply to a template, not to {spec}")
        return WarmUpWorkflow(spec, fixed_graph=_graph_file(Path(spec)))
    try:
        template = templates.get(spec)
        expansion = template.expand(template.resolve(params))
    except ComfyStackError as exc:
        raise TemplateError(f"--warmup-workflow {spec}: {exc}") from exc
    if expansion.inputs:
        raise TemplateError(f"--warmup-workflow {spec}: a warm-up takes no image input")
    return WarmUpWorkflow(spec, template=template, params=dict(params))


def _graph_file(path: Path) -> dict[str, Any]:
    try:
        graph = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TemplateError(f"--warmup-workflow {path}: {exc}") from exc
    if not isinstance(graph, dict) or not all(
        isinstance(node, dict) and "class_type" in node for node in graph.values()
    ):
        raise TemplateError(f"--warmup-workflow {path}: not an API-format graph")
    return graph


class WarmUp:
    """Runs the warm-up when asked (:meth:`request`) until it passes. With no workflow
    configured it does nothing and the node is ready at once."""

    def __init__(
        self,
        *,
        workflow: WarmUpWorkflow | None,
        comfy: ComfyClient,
        lifecycle: Lifecycle,
        memory: MemoryRelief,
        client_id: str,
        timeout_s: float,
    ) -> None:
        self.workflow = workflow
        self._comfy = comfy
        self._lifecycle = lifecycle
        self._memory = memory
        self._client_id = client_id
        self._timeout_s = timeout_s
        self._wanted = asyncio.Event()
        """Set by a request; cleared once a warm-up begun after the last request passed."""
        self._asked_again = asyncio.Event()
        """A request since the current run started: a pause between retries ends at once."""
        self._requests = 0
        self._passed_prompt_id: str | None = None

    @property
    def configured(self) -> bool:
        return self.workflow is not None

    def request(self) -> None:
        """Warm up again before taking any task (call it right after restarting ComfyUI):
        the node leaves ``ready`` at once and is back once a warm-up passed. Returns at once;
        the lifecycle tells when the node is ready. Nothing happens with no warm-up set."""
        if self.workflow is None:
            return
        self._requests += 1
        self._lifecycle.warming_up()
        self._wanted.set()
        self._asked_again.set()

    async def comfyui_connected(self) -> None:
        """After each WebSocket (re)connect to ComfyUI: a new ComfyUI process (the passed
        warm-up unknown to its history) is warmed up again; a warm-up waiting to be retried
        (ComfyUI was away) is retried now."""
        if self.workflow is None:
            return
        passed = self._passed_prompt_id
        if passed is None or self._wanted.is_set():
            self._asked_again.set()
            return
        if await self._still_known(passed):
            return
        logger.info("comfyui restarted; warming up again")
        self.request()

    async def _still_known(self, prompt_id: str) -> bool:
        try:
            return await self._comfy.get_history(prompt_id) is not None
        except ComfyError as exc:
            logger.warning("could not tell whether comfyui restarted", error=str(exc))
            return False  # warming up once too often is cheaper than not when needed

    async def run(self, handle: LoopHandle) -> None:
        """The loop: each request is served by warm-ups until one passes."""
        while True:
            await self._wanted.wait()
            await self._until_passed(handle)

    async def _until_passed(self, handle: LoopHandle) -> None:
        delays = retry_delays()
        while True:
            asked = self._requests
            self._asked_again.clear()
            failure = await self.warm_up_once()
            handle.working()  # a failing warm-up is the lifecycle's news, not a stuck loop
            if failure is None and asked == self._requests:
                self._wanted.clear()
                if self._lifecycle.current().state is not NodeReadiness.RECYCLING:
                    self._lifecycle.warmed_up()  # (a recycle begun meanwhile goes on)
                return
            if failure is not None:
                delay_s = next(delays)
                logger.warning("warm-up failed", reason=failure, retry_in_s=delay_s)
                self._lifecycle.warm_up_failed(failure)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._asked_again.wait(), delay_s)

    async def warm_up_once(self) -> str | None:
        """Run the warm-up once on ComfyUI: None if it passed, else why it did not."""
        assert self.workflow is not None
        prompt_id = str(uuid.uuid4())
        started = time.monotonic()
        logger.info("warm-up started", workflow=self.workflow.name, prompt_id=prompt_id)
        try:
            entry = await asyncio.wait_for(self._run(prompt_id), self._timeout_s)
        except TimeoutError:
            await self._withdraw(prompt_id)
            return f"the warm-up did not finish within {self._timeout_s:g} s"
        except PromptRejected as exc:
            return rejection_reason(exc)
        except ComfyUnavailable as exc:
            return f"ComfyUI unreachable: {exc}"
        except ComfyError as exc:
            return f"ComfyUI answered unexpectedly: {exc}"
        if entry is None:
            return "ComfyUI lost the warm-up prompt (it restarted while the warm-up ran)"
        if not entry.succeeded:
            failure = history_failure(entry)
            await self._memory.relieve(failure)
            return failure.message
        self._passed_prompt_id = prompt_id
        logger.info("warm-up passed", duration_s=round(time.monotonic() - started, 3))
        return None

    async def _run(self, prompt_id: str) -> HistoryEntry | None:
        """Queue the prompt and wait for its end (None: ComfyUI lost it)."""
        assert self.workflow is not None
        graph = self.workflow.graph()
        await self._comfy.submit(graph, prompt_id=prompt_id, client_id=self._client_id)
        # ComfyUI moves a prompt from its queue to its history under one lock: once it has
        # left the queue it is in the history, or it was lost.
        while True:
            queue = await self._comfy.get_queue()
            if queue.position(prompt_id) is None:
                return await self._comfy.get_history(prompt_id)
            await asyncio.sleep(POLL_INTERVAL_S)

    async def _withdraw(self, prompt_id: str) -> None:
        """A warm-up that took too long must not hold ComfyUI's queue."""
        try:
            await self._comfy.cancel_prompt(prompt_id)
        except ComfyError as exc:
            logger.warning("could not withdraw the warm-up prompt", error=str(exc))


def retry_delays() -> Iterator[float]:
    delay_s, longest_s = RETRY_DELAYS_S
    while True:
        yield delay_s
        delay_s = min(delay_s * 2, longest_s)


def rejection_reason(exc: PromptRejected) -> str:
    """ComfyUI's refusal in one line, naming each node it refused and why."""
    problems = []
    for node_id, node in exc.node_errors.items():
        for error in node.get("errors", []) if isinstance(node, dict) else []:
            said = str(error.get("message", ""))
            if error.get("details"):
                said += f": {error['details']}"
            problems.append(f"{node.get('class_type')} (node {node_id}): {said}")
    refused = f"ComfyUI rejected the warm-up graph: {exc.error_message}"
    return "; ".join([refused, *problems])
