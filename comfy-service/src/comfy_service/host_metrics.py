"""CPU, RAM and NVIDIA GPU readings for the health document.

NVML is optional: on a machine without an NVIDIA driver the GPU list is empty, never an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil
import pynvml  # type: ignore[import-untyped]
from loguru import logger

from comfy_shared.models import GpuInfo


@dataclass(frozen=True, slots=True)
class HostMetrics:
    cpu_percent: float
    ram_used_bytes: int
    ram_total_bytes: int


def read_host_metrics() -> HostMetrics:
    memory = psutil.virtual_memory()
    # interval=None: CPU use since the previous call (the health loop's interval), no blocking.
    return HostMetrics(
        cpu_percent=psutil.cpu_percent(interval=None),
        ram_used_bytes=memory.total - memory.available,
        ram_total_bytes=memory.total,
    )


class GpuReader:
    """Reads every GPU through NVML; initialises NVML once and remembers if it is absent."""

    def __init__(self) -> None:
        self._available: bool | None = None

    def read(self) -> list[GpuInfo]:
        if not self._ensure_nvml():
            return []
        try:
            return [_read_gpu(index) for index in range(pynvml.nvmlDeviceGetCount())]
        except pynvml.NVMLError as exc:
            logger.warning("reading GPUs through NVML failed", error=str(exc))
            return []

    def close(self) -> None:
        if self._available:
            pynvml.nvmlShutdown()
            self._available = None

    def _ensure_nvml(self) -> bool:
        if self._available is None:
            try:
                pynvml.nvmlInit()
                self._available = True
            except pynvml.NVMLError as exc:
                logger.info("no NVIDIA GPU visible; GPU list stays empty", reason=str(exc))
                self._available = False
        return self._available


def _read_gpu(index: int) -> GpuInfo:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    name = pynvml.nvmlDeviceGetName(handle)
    uuid = pynvml.nvmlDeviceGetUUID(handle)
    return GpuInfo(
        index=index,
        name=name.decode() if isinstance(name, bytes) else str(name),
        uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid),
        utilization_percent=float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu),
        memory_used_bytes=int(memory.used),
        memory_total_bytes=int(memory.total),
        temperature_c=float(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
    )
