"""Drive an emulator's fault injection (``/emulator/*``) from tests."""

from __future__ import annotations

from typing import Any

import httpx

from comfy_testkit.waiting import wait_for_condition


class EmulatorControl:
    def __init__(self, url: str) -> None:
        self._http = httpx.AsyncClient(base_url=f"{url}/emulator", timeout=10)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def fail_next(self, count: int = 1, **spec: str) -> None:
        await self._post("/fail-next", {"count": count, **spec})

    async def hang_next(self, count: int = 1) -> None:
        await self._post("/hang-next", {"count": count})

    async def release(self) -> None:
        """Let hung prompts run on (only those hung already: see :meth:`wait_hung`)."""
        await self._post("/release", {})

    async def wait_hung(self, count: int = 1, timeout_s: float = 15) -> None:
        """Wait until ``count`` prompts are hung: a release sent before a prompt reaches its
        hang would find nothing to release, and the prompt would then hang for good."""

        async def hung() -> bool:
            return int((await self.stats())["faults"]["hung_now"]) >= count

        await wait_for_condition(hung, timeout_s=timeout_s, what=f"{count} prompts hung")

    async def drop_websockets(self, mode: str = "abort") -> None:
        await self._post("/drop-websockets", {"mode": mode})

    async def restart(self) -> None:
        await self._post("/restart", {})

    async def go_down(self, seconds: float) -> None:
        await self._post("/down", {"seconds": seconds})

    async def set_speed(self, speed: float) -> None:
        """2.0 = twice as fast; steps already under way are paced at the new speed."""
        await self._post("/speed", {"speed": speed})

    async def stats(self) -> dict[str, Any]:
        response = await self._http.get("/stats")
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    async def executions(self, prompt_id: str) -> int:
        return int((await self.stats())["executions"].get(prompt_id, 0))

    async def _post(self, path: str, body: dict[str, Any]) -> None:
        response = await self._http.post(path, json=body)
        response.raise_for_status()
