from collections.abc import AsyncIterator

import httpx
import pytest

from comfy_testkit.emulator_control import EmulatorControl
from comfy_testkit.plugin import EmulatorFactory, ServiceFactory
from comfy_testkit.stack import RunningComponent


@pytest.fixture
def emulator(start_emulator: EmulatorFactory) -> RunningComponent:
    return start_emulator()


@pytest.fixture
def service(start_service: ServiceFactory, emulator: RunningComponent) -> RunningComponent:
    return start_service(emulator.url)


@pytest.fixture
async def api(service: RunningComponent) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=service.url, headers=service.auth_headers, timeout=10
    ) as client:
        yield client


@pytest.fixture
async def control(emulator: RunningComponent) -> AsyncIterator[EmulatorControl]:
    emulator_control = EmulatorControl(emulator.url)
    yield emulator_control
    await emulator_control.aclose()
