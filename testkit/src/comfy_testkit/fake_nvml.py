"""A fake of the NVML binding (``pynvml``) for machines without an NVIDIA GPU.

It has the names ``comfy_service.host_metrics.GpuReader`` calls, with NVML's units (power in
milliwatts) and NVML's behaviour where it matters: a GPU without a reading raises
``NVMLError(NVML_ERROR_NOT_SUPPORTED)``, an event set with nothing queued raises
``NVML_ERROR_TIMEOUT``, and only GPUs registered for XID events deliver them.

In-process, pass a :class:`FakeNvml` to ``GpuReader(nvml=...)``. For a service process,
:func:`install_shim` writes a ``pynvml`` module that becomes :func:`from_env`'s fake; put its
folder first on ``PYTHONPATH`` and the GPUs, as JSON, in ``COMFY_FAKE_NVML``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Final

FAKE_NVML_ENV: Final = "COMFY_FAKE_NVML"
NVML_ERROR_NOT_SUPPORTED: Final = 3
NVML_ERROR_TIMEOUT: Final = 10
NVML_ERROR_LIBRARY_NOT_FOUND: Final = 12
_SHIM = f"""import sys
from comfy_testkit.fake_nvml import from_env
sys.modules[__name__] = from_env()  # read by `import pynvml` ({__name__})
"""


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA L4"
    memory_used_bytes: int = 2**30
    memory_total_bytes: int = 24 * 2**30
    utilization_percent: int = 40
    temperature_c: int = 55
    power_mw: int | None = 72_500
    """None: the board reports no power (NOT_SUPPORTED)."""
    power_limit_mw: int | None = 72_000
    xid_events: bool = True
    """False: registering for XID events answers NOT_SUPPORTED."""
    pending_xids: list[int] = field(default_factory=list)
    registered: bool = False


class FakeNvml:
    """The module-level names of ``pynvml`` that ``GpuReader`` uses, over fake GPUs."""

    NVMLError = NVMLError
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_TIMEOUT = NVML_ERROR_TIMEOUT
    NVML_TEMPERATURE_GPU = 0
    nvmlEventTypeXidCriticalError = 0x8

    def __init__(self, gpus: list[FakeGpu], *, driver: bool = True) -> None:
        self.gpus = gpus
        self.driver = driver
        self.initialised = False
        self.event_sets_open = 0

    def raise_xid(self, index: int, xid: int) -> None:
        """An XID error on GPU ``index``, delivered if it is registered for XID events."""
        self.gpus[index].pending_xids.append(xid)

    def nvmlInit(self) -> None:
        if not self.driver:
            raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        return self.gpus[index]

    def nvmlDeviceGetName(self, gpu: FakeGpu) -> bytes:
        return gpu.name.encode()

    def nvmlDeviceGetUUID(self, gpu: FakeGpu) -> str:
        return gpu.uuid

    def nvmlDeviceGetMemoryInfo(self, gpu: FakeGpu) -> SimpleNamespace:
        return SimpleNamespace(used=gpu.memory_used_bytes, total=gpu.memory_total_bytes)

    def nvmlDeviceGetUtilizationRates(self, gpu: FakeGpu) -> SimpleNamespace:
        return SimpleNamespace(gpu=gpu.utilization_percent, memory=0)

    def nvmlDeviceGetTemperature(self, gpu: FakeGpu, sensor: int) -> int:
        return gpu.temperature_c

    def nvmlDeviceGetPowerUsage(self, gpu: FakeGpu) -> int:
        return _supported(gpu.power_mw)

    def nvmlDeviceGetEnforcedPowerLimit(self, gpu: FakeGpu) -> int:
        return _supported(gpu.power_limit_mw)

    def nvmlEventSetCreate(self) -> object:
        self.event_sets_open += 1
        return object()

    def nvmlEventSetFree(self, event_set: object) -> None:
        self.event_sets_open -= 1

    def nvmlDeviceRegisterEvents(self, gpu: FakeGpu, event_types: int, event_set: object) -> None:
        if not gpu.xid_events:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        gpu.registered = True

    def nvmlEventSetWait_v2(self, event_set: object, timeout_ms: int) -> SimpleNamespace:
        for gpu in self.gpus:
            if gpu.registered and gpu.pending_xids:
                xid = gpu.pending_xids.pop(0)
                return SimpleNamespace(
                    device=gpu, eventType=self.nvmlEventTypeXidCriticalError, eventData=xid
                )
        raise NVMLError(NVML_ERROR_TIMEOUT)


def _supported(reading: int | None) -> int:
    if reading is None:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return reading


def from_env() -> FakeNvml:
    """The fake that ``COMFY_FAKE_NVML`` describes: a JSON list of :class:`FakeGpu` fields."""
    gpus = json.loads(os.environ.get(FAKE_NVML_ENV, "[]"))
    return FakeNvml([FakeGpu(**gpu) for gpu in gpus])


def install_shim(folder: Path) -> Path:
    """Writes ``pynvml.py`` into ``folder`` (to go first on ``PYTHONPATH``); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pynvml.py").write_text(_SHIM)
    return folder
