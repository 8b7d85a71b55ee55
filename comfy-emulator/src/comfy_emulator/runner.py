"""Serving an emulator on a real TCP port: `start_emulator(config) -> RunningEmulator`.

    running = await start_emulator(EmulatorConfig(port=0, step_time=0.01))
    ... talk to running.url ...
    await running.stop()

`RunningEmulator` is also an async context manager. It installs a `Listener` on the emulator so
the "down" fault really refuses connections: it closes the listening socket and every open
connection, and later listens again on the same port.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from types import TracebackType

from aiohttp import web

from comfy_emulator.app import create_app
from comfy_emulator.config import EmulatorConfig
from comfy_emulator.core import Emulator
from comfy_emulator.routes import EMULATOR


class _SiteListener:
    """Stops/resumes the TCP site of a runner (the emulator's `Listener`)."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self._host = host
        self._port = port
        self._listening = True

    async def stop(self) -> None:
        if not self._listening:
            return
        self._listening = False
        for site in list(self._runner.sites):
            await site.stop()
        server = self._runner.server
        for connection in server.connections if server is not None else []:
            connection.force_close()

    async def resume(self) -> None:
        if self._listening:
            return
        await web.TCPSite(self._runner, self._host, self._port).start()
        self._listening = True


@dataclass
class RunningEmulator:
    """An emulator listening on `host:port`."""

    config: EmulatorConfig
    app: web.Application
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def emulator(self) -> Emulator:
        """The in-process emulator, for tests that want to look inside."""
        return self.app[EMULATOR]

    async def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            await self.runner.cleanup()

    async def __aenter__(self) -> RunningEmulator:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def start_emulator(config: EmulatorConfig) -> RunningEmulator:
    """Create the app and serve it; `port=0` picks a free port (see `.port`)."""
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    port = _bound_port(runner, config.port)
    emulator = app[EMULATOR]
    emulator.bound_port = port
    emulator.listener = _SiteListener(runner, config.host, port)
    emulator.logs.log(f"To see the GUI go to: http://{config.host}:{port}")
    return RunningEmulator(config, app, runner, config.host, port)


def _bound_port(runner: web.AppRunner, requested: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return requested
