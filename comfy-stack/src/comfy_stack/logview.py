"""One readable view of several components' logs: follows their log files and prints each new
line with the component's name in front.

A progress bar that redraws itself with carriage returns (tqdm, as ComfyUI and the emulator
print them) is folded to its last state: one line per bar, not one per step. Once
:meth:`LogView.pin` gave it the stack's banner, the view prints it, prints it again on
:meth:`show_banner`, and on a terminal keeps a one-line footer of it under the logs, so the
addresses never scroll away.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from comfy_stack.processes import ManagedProcess

_POLL_S = 0.1


class LogView:
    def __init__(
        self,
        processes: Sequence[ManagedProcess],
        out: TextIO = sys.stdout,
        *,
        terminal: bool | None = None,
        width: int | None = None,
    ) -> None:
        """``terminal`` and ``width``: as ``out`` is (default: found out), for tests."""
        self._out = out
        self._console = Console(
            file=out, force_terminal=terminal, width=width, highlight=False, markup=False
        )
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._width = max((len(p.name) for p in processes), default=0)
        self._followed: list[tuple[str, Path, int]] = [(p.name, p.log_path, 0) for p in processes]
        self._thread = threading.Thread(target=self._run, name="log-view", daemon=True)
        self._banner: list[str] = []
        self._footer: Live | None = None

    def add(self, process: ManagedProcess) -> None:
        with self._lock:
            self._width = max(self._width, len(process.name))
            self._followed.append((process.name, process.log_path, 0))

    def start(self) -> None:
        self._thread.start()

    def pin(self, banner: list[str], footer: str) -> None:
        """Print ``banner`` now and on :meth:`show_banner`; on a terminal, keep ``footer``
        under the logs."""
        with self._lock:
            self._banner = banner
            self._write_lines(banner)
            if self._console.is_terminal:
                line = Text(footer, style="reverse", no_wrap=True, overflow="ellipsis")
                self._footer = Live(line, console=self._console, auto_refresh=False)
                self._footer.start(refresh=True)

    def show_banner(self) -> None:
        with self._lock:
            self._write_lines(self._banner)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self._print_new_lines()  # what was written while stopping
        with self._lock:
            if self._footer is not None:
                self._footer.stop()
                self._footer = None

    def _run(self) -> None:
        while not self._stop.wait(_POLL_S):
            self._print_new_lines()

    def _print_new_lines(self) -> None:
        with self._lock:
            for index, (name, path, offset) in enumerate(list(self._followed)):
                if not path.exists():
                    continue
                with path.open("rb") as log:
                    log.seek(offset)
                    chunk = log.read()
                complete = chunk[: chunk.rfind(b"\n") + 1]
                lines = fold_carriage_returns(complete.decode(errors="replace"))
                self._write_lines([f"{name:<{self._width}} | {line}" for line in lines])
                self._followed[index] = (name, path, offset + len(complete))

    def _write_lines(self, lines: list[str]) -> None:
        if not lines:
            return
        if self._footer is not None:  # printed above the footer, which stays last
            self._footer.console.print(Text("\n".join(lines)), soft_wrap=True)
            return
        self._out.write("".join(line + "\n" for line in lines))
        self._out.flush()


def fold_carriage_returns(text: str) -> list[str]:
    """The lines of ``text`` as a terminal would leave them: of a line redrawn with ``\\r``
    (a progress bar), only its last state."""
    lines = []
    for raw in text.removesuffix("\n").split("\n") if text else []:
        states = [state for state in raw.split("\r") if state]
        lines.append(states[-1] if states else "")
    return lines
