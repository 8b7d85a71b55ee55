"""``Idempotency-Key``: the same key from the same tenant names one task for 24 hours.

A retried request with the key gets the task the first one created, never a second task; the
same key with a different request is the caller's mistake and is refused (422
``idempotency_key_reuse``) rather than answered with a task it did not ask for. Keys are per
tenant, so tenants cannot collide or probe each other's keys. Used by the balancer and by a
service called directly.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from comfy_shared.api.schemas import GenerateRequest
from comfy_shared.errors import ComfyStackError
from comfy_shared.models import TaskRecord
from comfy_shared.task_store import IdempotencyBinding, TaskStore

WAIT_FOR_FIRST_S: Final = 5.0
"""How long a retry waits for the first request with its key to finish creating the task."""


class IdempotencyKeyReused(ComfyStackError):
    def __init__(self, key: str) -> None:
        super().__init__(f"Idempotency-Key {key!r} was used for a different request")


class IdempotencyKeyBusy(ComfyStackError):
    retry_after_s = 1

    def __init__(self, key: str) -> None:
        super().__init__(f"a request with Idempotency-Key {key!r} is still being handled")


def fingerprint(request: GenerateRequest) -> str:
    """What makes two requests the same request (images included, as they were sent)."""
    return hashlib.sha256(request.model_dump_json().encode()).hexdigest()


class IdempotencyKeys:
    def __init__(self, store: TaskStore) -> None:
        self._store = store

    @asynccontextmanager
    async def first_use(
        self, tenant: str, key: str | None, task_id: str, request: GenerateRequest
    ) -> AsyncIterator[TaskRecord | None]:
        """Yields the task an earlier request with ``key`` created (the caller answers with it),
        or None when this request is the first: it then owns the key, which is given back if
        the request fails before its task exists."""
        if key is None:
            yield None
            return
        binding = IdempotencyBinding(task_id=task_id, fingerprint=fingerprint(request))
        earlier = await self._earlier_task(tenant, key, binding)
        if earlier is not None:
            yield earlier
            return
        try:
            yield None
        except BaseException:
            await self._store.unbind_idempotency_key(tenant, key)
            raise

    async def _earlier_task(
        self, tenant: str, key: str, binding: IdempotencyBinding
    ) -> TaskRecord | None:
        deadline = asyncio.get_running_loop().time() + WAIT_FOR_FIRST_S
        while (earlier := await self._store.bind_idempotency_key(tenant, key, binding)) is not None:
            if earlier.fingerprint != binding.fingerprint:
                raise IdempotencyKeyReused(key)
            if (known := await self._store.find(earlier.task_id)) is not None:
                return known
            if asyncio.get_running_loop().time() > deadline:
                raise IdempotencyKeyBusy(key)  # the first request is stuck
            await asyncio.sleep(0.01)
        return None
