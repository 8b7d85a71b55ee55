"""The live view of a batch on stderr: a rich progress bar on a terminal (it fits the
terminal's width), a plain line every few seconds otherwise (a log, a CI job)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from comfy_stack.batch.report import Counts
from comfy_stack.progress import duration_text

PLAIN_EVERY_S = 2.0


def describe(counts: Counts) -> str:
    """``done, failed, running, rate, ETA`` in words."""
    eta_s = counts.eta_s()
    eta = "-" if eta_s is None else duration_text(eta_s)
    return (
        f"{counts.done} done, {counts.failed} failed, {counts.running} running, "
        f"{counts.rate():.1f} files/s, ETA {eta}"
    )


class BatchDisplay:
    def __init__(self, out: TextIO = sys.stderr) -> None:
        self._out = out
        self._bar: Progress | None = None
        self._task = None
        self._last_line_at = 0.0
        self._last_finished = -1
        self._last: Counts | None = None
        if out.isatty():
            self._bar = Progress(
                TextColumn("batch"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"), console=Console(file=out),
                transient=False,
            )  # fmt: skip
            self._task = self._bar.add_task("batch", total=None, detail="scanning")

    def __enter__(self) -> BatchDisplay:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self._last is not None and self._last.finished != self._last_finished:
            self._write(self._last)  # where it ended (interrupted, say)

    def update(self, counts: Counts) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(
                self._task, total=counts.total, completed=counts.finished, detail=describe(counts)
            )
            return
        self._last = counts
        ended = counts.finished == counts.total != self._last_finished
        if time.monotonic() - self._last_line_at >= PLAIN_EVERY_S or ended:
            self._write(counts)

    def _write(self, counts: Counts) -> None:
        self._last_line_at, self._last_finished = time.monotonic(), counts.finished
        self._out.write(f"batch: {counts.finished}/{counts.total}: {describe(counts)}\n")
        self._out.flush()
