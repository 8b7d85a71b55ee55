"""What the outcome of a delivery attempt leads to: pure, tested as a table.

2xx: delivered. 410 Gone: the receiver asks to stop, so no more attempts (a dead letter, which
an operator may still retry). Anything else (another status, a timeout, a refused connection,
a URL the guard refuses now): again after the next wait of the schedule, with jitter so that
many messages failing together do not come back together; after the last attempt, a dead
letter.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

JITTER: Final = 0.1
"""Each wait is the scheduled one, +-10%."""


@dataclass(frozen=True, slots=True)
class Delivered:
    pass


@dataclass(frozen=True, slots=True)
class TryAgain:
    delay_s: float
    error: str


@dataclass(frozen=True, slots=True)
class GiveUp:
    error: str


NextStep = Delivered | TryAgain | GiveUp


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt got: a status code, or an error that prevented one."""

    status: int | None = None
    error: str | None = None

    def describe(self) -> str:
        return f"answered {self.status}" if self.status is not None else self.error or "failed"


def next_step(
    attempt: int,
    outcome: Outcome,
    delays_s: Sequence[float],
    jitter: Callable[[], float] = lambda: random.uniform(-JITTER, JITTER),
) -> NextStep:
    """After attempt number ``attempt`` (1 for the first): ``delays_s`` are the waits between
    attempts, so there are ``len(delays_s) + 1`` attempts in all."""
    if outcome.status is not None and 200 <= outcome.status < 300:
        return Delivered()
    if outcome.status == 410:
        return GiveUp("answered 410 Gone: the receiver asked for no more deliveries")
    if attempt > len(delays_s):
        return GiveUp(f"attempt {attempt} {outcome.describe()}; no attempt left")
    return TryAgain(delays_s[attempt - 1] * (1 + jitter()), outcome.describe())
