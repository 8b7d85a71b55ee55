"""API keys for tests against a real balancer: made through its admin API, each held by a
client that presents it."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

from comfy_testkit.cluster import Cluster


class KeyClient(httpx.AsyncClient):
    """A client that presents one API key; ``key`` is the key as its creation answered."""

    def __init__(self, key: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.key = key


class KeyClients:
    """``async with KeyClients(cluster) as keys: alice = await keys.make("alice")``; the
    clients are closed at the end."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._clients: list[KeyClient] = []

    async def make(self, name: str, **body: Any) -> KeyClient:
        created = await self._cluster.api.post("/api/v1/keys", json={"name": name, **body})
        assert created.status_code == 201, created.text
        client = KeyClient(
            created.json(),
            base_url=self._cluster.balancer.url,
            timeout=15,
            headers={"Authorization": f"Bearer {created.json()['key']}"},
        )
        self._clients.append(client)
        return client

    async def __aenter__(self) -> KeyClients:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for client in self._clients:
            await client.aclose()
