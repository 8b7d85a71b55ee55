"""CPU, RAM and NVIDIA GPU readings for the health document.

NVML is optional: on a machine without an NVIDIA driver the GPU list is empty, never an error.
NVML (the library ``nvidia-smi`` itself calls) is read in-process: structured values, no
subprocess per reading, and an event set for XID errors (README "Metrics" says why not GPUtil).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import psutil
import pynvml  # type: ignore[import-untyped]
from loguru import logger

from comfy_shared.models import GpuInfo

READ_TIMEOUT_S: Final = 2.0
"""How long the health loop waits for one NVML reading before it publishes the last one."""
MAX_EVENTS_PER_READ: Final = 1000
"""XID events taken from NVML's queue per reading: a storm of them cannot hold the loop."""


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
    """Reads every GPU through NVML; initialises NVML once and remembers if it is absent.

    ``nvml`` is the NVML binding (``pynvml``; tests pass a fake with the same names). Critical
    XID errors arrive as NVML events, registered once per GPU and drained without waiting at
    each reading, so an XID between two readings is counted and none blocks the health loop.
    """

    def __init__(self, nvml: Any = pynvml) -> None:
        self._nvml = nvml
        self._available: bool | None = None
        self._events: Any = None  # NVML's event set, once XID events are registered
        self._xids: dict[str, _XidCount] = {}  # by GPU UUID; absent: no XID events there
        self._xid_failing = False
        self._last: list[GpuInfo] = []
        self._pending: asyncio.Future[list[GpuInfo]] | None = None

    async def sample(self, timeout_s: float = READ_TIMEOUT_S) -> list[GpuInfo]:
        """:meth:`read` in a worker thread. A reading that takes longer than ``timeout_s``
        (a wedged driver) is not waited for: the last reading stands until it returns, and
        no second one is started meanwhile."""
        if self._pending is None or self._pending.done():
            self._pending = _in_daemon_thread(self.read)
        try:
            self._last = await asyncio.wait_for(asyncio.shield(self._pending), timeout_s)
        except TimeoutError:
            logger.warning("nvml reading is slow; publishing the previous one")
        return self._last

    def read(self) -> list[GpuInfo]:
        if not self._ensure_nvml():
            return []
        nvml = self._nvml
        try:
            self._drain_xid_events()
            return [
                self._with_xids(_read_gpu(nvml, index))
                for index in range(nvml.nvmlDeviceGetCount())
            ]
        except nvml.NVMLError as exc:
            logger.warning("reading GPUs through NVML failed", error=str(exc))
            return []

    def close(self) -> None:
        if self._pending is not None and not self._pending.done():
            return  # a reading still runs in its thread: NVML goes with the process
        if self._available:
            if self._events is not None:
                self._nvml.nvmlEventSetFree(self._events)
                self._events = None
            self._nvml.nvmlShutdown()
            self._available = None

    def _ensure_nvml(self) -> bool:
        if self._available is None:
            try:
                self._nvml.nvmlInit()
                self._available = True
            except self._nvml.NVMLError as exc:
                logger.info("no NVIDIA GPU visible; GPU list stays empty", reason=str(exc))
                self._available = False
            if self._available:
                self._register_xid_events()
        return self._available

    def _register_xid_events(self) -> None:
        """One event set for every GPU that offers critical XID events (not every GPU or
        driver does, e.g. inside some VMs: those report no XID count, rather than 0)."""
        nvml = self._nvml
        try:
            self._events = nvml.nvmlEventSetCreate()
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                try:
                    nvml.nvmlDeviceRegisterEvents(
                        handle, nvml.nvmlEventTypeXidCriticalError, self._events
                    )
                except nvml.NVMLError as exc:
                    logger.info("no xid events from this gpu", gpu_index=index, reason=str(exc))
                    continue
                self._xids[_text(nvml.nvmlDeviceGetUUID(handle))] = _XidCount()
        except nvml.NVMLError as exc:
            logger.info("no xid events from nvml", reason=str(exc))

    def _drain_xid_events(self) -> None:
        """Takes the XID events that arrived since the last reading (a wait of 0 ms: NVML
        answers "timeout" at once when there are none)."""
        nvml = self._nvml
        if not self._xids:
            return
        for _ in range(MAX_EVENTS_PER_READ):
            try:
                event = nvml.nvmlEventSetWait_v2(self._events, 0)
            except nvml.NVMLError as exc:
                if exc.value == nvml.NVML_ERROR_TIMEOUT:  # nothing (more) queued
                    self._xid_failing = False
                else:
                    self._xid_failed(str(exc))
                return
            self._count_xid(event)

    def _xid_failed(self, error: str) -> None:
        """Logged at WARNING once per run of failures: a driver without the call fails at
        every reading, and must not fill the log."""
        (logger.debug if self._xid_failing else logger.warning)(
            "reading xid events failed", error=error
        )
        self._xid_failing = True

    def _count_xid(self, event: Any) -> None:
        nvml = self._nvml
        try:
            uuid = _text(nvml.nvmlDeviceGetUUID(event.device))
        except nvml.NVMLError as exc:  # a GPU that fell off the bus may not answer any more
            logger.warning("gpu xid error, gpu unknown", xid=int(event.eventData), error=str(exc))
            return
        count = self._xids.get(uuid)
        if count is not None:
            count.seen(int(event.eventData))
            logger.warning("gpu xid error", xid=int(event.eventData), gpu_uuid=uuid)

    def _with_xids(self, gpu: GpuInfo) -> GpuInfo:
        count = self._xids.get(gpu.uuid or "")
        if count is None:
            return gpu
        return gpu.model_copy(update={"xid_errors": count.total, "last_xid": count.last})


@dataclass(slots=True)
class _XidCount:
    total: int = 0
    last: int | None = None

    def seen(self, xid: int) -> None:
        self.total += 1
        self.last = xid


def _in_daemon_thread(read: Callable[[], list[GpuInfo]]) -> asyncio.Future[list[GpuInfo]]:
    """``read()`` in a thread of its own. A daemon thread, unlike the default executor's: a
    read wedged in the driver must not keep the process from exiting."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[list[GpuInfo]] = loop.create_future()

    def settle(result: list[GpuInfo], error: Exception | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    def target() -> None:
        try:
            outcome: tuple[list[GpuInfo], Exception | None] = (read(), None)
        except Exception as exc:  # raised where the reading is awaited, as to_thread does
            outcome = ([], exc)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=target, name="nvml-reading", daemon=True).start()
    return future


def _read_gpu(nvml: Any, index: int) -> GpuInfo:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    return GpuInfo(
        index=index,
        name=_text(nvml.nvmlDeviceGetName(handle)),
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        utilization_percent=float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
        memory_used_bytes=int(memory.used),
        memory_total_bytes=int(memory.total),
        temperature_c=float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
        power_watts=_watts(nvml, nvml.nvmlDeviceGetPowerUsage, handle),
        power_limit_watts=_watts(nvml, nvml.nvmlDeviceGetEnforcedPowerLimit, handle),
    )


def _watts(nvml: Any, read_milliwatts: Any, handle: Any) -> float | None:
    """A power reading in watts, or None where the GPU does not report it (some boards)."""
    try:
        return int(read_milliwatts(handle)) / 1000
    except nvml.NVMLError:
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
