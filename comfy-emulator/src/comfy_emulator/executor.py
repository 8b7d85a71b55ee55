"""Runs one queued prompt and produces exactly ComfyUI's event stream and history record.

Event order for a prompt (see the protocol notes, §3.2):

    execution_start, execution_cached{nodes}
    per node that runs: progress_state(running), executing{node},
                        [progress_state + progress per step], [executed], progress_state(finished)
    per cached output:  executed{old ui}, progress_state(finished)
    then one of: execution_success | execution_error | execution_interrupted

`executing`, `executed`, `execution_*` (except interrupted) go only to the prompt's client and are
not sent at all without one; `progress`, `progress_state` and `execution_interrupted` go to the
client or, without one, to everyone. The closing `status` and `executing{node: null}` are sent by
the worker after the history entry exists (see `core.py`).

Interrupts are honoured only where ComfyUI checks its flag: when a node starts and at every
progress step. A node without progress always runs to its end.

Model loads (see `model_memory`): a loader node calls `ctx.load_model(file)` and pays the
file's load time when it is not resident. Before any node runs, the model files its input
handles hold (`ModelUser`) are made resident too, as ComfyUI's `load_models_gpu` does when the
sampler, text encoder or VAE runs: a loader whose output came from the cache never hides that
its model was evicted meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import struct
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from PIL import Image

from comfy_emulator.cache import CacheEntry, SignatureBuilder, is_link
from comfy_emulator.faults import OOM_TIPS, PromptFaults, is_oom, make_exception
from comfy_emulator.graph import DependencyCycleError, ExecutionList
from comfy_emulator.hub import PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA
from comfy_emulator.model_memory import loaded_line, requested_line
from comfy_emulator.nodes.base import ExecContext, Inputs, ModelUser, Node, NodeEnv, NodeOutput
from comfy_emulator.progress import ProgressRegistry
from comfy_emulator.prompt_queue import ExecutionStatus, QueueEntry
from comfy_emulator.state import ComfyState, InterruptProcessing, Services
from comfy_emulator.validation import full_type_name

JsonDict = dict[str, Any]
T = TypeVar("T")
PREVIEW_METHODS = {"auto", "latent2rgb", "taesd"}


@dataclass
class ExecutionOutcome:
    status: ExecutionStatus
    history_result: JsonDict
    kind: str  # "success" | "error" | "interrupted"


@dataclass
class _Failure:
    node_id: str
    exc: BaseException
    inputs: Inputs | None = None


class PromptRun:
    """The execution of one queue entry."""

    def __init__(
        self, services: Services, state: ComfyState, entry: QueueEntry, faults: PromptFaults
    ) -> None:
        self.services = services
        self.state = state
        self.entry = entry
        self.prompt = entry.prompt
        self.prompt_id = entry.prompt_id
        self.client_id: str | None = entry.extra_data.get("client_id")
        self.faults = faults
        self.messages: list[list[Any]] = []
        self.results: dict[str, tuple[Any, ...]] = {}
        self.ui_outputs: dict[str, JsonDict] = {}
        self.executed: list[str] = []
        self._first_node = True
        self.progress = _progress_registry(self)

    # ---- events -------------------------------------------------------------------------

    def emit_client(self, event: str, data: JsonDict) -> None:
        """Events that only the prompt's client receives (dropped without a client)."""
        if self.client_id is not None:
            self.state.hub.emit(event, data, self.client_id)

    def emit_client_or_all(self, event: str | int, data: Any) -> None:
        self.state.hub.emit(event, data, self.client_id)

    def add_message(self, event: str, data: JsonDict, broadcast: bool) -> None:
        """A status message: stored for history, sent like PromptExecutor.add_message."""
        data = {**data, "timestamp": _now_ms()}
        self.messages.append([event, data])
        if self.client_id is not None or broadcast:
            self.state.hub.emit(event, data, self.client_id)

    # ---- the run ------------------------------------------------------------------------

    async def run(self) -> ExecutionOutcome:
        self.state.client_id = self.client_id
        self.add_message("execution_start", {"prompt_id": self.prompt_id}, broadcast=False)
        cache = self.state.cache
        cache.set_prompt(SignatureBuilder(self.services.registry, self.env, self.prompt).all_keys())
        cached = [n for n in self.prompt if cache.get(n) is not None]
        self.add_message("execution_cached", {"nodes": cached, "prompt_id": self.prompt_id}, False)
        kind = await self._run_graph()
        self.state.last_node_id = None
        status = ExecutionStatus(
            "success" if kind == "success" else "error", kind == "success", self.messages
        )
        return ExecutionOutcome(status, self._history_result(), kind)

    @property
    def env(self) -> NodeEnv:
        return self.services.env

    async def _run_graph(self) -> str:
        cache = self.state.cache
        order = ExecutionList(self.prompt, self._is_output, lambda n: cache.get(n) is not None)
        for output in self.entry.outputs_to_execute:
            order.add_node(output)
        while not order.is_empty():
            try:
                node_id = order.stage()
            except DependencyCycleError as exc:
                self._report_cycle(order.pending()[0], exc)
                return "error"
            failure = await self._run_node(node_id)
            if failure is not None:
                return self._report_failure(failure)
            order.complete(node_id)
        self.add_message("execution_success", {"prompt_id": self.prompt_id}, broadcast=False)
        return "success"

    def _is_output(self, node_id: str) -> bool:
        cls = self.services.registry.get(self.prompt[node_id]["class_type"])
        return bool(cls and cls.output_node)

    async def _run_node(self, node_id: str) -> _Failure | None:
        first, self._first_node = self._first_node, False
        # An armed fault must fire even when everything is cached, so the first node runs.
        forced = first and (self.faults.fail is not None or self.faults.hang)
        cached = None if forced else self.state.cache.get(node_id)
        if cached is not None:
            self._use_cached(node_id, cached)
            return None
        class_type = self.prompt[node_id]["class_type"]
        cls = self.services.registry.get(class_type)
        assert cls is not None, "validated prompts only hold known classes"
        self.progress.start(node_id)
        if self.client_id is not None:
            self.state.last_node_id = node_id
        self.emit_client(
            "executing", {"node": node_id, "display_node": node_id, "prompt_id": self.prompt_id}
        )
        inputs: Inputs | None = None
        try:
            # Inside the try, as ComfyUI gathers a node's inputs: a value it cannot resolve
            # fails this prompt with execution_error, never the worker.
            inputs = self._resolve_inputs(node_id, cls)
            self.state.interrupt.check()  # nodes.before_node_execution
            if first:
                await self._apply_faults()
            output = await self._execute(cls, class_type, node_id, inputs)
        except InterruptProcessing as exc:
            return _Failure(node_id, exc)
        except Exception as exc:
            return _Failure(node_id, exc, inputs)
        self._store(node_id, output.values, output.ui)
        return None

    async def _execute(
        self, cls: type[Node], class_type: str, node_id: str, inputs: Inputs
    ) -> NodeOutput:
        self.services.stats.node_runs[class_type] += 1
        extra_time = self.services.timing.node_time.get(class_type, 0.0)
        context = _NodeContext(self, node_id)
        await self._load_input_models(inputs)
        if extra_time > 0:
            await context.sleep(extra_time)
        return await cls().execute(context, inputs)

    async def _load_input_models(self, inputs: Inputs) -> None:
        for value in inputs.values():
            if isinstance(value, ModelUser):
                for file in value.model_files():
                    await self.load_model(file)

    async def load_model(self, file: str, disk_lines: Sequence[str] = ()) -> None:
        """Make `file` resident, paying its load time (and logging the load) if it is not."""
        spec = self.services.catalogue.spec(file)
        models = self.state.models
        if spec is None or models.touch(file):
            return
        load = models.admit(spec)
        logs = self.services.logs
        requested = requested_line(load)
        for line in [*disk_lines, *([requested] if requested else [])]:
            logs.log(line)
        seconds = self.services.timing.load_seconds(spec.cost.load_s)
        stats = self.services.stats
        stats.model_loads[file] += 1
        stats.load_seconds += seconds
        await asyncio.sleep(seconds)
        loaded = loaded_line(load)
        if loaded:
            logs.log(loaded)

    async def _apply_faults(self) -> None:
        if self.faults.hang:
            await self._hang()
        if self.faults.fail is not None:
            raise make_exception(self.faults.fail.exception_type, self.faults.fail.message)

    async def _hang(self) -> None:
        released = asyncio.ensure_future(self.services.faults.hang_event().wait())
        interrupted = asyncio.ensure_future(self.state.interrupt.wait())
        try:
            await asyncio.wait({released, interrupted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (released, interrupted):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.state.interrupt.check()

    def _use_cached(self, node_id: str, cached: CacheEntry) -> None:
        if self.client_id is not None:
            output = (cached.ui or {}).get("output")
            self.emit_client("executed", self._executed_data(node_id, output))
            if cached.ui is not None:
                self.ui_outputs[node_id] = cached.ui
        self.progress.finish(node_id)
        self.results[node_id] = cached.outputs

    def _store(self, node_id: str, values: tuple[Any, ...], ui: JsonDict | None) -> None:
        if ui:
            meta = {
                "node_id": node_id,
                "display_node": node_id,
                "parent_node": None,
                "real_node_id": node_id,
            }
            self.ui_outputs[node_id] = {"meta": meta, "output": ui}
            self.emit_client("executed", self._executed_data(node_id, ui))
        self.state.cache.set(node_id, CacheEntry(self.ui_outputs.get(node_id), values))
        self.results[node_id] = values
        self.progress.finish(node_id)
        self.executed.append(node_id)

    def _executed_data(self, node_id: str, output: Any) -> JsonDict:
        return {
            "node": node_id,
            "display_node": node_id,
            "output": output,
            "prompt_id": self.prompt_id,
        }

    def _resolve_inputs(self, node_id: str, cls: type[Node]) -> Inputs:
        declared = cls.input_types(self.env)
        known = {**declared.get("required", {}), **declared.get("optional", {})}
        inputs: Inputs = {}
        for name, value in self.prompt[node_id]["inputs"].items():
            # Only a link is resolved: a list that is not one is a value (a `__value__` list
            # once validation unwrapped it), passed on as ComfyUI's get_input_data does.
            if is_link(value):
                inputs[name] = self._linked_value(value)
            elif name in known:
                inputs[name] = value
        for name, kind in declared.get("hidden", {}).items():
            self._add_hidden(
                inputs, name, kind[0] if isinstance(kind, list | tuple) else kind, node_id
            )
        return inputs

    def _add_hidden(self, inputs: Inputs, name: str, kind: str, node_id: str) -> None:
        if kind == "PROMPT":
            inputs[name] = self.prompt
        elif kind == "EXTRA_PNGINFO" and "extra_pnginfo" in self.entry.extra_data:
            inputs[name] = self.entry.extra_data["extra_pnginfo"]
        elif kind == "UNIQUE_ID":
            inputs[name] = node_id

    def _linked_value(self, link: list[Any]) -> Any:
        source, slot = link[0], link[1]
        values = self.results.get(source)
        if values is None:
            cached = self.state.cache.get(source)
            values = cached.outputs if cached is not None else None
        if values is None or not is_link(link):
            return None
        return values[int(slot)]

    # ---- failures -----------------------------------------------------------------------

    def _report_failure(self, failure: _Failure) -> str:
        class_type = self.prompt[failure.node_id]["class_type"]
        base = {
            "prompt_id": self.prompt_id,
            "node_id": failure.node_id,
            "node_type": class_type,
            "executed": list(self.executed),
        }
        if isinstance(failure.exc, InterruptProcessing):
            self.services.logs.log("Processing interrupted")
            self.add_message("execution_interrupted", base, broadcast=True)
            return "interrupted"
        self.add_message(
            "execution_error", {**base, **self._error_details(failure)}, broadcast=False
        )
        return "error"

    def _error_details(self, failure: _Failure) -> JsonDict:
        exc = failure.exc
        logs = self.services.logs
        logs.log(f"!!! Exception during processing !!! {exc}")
        logs.log("".join(traceback.format_exception(exc)).rstrip("\n"))
        tips = ""
        if is_oom(exc):
            tips = OOM_TIPS
            logs.log("Got an OOM, unloading all loaded models.")
        return {
            "exception_message": f"{exc}\n{tips}",
            "exception_type": full_type_name(type(exc)),
            "traceback": traceback.format_tb(exc.__traceback__),
            "current_inputs": _format_inputs(failure.inputs or {}),
            "current_outputs": list(self.prompt),
        }

    def _report_cycle(self, node_id: str, exc: DependencyCycleError) -> None:
        details = {
            "prompt_id": self.prompt_id,
            "node_id": node_id,
            "node_type": self.prompt[node_id]["class_type"],
            "executed": list(self.executed),
            "exception_message": str(exc),
            "exception_type": "graph.DependencyCycleError",
            "traceback": [],
            "current_inputs": [],
            "current_outputs": list(self.prompt),
        }
        self.add_message("execution_error", details, broadcast=False)

    def _history_result(self) -> JsonDict:
        outputs = {n: entry["output"] for n, entry in self.ui_outputs.items()}
        meta = {n: entry["meta"] for n, entry in self.ui_outputs.items()}
        return {"outputs": outputs, "meta": meta}


def _progress_registry(run: PromptRun) -> ProgressRegistry:
    return ProgressRegistry(
        run.prompt_id, lambda data: run.emit_client_or_all("progress_state", data)
    )


def _format_value(value: Any) -> Any:
    if value is None or isinstance(value, int | float | bool | str):
        return value
    return str(value)


def _format_inputs(inputs: Inputs) -> JsonDict:
    return {name: [_format_value(value)] for name, value in inputs.items()}


def _now_ms() -> int:
    return int(time.time() * 1000)


class _NodeContext(ExecContext):
    """What a running node sees of the executor."""

    def __init__(self, run: PromptRun, node_id: str) -> None:
        self._run = run
        self.env = run.env
        self.prompt_id = run.prompt_id
        self.node_id = node_id
        self.prompt = run.prompt
        self.extra_pnginfo = run.entry.extra_data.get("extra_pnginfo")
        self.metadata_enabled = run.services.config.metadata_enabled
        method = run.entry.extra_data.get("preview_method")
        if method in (None, "default"):
            method = run.services.config.preview_method
        self.previews_enabled = method in PREVIEW_METHODS
        self._paced_until = 0.0

    @property
    def step_time(self) -> float:
        return self._run.services.timing.step_time

    async def sleep(self, seconds: float) -> None:
        """Paced against a deadline: time lost between two steps (timer granularity, a busy
        host, sending the progress) comes off the next step, so the steps of a node take their
        share on average, as on a GPU. At most one step's worth is made up, so a long stall
        does not end in a burst of instant steps."""
        now = asyncio.get_running_loop().time()
        duration = seconds / self._run.services.timing.speed
        self._paced_until = paced_deadline(self._paced_until, now, duration)
        await asyncio.sleep(max(0.0, self._paced_until - now))

    async def progress(self, value: int, total: int, preview: Image.Image | None = None) -> None:
        run = self._run
        run.state.interrupt.check()  # main.py hijack_progress checks first
        run.progress.update(self.node_id, value, total)
        wants_metadata = run.state.hub.supports(run.client_id, "supports_preview_metadata")
        if preview is not None and wants_metadata:
            run.emit_client_or_all(
                PREVIEW_IMAGE_WITH_METADATA, self._preview_with_metadata(preview)
            )
        data = {"value": value, "max": total, "prompt_id": self.prompt_id, "node": self.node_id}
        run.emit_client_or_all("progress", data)
        if preview is not None and not wants_metadata:
            run.emit_client_or_all(PREVIEW_IMAGE, struct.pack(">I", 1) + _jpeg(preview))

    def _preview_with_metadata(self, preview: Image.Image) -> bytes:
        meta = {
            "node_id": self.node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": self.node_id,
            "parent_node_id": None,
            "real_node_id": self.node_id,
            "image_type": "image/jpeg",
        }
        encoded = json.dumps(meta).encode()
        return struct.pack(">I", len(encoded)) + encoded + _jpeg(preview)

    def send_text(self, text: str) -> None:
        self._run.state.hub.emit_text(self.node_id, text)

    def log(self, line: str) -> None:
        self._run.services.logs.log(line)

    def write(self, chunk: str) -> None:
        self._run.services.logs.write(chunk)

    def run_sync(self, func: Callable[..., T], *args: Any) -> Awaitable[T]:
        return asyncio.to_thread(func, *args)

    async def load_model(self, file: str, disk_lines: Sequence[str] = ()) -> None:
        await self._run.load_model(file, disk_lines)


def paced_deadline(previous: float, now: float, duration: float) -> float:
    """When a piece of work of ``duration`` started at ``now`` should end: right after the
    previous one's deadline, unless that lies more than one ``duration`` in the past."""
    start = previous if previous > now - duration else now
    return start + duration


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()
