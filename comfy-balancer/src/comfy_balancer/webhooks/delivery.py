"""The delivery loop: every replica claims what is due in the outbox and sends it.

Each attempt checks the URL again (DNS may lead elsewhere than at submit), connects to the
address it checked (the name is not resolved a second time, which a rebinding DNS could
answer with an internal address) and follows no redirect. The body is the same on every
attempt: built from the ended record stored with the message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import httpx
from loguru import logger
from pydantic import BaseModel, Field

from comfy_balancer.webhooks.outbox import Claimed, Outbox, event_type
from comfy_balancer.webhooks.schedule import (
    Delivered,
    GiveUp,
    NextStep,
    Outcome,
    TryAgain,
    next_step,
)
from comfy_balancer.webhooks.signing import signed_headers
from comfy_shared.api.schemas import TaskView
from comfy_shared.clock import now_ms
from comfy_shared.loops import LoopHandle
from comfy_shared.models import TaskRecord
from comfy_shared.net_guard import (
    AllowList,
    UrlRefused,
    parse_target,
    request_at,
    resolve_target,
)

BATCH: Final = 16
"""Messages claimed and sent together by one replica."""
USER_AGENT: Final = "comfy-stack-webhooks/1"
_FIXED_HEADERS: Final = {"content-type": "application/json", "user-agent": USER_AGENT}

SecretOf = Callable[[TaskRecord], Awaitable[str | None]]
"""The signing secret of a task's webhooks (its API key's, or the deployment's), if any."""


@dataclass(frozen=True, slots=True)
class Attempted:
    task_id: str
    attempt: int
    outcome: Outcome
    step: NextStep


class WebhookEvent(BaseModel):
    """What a webhook request's body holds."""

    type: str = Field(description="task.succeeded, task.failed or task.cancelled.")
    timestamp: datetime = Field(description="When the task ended.")
    data: TaskView = Field(description="The task as GET /api/v1/tasks/{id} shows it.")


def webhook_body(record: TaskRecord) -> bytes:
    """The same bytes on every attempt: made from the ended record stored with the message."""
    event = WebhookEvent(
        type=event_type(record),
        timestamp=record.finished_at or record.updated_at,
        data=TaskView.from_record(record),
    )
    return event.model_dump_json().encode()


class WebhookDelivery:
    def __init__(
        self,
        *,
        outbox: Outbox,
        http: httpx.AsyncClient,
        secret_of: SecretOf,
        allow: AllowList,
        delays_s: Sequence[float],
        timeout_s: float,
    ) -> None:
        self._outbox = outbox
        self._http = http
        self._secret_of = secret_of
        self._allow = allow
        self._delays_s = delays_s
        self._timeout_s = timeout_s
        # The lease outlasts an attempt (its timeout, a slow DNS answer) by a wide margin.
        self._lease_ms = int((2 * timeout_s + 10) * 1000)

    async def run(self, handle: LoopHandle, poll_s: float) -> None:
        while True:
            try:
                attempted = await self.deliver_once()
            except Exception as exc:  # Redis away: the loop reports it and goes on
                handle.failing(exc)
                attempted = []
            else:
                handle.working()
            if len(attempted) < BATCH:
                await asyncio.sleep(poll_s)

    async def deliver_once(self) -> list[Attempted]:
        """Send every message that is due (up to ``BATCH``) and record each outcome."""
        claimed = await self._outbox.claim(now_ms(), self._lease_ms, BATCH)
        return list(await asyncio.gather(*(self._deliver(message) for message in claimed)))

    async def _deliver(self, claimed: Claimed) -> Attempted:
        record = claimed.record
        with logger.contextualize(task_id=record.id, attempt=claimed.attempt):
            secret = await self._secret_of(record)
            if secret is None or record.webhook_url is None:
                outcome = Outcome(error="no signing secret for this task's webhook any more")
                step: NextStep = GiveUp(outcome.describe())
            else:
                outcome = await self._send(claimed, record.webhook_url, secret)
                step = next_step(claimed.attempt, outcome, self._delays_s)
            await self._record(claimed, step)
        return Attempted(record.id, claimed.attempt, outcome, step)

    async def _send(self, claimed: Claimed, url: str, secret: str) -> Outcome:
        body = webhook_body(claimed.record)
        headers = signed_headers(secret, claimed.message_id, int(time.time()), body)
        try:
            # One deadline for the whole attempt: httpx's timeouts are per phase and per
            # read, so a receiver trickling its answer would otherwise outlast the lease.
            async with asyncio.timeout(self._timeout_s):
                return await self._post(url, headers, body)
        except UrlRefused as exc:
            return Outcome(error=f"refused: {exc}")
        except (TimeoutError, httpx.TimeoutException):
            return Outcome(error=f"no answer within {self._timeout_s:g}s")
        except httpx.HTTPError as exc:
            return Outcome(error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    async def _post(self, url: str, headers: dict[str, str], body: bytes) -> Outcome:
        target = parse_target(url, self._allow)
        address = await resolve_target(target, self._allow)
        request = request_at(
            self._http,
            "POST",
            target,
            address,
            headers=headers | {"content-type": "application/json", "user-agent": USER_AGENT},
            content=body,
            timeout=self._timeout_s,
        )
        # Streamed and closed unread: only the status counts, whatever the body's size.
        response = await self._http.send(request, stream=True, follow_redirects=False)
        await response.aclose()
        return Outcome(status=response.status_code)

    async def _record(self, claimed: Claimed, step: NextStep) -> None:
        now = now_ms()
        match step:
            case Delivered():
                written = await self._outbox.finish(claimed, "delivered", now_ms=now)
                logger.info("webhook delivered")
            case GiveUp(error):
                written = await self._outbox.finish(claimed, "dead", now_ms=now, error=error)
                logger.warning("webhook given up", error=error)
            case TryAgain():
                due = now + int(step.delay_s * 1000)
                written = await self._outbox.finish(
                    claimed, "again", now_ms=now, due_ms=due, error=step.error
                )
                logger.info("webhook attempt failed", error=step.error, retry_in_s=step.delay_s)
        if not written:
            logger.warning("webhook lease lost before its outcome was recorded")
