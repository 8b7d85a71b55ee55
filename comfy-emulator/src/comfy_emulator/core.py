"""The emulated ComfyUI process: prompt submission, the single worker, interrupts, restarts.

`Emulator` owns the long-lived `Services` and the current `ComfyState` (see `state.py`). HTTP and
WebSocket handlers translate requests into calls on it; they always read `emulator.state` anew,
so after an emulated restart they see the fresh state.

The worker takes one prompt at a time off the heap, clears the interrupt flag in the same step
(so an interrupt can never leak into the next prompt), runs it (`executor.PromptRun`), writes the
history entry and only then sends the final `status` and `executing{node: null}`.

`POST /free` sets flags applied after the running prompt (at once when idle): `unload_models`
empties the resident models, `free_memory` does that and drops every cached output.

Fault injection that concerns the whole process lives here: `restart()` drops the queue, the
running prompt, history, sockets, cache, resident models and the prompt counter; `go_down()`
additionally stops accepting connections for a while (through the `Listener` installed by
`runner.start_emulator`).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import traceback
import uuid
from typing import Any, Protocol

from comfy_emulator.cache import OutputCache
from comfy_emulator.config import EmulatorConfig
from comfy_emulator.executor import PromptRun
from comfy_emulator.faults import Faults, Stats
from comfy_emulator.files import Folders
from comfy_emulator.hub import SocketHub
from comfy_emulator.logbuffer import LogBuffer, stdout_echo
from comfy_emulator.model_memory import ModelCatalogue, ResidentModels, model_budget_mb
from comfy_emulator.nodes import build_registry
from comfy_emulator.nodes.base import NodeEnv
from comfy_emulator.prompt_queue import ExecutionStatus, PromptQueue, QueueEntry
from comfy_emulator.state import ComfyState, LogSubscriptions, Services, Timing
from comfy_emulator.validation import validate_prompt
from comfy_emulator.versions import is_canonical_uuid

JsonDict = dict[str, Any]
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")


# ComfyUI 0.26.0's answer to a prompt_id that is not a canonical UUID (protocol notes §9.1).
INVALID_PROMPT_ID_ERROR: JsonDict = {
    "type": "invalid_prompt_id",
    "message": "prompt_id must be a valid UUID",
    "details": "prompt_id must be a UUID string in canonical lowercase hyphenated form; "
    "omit it to let the server generate one",
    "extra_info": {},
}


class Listener(Protocol):
    """Stops and resumes accepting TCP connections (implemented by the runner)."""

    async def stop(self) -> None: ...

    async def resume(self) -> None: ...


class Emulator:
    def __init__(self, config: EmulatorConfig, folders: Folders) -> None:
        logs = LogBuffer(echo=stdout_echo(config.log_to_stdout))
        self.services = Services(
            config=config,
            registry=build_registry(config.extra_nodes),
            env=NodeEnv(folders, config.models),
            logs=logs,
            faults=Faults(config.fail_next, config.hang_next),
            stats=Stats(),
            timing=Timing.from_config(config),
            catalogue=ModelCatalogue(config.models, config.model_costs),
        )
        self.state = self._new_state()
        self.listener: Listener | None = None
        self.bound_port = 0  # set by the runner once the socket is bound
        self._worker: asyncio.Task[None] | None = None
        self._down_task: asyncio.Task[None] | None = None
        self._down_until = 0.0

    @property
    def config(self) -> EmulatorConfig:
        return self.services.config

    @property
    def logs(self) -> LogBuffer:
        return self.services.logs

    # ---- lifecycle ----------------------------------------------------------------------

    def _new_state(self) -> ComfyState:
        hub = SocketHub(self.services.logs)

        def on_queue_change() -> None:
            hub.emit("status", {"status": {"exec_info": {"queue_remaining": queue.remaining()}}})

        queue = PromptQueue(on_queue_change, self.config.history_max)
        return ComfyState(
            queue=queue,
            hub=hub,
            cache=OutputCache(self.config.cache_enabled),
            models=ResidentModels(model_budget_mb(self.config.vram_total_mb)),
            log_subscriptions=LogSubscriptions(hub),
        )

    async def start(self) -> None:
        """Boot: clean temp folder, startup log lines, publisher and worker."""
        self.services.folders.ensure()
        self.services.folders.wipe_temp()
        self.logs.clear()
        self._log_startup()
        self.logs.add_listener(self.state.log_subscriptions.on_entries)
        self.state.hub.start()
        self._worker = asyncio.create_task(self._run_worker(self.state), name="prompt-worker")

    async def stop(self) -> None:
        """Shut down like a process exit: worker gone, sockets closed, temp folder removed."""
        await self._cancel_down()
        await self._halt(abort_sockets=False)
        self.services.folders.wipe_temp()

    async def _halt(self, abort_sockets: bool) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        self.services.faults.release_all()  # hung prompts died with the worker
        self.logs.remove_listener(self.state.log_subscriptions.on_entries)
        self.state.hub.clear_pending()
        if abort_sockets:
            self.state.hub.abort_all()
        await self.state.hub.stop()

    async def restart(self) -> None:
        """Lose everything a ComfyUI process holds in memory, then boot again."""
        await self._halt(abort_sockets=True)
        self.services.stats.restarts += 1
        self.state = self._new_state()
        await self.start()

    def is_down(self) -> bool:
        return time.monotonic() < self._down_until

    async def go_down(self, seconds: float, keep_state: bool) -> None:
        """Refuse connections for `seconds`; without `keep_state` it is a crash + restart."""
        await self._cancel_down()
        self._down_until = time.monotonic() + seconds
        self._down_task = asyncio.create_task(self._down_for(seconds, keep_state), name="down")

    async def _cancel_down(self) -> None:
        if self._down_task is not None and not self._down_task.done():
            self._down_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._down_task
        self._down_task = None

    async def _down_for(self, seconds: float, keep_state: bool) -> None:
        if self.listener is not None:
            await self.listener.stop()
        if keep_state:
            self.state.hub.abort_all()
        else:
            await self._halt(abort_sockets=True)
            self.services.stats.restarts += 1
        await asyncio.sleep(seconds)
        await self._come_back()

    async def _come_back(self) -> None:
        if self._worker is None:  # the process "crashed": boot a fresh one
            self.state = self._new_state()
            await self.start()
        if self.listener is not None:
            await self.listener.resume()
        self._down_until = 0.0

    def _log_startup(self) -> None:
        config = self.config
        total_mb = config.vram_total_mb
        lines = [
            f"Total VRAM {total_mb} MB, total RAM {total_mb * 2} MB",
            f"pytorch version: {pytorch_version(config)}",
            "Set vram state to: NORMAL_VRAM"
            if config.device == "cuda"
            else "Set vram state to: DISABLED",
            f"Device: {device_name(config)}",
            f"Python version: {sys.version}",
            f"ComfyUI version: {config.comfyui_version}",
            "ComfyUI frontend version: 1.35.9",
            "[Prompt Server] web root: (emulator: no frontend)",
            "Starting server\n",
        ]
        if self.bound_port:
            lines.append(f"To see the GUI go to: http://{config.host}:{self.bound_port}")
        for line in lines:
            self.logs.log(line)

    # ---- requests -----------------------------------------------------------------------

    def queue_info(self) -> JsonDict:
        return {"exec_info": {"queue_remaining": self.state.queue.remaining()}}

    def submit_prompt(self, body: Any) -> tuple[int, JsonDict]:
        """POST /prompt after the body was parsed; returns (status, response body)."""
        number = self._take_number(body)
        if not isinstance(body, dict) or "prompt" not in body:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return 400, {"error": error, "node_errors": {}}
        prompt_id = self._prompt_id_for(body)
        if prompt_id is None:
            return 400, {"error": INVALID_PROMPT_ID_ERROR, "node_errors": {}}
        return self._submit_valid(body, number, prompt_id)

    def _prompt_id_for(self, body: JsonDict) -> str | None:
        """The id the prompt runs under; None when this version rejects the one given."""
        if not self.config.traits.canonical_prompt_ids:
            return str(body.get("prompt_id", uuid.uuid4()))  # 0.8.0 takes anything, stringified
        given = body.get("prompt_id")
        if given is None:  # absent or JSON null: the server mints one
            return str(uuid.uuid4())
        return given if is_canonical_uuid(given) else None

    def _take_number(self, body: Any) -> int | float:
        # The counter moves for every request without "number", including rejected ones.
        if isinstance(body, dict) and "number" in body:
            return float(body["number"])
        number = self.state.number
        if isinstance(body, dict) and body.get("front"):
            number = -number
        self.state.number += 1
        return number

    def _submit_valid(
        self, body: JsonDict, number: int | float, prompt_id: str
    ) -> tuple[int, JsonDict]:
        prompt = body["prompt"]
        if not isinstance(prompt, dict):
            raise TypeError("prompt must be an object of nodes")
        s = self.services
        result = validate_prompt(
            s.registry,
            s.env,
            prompt,
            body.get("partial_execution_targets"),
            s.logs.log,
            missing_node_type=self.config.traits.missing_node_type,
        )
        extra_data = body.get("extra_data", {})
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        if not result.ok:
            s.logs.log(f"invalid prompt: {result.error}")
            return 400, {"error": result.error, "node_errors": result.node_errors}
        sensitive = {k: extra_data.pop(k) for k in SENSITIVE_EXTRA_DATA_KEYS if k in extra_data}
        extra_data["create_time"] = int(time.time() * 1000)
        entry = QueueEntry(number, prompt_id, prompt, extra_data, result.outputs, sensitive)
        self.state.queue.put(entry)
        return 200, {"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors}

    def interrupt(self, prompt_id: Any) -> None:
        """POST /interrupt: a prompt_id that is not running is only logged."""
        if not prompt_id:
            self.logs.log("Global interrupt (no prompt_id specified)")
            self.state.interrupt.set()
        elif prompt_id in self.state.queue.running_ids():
            self.logs.log(f"Interrupting prompt {prompt_id}")
            self.state.interrupt.set()
        else:
            self.logs.log(f"Prompt {prompt_id} is not currently running, skipping interrupt")

    def cancel_job(self, prompt_id: str) -> bool:
        """Cancel by job id (ComfyUI 0.26.0): True if it was running or pending.

        A running prompt is interrupted, a pending one leaves the queue; a finished or unknown
        id is a no-op. ComfyUI classifies from a snapshot and re-checks at each step (the
        interrupt fires only if that id still runs); here the handler never yields between
        the check and the action, so the prompt cannot change state in between.
        """
        queue = self.state.queue
        if prompt_id in queue.running_ids():
            self.logs.log(f"Cancelling running prompt {prompt_id}")
            self.state.interrupt.set()
            return True
        if queue.is_pending(prompt_id):
            self.logs.log(f"Cancelling pending prompt {prompt_id}")
            return queue.delete_pending(prompt_id)
        return False

    def free(self, unload_models: Any, free_memory: Any) -> None:
        """POST /free: applied after the running prompt, or at once when idle."""
        asked = {"unload_models": unload_models, "free_memory": free_memory}
        self.services.stats.frees.update(flag for flag, value in asked.items() if value)
        if unload_models:
            self.state.free_flags["unload_models"] = True
        if free_memory:
            self.state.free_flags["free_memory"] = True
        if not self.state.worker_busy:
            self._apply_free_flags(self.state)

    def _apply_free_flags(self, state: ComfyState) -> None:
        flags, state.free_flags = state.free_flags, {}
        if flags.get("unload_models") or flags.get("free_memory"):
            state.models.clear()  # free_memory implies unload_models
        if flags.get("free_memory"):
            state.cache.clear()  # free_memory resets the executor, dropping all cached outputs

    # ---- worker -------------------------------------------------------------------------

    async def _run_worker(self, state: ComfyState) -> None:
        while True:
            task_id, entry = await state.queue.get()
            state.interrupt.clear()  # same step as the dequeue: late interrupts never leak
            state.worker_busy = True
            try:
                await self._run_one(state, task_id, entry)
            except Exception as exc:
                # A bug of ours must not stop the worker: every later prompt would wait forever.
                self._fail_run(state, task_id, entry, exc)
            finally:
                state.worker_busy = False
            self._apply_free_flags(state)

    async def _run_one(self, state: ComfyState, task_id: int, entry: QueueEntry) -> None:
        started = time.perf_counter()
        services = self.services
        services.stats.executions[entry.prompt_id] += 1
        run = PromptRun(services, state, entry, services.faults.take())
        outcome = await run.run()
        state.queue.task_done(task_id, outcome.history_result, outcome.status)
        services.stats.outcomes[outcome.kind] += 1
        if run.client_id is not None:
            data = {"node": None, "prompt_id": entry.prompt_id}
            state.hub.emit("executing", data, run.client_id)
        services.logs.log(f"Prompt executed in {time.perf_counter() - started:.2f} seconds")

    def _fail_run(self, state: ComfyState, task_id: int, entry: QueueEntry, exc: Exception) -> None:
        self.services.logs.log("".join(traceback.format_exception(exc)).rstrip("\n"))
        if task_id in state.queue.running:
            state.queue.task_done(task_id, {}, ExecutionStatus("error", False, []))
        client_id = entry.extra_data.get("client_id")
        if isinstance(client_id, str):
            data = {"node": None, "prompt_id": entry.prompt_id}
            state.hub.emit("executing", data, client_id)


def device_name(config: EmulatorConfig) -> str:
    if config.device == "cpu":
        return "cpu"
    return f"cuda:0 {config.gpu_name} : cudaMallocAsync"


def pytorch_version(config: EmulatorConfig) -> str:
    return "2.7.1+cpu" if config.device == "cpu" else "2.7.1+cu128"
