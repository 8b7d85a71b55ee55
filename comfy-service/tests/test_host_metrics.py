"""GpuReader over a fake NVML (the machine has no GPU): power, XID events, absent readings."""

import asyncio
import threading
from types import SimpleNamespace

import pytest
from loguru import logger

from comfy_service.host_metrics import GpuReader
from comfy_testkit.fake_nvml import FakeGpu, FakeNvml


def test_power_and_xid_errors_per_gpu() -> None:
    nvml = FakeNvml([FakeGpu("GPU-aaaa"), FakeGpu("GPU-bbbb", power_mw=300_250)])
    reader = GpuReader(nvml)

    first = reader.read()
    nvml.raise_xid(1, 48)
    nvml.raise_xid(1, 79)
    second = reader.read()

    assert [(g.uuid, g.power_watts, g.power_limit_watts) for g in first] == [
        ("GPU-aaaa", 72.5, 72.0),
        ("GPU-bbbb", 300.25, 72.0),
    ]
    assert [(g.xid_errors, g.last_xid) for g in first] == [(0, None), (0, None)]
    assert [(g.xid_errors, g.last_xid) for g in second] == [(0, None), (2, 79)]
    assert reader.read()[1].xid_errors == 2  # counted once, kept


def test_a_gpu_without_power_readings_or_xid_events_reports_none() -> None:
    nvml = FakeNvml([FakeGpu("GPU-cccc", power_mw=None, power_limit_mw=None, xid_events=False)])
    reader = GpuReader(nvml)
    nvml.raise_xid(0, 79)  # not registered: NVML does not deliver it

    (gpu,) = reader.read()

    assert (gpu.power_watts, gpu.power_limit_watts, gpu.xid_errors, gpu.last_xid) == (
        None, None, None, None,
    )  # fmt: skip
    assert (gpu.temperature_c, gpu.memory_used_bytes) == (55, 2**30)


def test_without_a_driver_the_list_is_empty_and_close_is_safe() -> None:
    reader = GpuReader(FakeNvml([FakeGpu("GPU-dddd")], driver=False))

    assert reader.read() == []
    assert reader.read() == []
    reader.close()


def test_close_frees_the_event_set_and_shuts_nvml_down() -> None:
    nvml = FakeNvml([FakeGpu("GPU-eeee")])
    reader = GpuReader(nvml)
    reader.read()
    assert (nvml.initialised, nvml.event_sets_open) == (True, 1)

    reader.close()

    assert (nvml.initialised, nvml.event_sets_open) == (False, 0)


class _WedgedNvml(FakeNvml):
    """NVML whose memory reading hangs until released (a wedged driver)."""

    def __init__(self) -> None:
        super().__init__([FakeGpu("GPU-ffff")])
        self.hang = threading.Event()
        self.release = threading.Event()

    def nvmlDeviceGetMemoryInfo(self, gpu: FakeGpu) -> SimpleNamespace:
        if self.hang.is_set():
            self.release.wait(timeout=10)
        return super().nvmlDeviceGetMemoryInfo(gpu)


async def test_a_hanging_reading_does_not_hold_the_health_loop() -> None:
    nvml = _WedgedNvml()
    reader = GpuReader(nvml)
    before = await reader.sample()
    nvml.gpus[0].temperature_c = 90
    nvml.hang.set()

    during = await reader.sample(timeout_s=0.05)
    again = await reader.sample(timeout_s=0.05)  # no second reading piles up
    nvml.release.set()
    after = await asyncio.wait_for(reader.sample(), timeout=5)

    assert during == again == before
    assert after[0].temperature_c == 90


class _LostGpuNvml(FakeNvml):
    """An XID event from a GPU that no longer answers (it fell off the bus)."""

    def __init__(self) -> None:
        super().__init__([FakeGpu("GPU-1111"), FakeGpu("GPU-gone")])
        self.lost = False

    def nvmlDeviceGetUUID(self, gpu: FakeGpu) -> str:
        if self.lost and gpu.uuid == "GPU-gone":
            raise self.NVMLError(15)  # NVML_ERROR_GPU_IS_LOST
        return super().nvmlDeviceGetUUID(gpu)

    def nvmlDeviceGetCount(self) -> int:
        return 1 if self.lost else 2


def test_an_xid_from_a_gpu_that_no_longer_answers_does_not_stop_the_reading() -> None:
    nvml = _LostGpuNvml()
    reader = GpuReader(nvml)
    reader.read()
    nvml.raise_xid(1, 79)
    nvml.raise_xid(0, 13)
    nvml.lost = True

    (gpu,) = reader.read()

    assert (gpu.uuid, gpu.xid_errors, gpu.last_xid) == ("GPU-1111", 1, 13)


class _BrokenNvml(FakeNvml):
    def nvmlDeviceGetCount(self) -> int:
        raise ValueError("not an NVML error")


async def test_an_unexpected_error_of_a_reading_reaches_the_health_loop() -> None:
    reader = GpuReader(_BrokenNvml([]))

    with pytest.raises(ValueError, match="not an NVML error"):
        await reader.sample()


class _OldDriverNvml(FakeNvml):
    """A driver whose library lacks nvmlEventSetWait_v2: every wait fails."""

    def nvmlEventSetWait_v2(self, event_set: object, timeout_ms: int) -> SimpleNamespace:
        raise self.NVMLError(13)  # NVML_ERROR_FUNCTION_NOT_FOUND


def test_a_failing_xid_wait_is_logged_once_and_the_gpus_are_still_read() -> None:
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(m.record["message"]), level="WARNING")
    try:
        reader = GpuReader(_OldDriverNvml([FakeGpu("GPU-2222")]))
        readings = [reader.read() for _ in range(3)]
    finally:
        logger.remove(sink)

    assert [[(g.uuid, g.power_watts) for g in gpus] for gpus in readings] == [
        [("GPU-2222", 72.5)]
    ] * 3
    assert warnings == ["reading xid events failed"]
