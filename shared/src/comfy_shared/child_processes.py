"""What every process we start as a child needs, whoever starts it (the launcher, a service
supervising its ComfyUI)."""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to SIGTERM the child when its parent dies, even by
    SIGKILL: no orphans. None elsewhere (no such call).

    libc is looked up here, in the parent: between fork and exec only async-signal-safe work
    is safe, and loading a library in the child could wait forever on a lock another thread
    of the parent held at the fork."""
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl

    def die_with_parent() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return die_with_parent
