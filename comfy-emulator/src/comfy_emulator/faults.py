"""Fault injection and execution statistics (emulator-only; real ComfyUI has neither).

- *fail*: the next N prompts raise an exception in the first node they stage, reported like any
  node error (`execution_error`, history status "error"). The default is a CUDA out-of-memory
  error (`torch.OutOfMemoryError`, ComfyUI's OOM tips appended to the message).
- *hang*: the next N prompts block inside their first node, after `executing` was sent, until
  interrupted (the prompt then ends with `execution_interrupted`) or released.

`Stats` survives emulated restarts on purpose: tests use it to prove a task never ran twice,
even across a restart.
"""

from __future__ import annotations

import asyncio
import builtins
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

OOM_TYPE = "torch.OutOfMemoryError"
OOM_MESSAGE = (
    "CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity of 23.99 GiB of "
    "which 1.17 GiB is free. Of the allocated memory 20.51 GiB is allocated by PyTorch, and "
    "1.27 GiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is large "
    "try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See "
    "documentation for Memory Management  "
    "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
)
OOM_TIPS = (
    "This error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked before "
    "you might have accidentally set the batch_size to a large number."
)

_exception_classes: dict[str, type[Exception]] = {}


def make_exception(qualified_name: str, message: str) -> Exception:
    """An exception whose `module.Qualname` is `qualified_name` (e.g. torch.OutOfMemoryError)."""
    module, _, name = qualified_name.rpartition(".")
    if not module:
        builtin = getattr(builtins, name, None)
        if isinstance(builtin, type) and issubclass(builtin, Exception):
            return builtin(message)
        module = "builtins"
    if qualified_name not in _exception_classes:
        _exception_classes[qualified_name] = type(name, (RuntimeError,), {"__module__": module})
    return _exception_classes[qualified_name](message)


def is_oom(exc: BaseException) -> bool:
    """ComfyUI appends its OOM tips for torch's OutOfMemoryError."""
    return type(exc).__name__ == "OutOfMemoryError"


@dataclass(frozen=True)
class FailSpec:
    exception_type: str = OOM_TYPE
    message: str = OOM_MESSAGE


@dataclass(frozen=True)
class PromptFaults:
    """The faults one dequeued prompt carries."""

    hang: bool = False
    fail: FailSpec | None = None


class Faults:
    def __init__(self, fail_next: int = 0, hang_next: int = 0) -> None:
        self._fails: deque[FailSpec] = deque(FailSpec() for _ in range(fail_next))
        self.hang_remaining = hang_next
        self._hung: list[asyncio.Event] = []

    def arm_fail(self, count: int, spec: FailSpec) -> None:
        self._fails.extend(spec for _ in range(count))

    def arm_hang(self, count: int) -> None:
        self.hang_remaining += count

    def take(self) -> PromptFaults:
        """Consume the faults of the next prompt to run."""
        hang = self.hang_remaining > 0
        if hang:
            self.hang_remaining -= 1
        return PromptFaults(hang=hang, fail=self._fails.popleft() if self._fails else None)

    def hang_event(self) -> asyncio.Event:
        event = asyncio.Event()
        self._hung.append(event)
        return event

    def release_all(self) -> int:
        """Let every currently hung prompt continue; returns how many there were."""
        released = [e for e in self._hung if not e.is_set()]
        for event in released:
            event.set()
        self._hung = []
        return len(released)

    def clear(self) -> None:
        self._fails.clear()
        self.hang_remaining = 0
        self.release_all()

    def snapshot(self) -> dict[str, Any]:
        return {
            "fail_next": len(self._fails),
            "hang_next": self.hang_remaining,
            "hung_now": sum(1 for e in self._hung if not e.is_set()),
        }


class Stats:
    """Counts of what the emulator executed, for tests."""

    def __init__(self) -> None:
        self.executions: Counter[str] = Counter()  # prompt_id -> times it started executing
        self.node_runs: Counter[str] = Counter()  # class_type -> uncached node executions
        self.outcomes: Counter[str] = Counter()  # success / error / interrupted
        self.restarts = 0
        self.model_loads: Counter[str] = Counter()  # model file -> loads paid
        self.load_seconds = 0.0  # total seconds paid for model loads
        self.frees: Counter[str] = Counter()  # POST /free flag -> times it was asked for

    def snapshot(self) -> dict[str, Any]:
        return {
            "executions": dict(self.executions),
            "total_executions": sum(self.executions.values()),
            "node_runs": dict(self.node_runs),
            "outcomes": dict(self.outcomes),
            "restarts": self.restarts,
            "model_loads": dict(self.model_loads),
            "load_seconds": self.load_seconds,
            "frees": dict(self.frees),
        }

    def reset(self) -> None:
        self.executions.clear()
        self.node_runs.clear()
        self.outcomes.clear()
        self.restarts = 0
        self.model_loads.clear()
        self.load_seconds = 0.0
