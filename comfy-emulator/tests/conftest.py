"""Fixtures: a real emulator on a free port, and an HTTP/WS client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from comfy_emulator import EmulatorConfig, RunningEmulator, start_emulator
from comfy_emulator.testing import EmulatorClient

StartEmulator = Callable[..., Awaitable[RunningEmulator]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[StartEmulator]:
    """Start emulators with config overrides; all are stopped after the test."""
    async with AsyncExitStack() as stack:
        count = 0

        async def _start(**overrides: Any) -> RunningEmulator:
            nonlocal count
            count += 1
            settings: dict[str, Any] = {
                "port": 0,
                "data_dir": tmp_path / f"emu{count}",
                "step_time": 0.002,
                "load_scale": 0.01,  # an SDXL switch costs 80 ms, as in the rest of the suite
            }
            settings.update(overrides)
            running = await start_emulator(EmulatorConfig(**settings))
            stack.push_async_callback(running.stop)
            return running

        yield _start


@pytest.fixture
async def emulator(start: StartEmulator) -> RunningEmulator:
    return await start()


@pytest.fixture
async def client(emulator: RunningEmulator) -> AsyncIterator[EmulatorClient]:
    async with EmulatorClient(emulator.url) as client:
        yield client
