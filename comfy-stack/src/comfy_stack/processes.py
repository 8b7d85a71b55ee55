"""Run project components as real child processes, wait until they answer, stop them cleanly.

Output goes to a log file (not a pipe, which could fill up and block the child); a test that
fails can print it with :meth:`ManagedProcess.output`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from comfy_shared.child_processes import die_with_parent_hook
from comfy_stack.waiting import ConditionTimeout, wait_for_condition_sync


class ChildProcess(Protocol):
    """What we use of a ``subprocess.Popen`` (the test kit's fork server gives the same)."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | Any: ...
    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


@dataclass
class ManagedProcess:
    name: str
    args: list[str]
    log_path: Path
    process: ChildProcess = field(repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def is_running(self) -> bool:
        return self.process.poll() is None

    def send_signal(self, sig: signal.Signals) -> None:
        if self.is_running():
            self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (crash tests)."""
        if self.is_running():
            self.process.kill()
        self.process.wait(timeout=10)

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if still running after ``timeout_s``; returns the exit code."""
        if self.is_running():
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        return self.process.returncode


def start_process(
    name: str,
    args: Sequence[str],
    *,
    log_dir: Path,
    env: Mapping[str, str | None] | None = None,
    cwd: Path | None = None,
) -> ManagedProcess:
    """``env`` is added to this process's environment; a None value removes that variable."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    merged = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env = {key: value for key, value in merged.items() if value is not None}
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            list(args),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            # Own session: a Ctrl-C in the terminal reaches only the parent, which then stops
            # the children in order (services before the Redis they write to).
            start_new_session=True,
            preexec_fn=die_with_parent_hook(),
        )
    return ManagedProcess(name=name, args=list(args), log_path=log_path, process=process)


def start_python_module(
    name: str,
    module: str,
    module_args: Sequence[str],
    *,
    log_dir: Path,
    env: Mapping[str, str | None] | None = None,
) -> ManagedProcess:
    """Start ``python -m module`` with this interpreter, so it runs the installed workspace code."""
    return start_process(
        name, [sys.executable, "-m", module, *module_args], log_dir=log_dir, env=env
    )


def wait_until_http_ok(process: ManagedProcess, url: str, *, timeout_s: float = 20.0) -> None:
    """Wait until GET ``url`` answers 2xx; fail early, with the child's output, if it exits."""
    # One client for every poll: a new one each time builds an SSL context, about 25 ms of
    # CPU, which a busy machine pays dozens of times per process it starts.
    with httpx.Client(timeout=1.0) as http:

        def ready() -> bool:
            if not process.is_running():
                raise ConditionTimeout(
                    f"{process.name} exited with {process.process.returncode}:\n{process.output()}"
                )
            return _answers_ok(http, url)

        try:
            wait_for_condition_sync(
                ready, timeout_s=timeout_s, interval_s=0.05, what=f"{url} ready"
            )
        except ConditionTimeout as exc:
            raise ConditionTimeout(
                f"{exc}\n--- {process.name} output ---\n{process.output()}"
            ) from exc


def _answers_ok(http: httpx.Client, url: str) -> bool:
    try:
        return http.get(url).is_success
    except httpx.HTTPError:
        return False
