"""Time helpers: every timestamp the project stores is timezone-aware UTC."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch, the unit ComfyUI and our Redis scores use."""
    return time.time_ns() // 1_000_000
