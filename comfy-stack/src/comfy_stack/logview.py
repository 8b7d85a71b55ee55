"""One readable view of several components' logs: follows their log files and prints each new
line with the component's name in front."""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from comfy_stack.processes import ManagedProcess

_POLL_S = 0.1


class LogView:
    def __init__(self, processes: Sequence[ManagedProcess], out: TextIO = sys.stdout) -> None:
        self._out = out
        self._stop = threading.Event()
        self._width = max((len(p.name) for p in processes), default=0)
        self._followed: list[tuple[str, Path, int]] = [(p.name, p.log_path, 0) for p in processes]
        self._thread = threading.Thread(target=self._run, name="log-view", daemon=True)

    def add(self, process: ManagedProcess) -> None:
        self._width = max(self._width, len(process.name))
        self._followed.append((process.name, process.log_path, 0))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self._print_new_lines()  # what was written while stopping

    def _run(self) -> None:
        while not self._stop.wait(_POLL_S):
            self._print_new_lines()

    def _print_new_lines(self) -> None:
        for index, (name, path, offset) in enumerate(list(self._followed)):
            if not path.exists():
                continue
            with path.open("rb") as log:
                log.seek(offset)
                chunk = log.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]
            for line in complete.decode(errors="replace").splitlines():
                self._out.write(f"{name:<{self._width}} | {line}\n")
            self._out.flush()
            self._followed[index] = (name, path, offset + len(complete))
