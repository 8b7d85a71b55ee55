"""Start the components under test by forking a process that has imported them already.

Almost all the CPU a process test spends goes into starting Python processes: a service or a
balancer imports for about 1.4 s of CPU before it serves, and the suite starts hundreds of
them. A fork server imports the components once (nothing else: no thread, no event loop, no
socket) and forks a child per start, which runs the component's ``__main__`` as
``python -m`` would, in its own session, with the environment, arguments and log file it
was given. A started child costs a fork instead of an interpreter and its imports.

The children are the fork server's, not the test's: it reaps them and reports each exit
status, which :class:`ForkedProcess` waits for, so a test drives one as it drives a
``subprocess.Popen``. The server dies with the test process (and its children with it);
``COMFY_TEST_FORKSERVER=0`` starts every component as a new interpreter instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import runpy
import selectors
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from comfy_shared.child_processes import die_with_parent_hook
from comfy_stack import processes
from comfy_stack.processes import ManagedProcess

PRELOADED = ("comfy_service.__main__", "comfy_balancer.__main__", "comfy_emulator.__main__")
"""What the server imports before it forks (``python -m`` runs a package's ``__main__``)."""
SWITCH = "COMFY_TEST_FORKSERVER"


def enabled() -> bool:
    return os.environ.get(SWITCH, "1") != "0"


class ForkedProcess:
    """A child of the fork server, driven like a ``subprocess.Popen``."""

    def __init__(self, server: ForkServer, pid: int) -> None:
        self._server = server
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._server.exit_code(self.pid, timeout_s=0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            code = self._server.exit_code(self.pid, timeout_s=timeout)
            if code is None:
                raise subprocess.TimeoutExpired(f"forked pid {self.pid}", timeout or 0)
            self.returncode = code
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """The test process's side: asks for forks, collects exit statuses."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "comfy_testkit.forkserver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            preexec_fn=die_with_parent_hook(),
        )
        self._lock = threading.Lock()
        self._started: queue.Queue[dict[str, Any]] = queue.Queue()
        self._exited: dict[int, int] = {}
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="forkserver", daemon=True)
        self._reader.start()

    def start(
        self, module: str, args: Sequence[str], *, env: Mapping[str, str], log_path: Path
    ) -> ForkedProcess:
        request = {"module": module, "args": list(args), "env": dict(env), "log": str(log_path)}
        with self._lock:
            assert self._process.stdin is not None
            self._process.stdin.write(json.dumps(request).encode() + b"\n")
            self._process.stdin.flush()
            answer = self._started.get(timeout=30)
        if "error" in answer:
            raise RuntimeError(f"the fork server could not start {module}: {answer['error']}")
        return ForkedProcess(self, int(answer["pid"]))

    def exit_code(self, pid: int, *, timeout_s: float | None) -> int | None:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._changed:
            while pid not in self._exited:
                left = None if deadline is None else deadline - time.monotonic()
                if (left is not None and left <= 0) or self._process.poll() is not None:
                    return self._exited.get(pid)
                self._changed.wait(left)
            return self._exited[pid]

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            message = json.loads(line)
            if "exited" in message:
                with self._changed:
                    self._exited[int(message["exited"])] = int(message["code"])
                    self._changed.notify_all()
            else:
                self._started.put(message)
        with self._changed:  # the server is gone: nobody waits for ever
            self._changed.notify_all()


_server: ForkServer | None = None
_server_lock = threading.Lock()


def server() -> ForkServer:
    """This test process's fork server, started on first use."""
    global _server
    with _server_lock:
        if _server is None or _server._process.poll() is not None:
            _server = ForkServer()
        return _server


def start_python_module(
    name: str,
    module: str,
    module_args: Sequence[str],
    *,
    log_dir: Path,
    env: Mapping[str, str | None] | None = None,
) -> ManagedProcess:
    """``comfy_stack.processes.start_python_module`` through the fork server (when enabled):
    the same environment (this process's, changed by ``env``), arguments and log file."""
    if not _forkable(module, env or {}):
        return processes.start_python_module(name, module, module_args, log_dir=log_dir, env=env)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    merged = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env = {key: value for key, value in merged.items() if value is not None}
    child = server().start(module, module_args, env=full_env, log_path=log_path)
    return ManagedProcess(name=name, args=[module, *module_args], log_path=log_path, process=child)


def _forkable(module: str, env: Mapping[str, str | None]) -> bool:
    """A preloaded component whose interpreter is set up as the server's: a ``PYTHONPATH``
    (say, a stand-in for a library) or any other ``PYTHON*`` setting of its own needs an
    interpreter of its own, since the server imported everything already."""
    preloaded = {name.removesuffix(".__main__") for name in PRELOADED}
    own_interpreter = any(name.startswith("PYTHON") for name in env)
    return enabled() and module in preloaded and not own_interpreter


# --- the server process --------------------------------------------------------------------


def _serve() -> None:
    for module in PRELOADED:
        __import__(module)
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    wakeup_read, wakeup_write = os.pipe()
    os.set_blocking(wakeup_write, False)
    signal.set_wakeup_fd(wakeup_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the loop through the pipe
    selector = selectors.DefaultSelector()
    selector.register(requests, selectors.EVENT_READ)
    selector.register(wakeup_read, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj == wakeup_read:
                os.read(wakeup_read, 4096)
                continue
            line = requests.readline()
            if not line:
                return  # the test process closed our stdin: it is gone
            closing = (wakeup_read, wakeup_write, selector.fileno())
            _reply(replies, _fork(json.loads(line), closing=closing))
        _report_exits(replies)


def _reply(replies: IO[bytes], message: dict[str, Any]) -> None:
    replies.write(json.dumps(message).encode() + b"\n")
    replies.flush()


def _report_exits(replies: IO[bytes]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _reply(replies, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def _fork(request: dict[str, Any], *, closing: tuple[int, ...]) -> dict[str, Any]:
    try:
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as exc:
        return {"error": str(exc)}
    hook = die_with_parent_hook()
    pid = os.fork()
    if pid:
        os.close(log)
        return {"pid": pid}
    code = 1
    try:
        _become_child(request, log, closing)
        if hook is not None:
            hook()
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _become_child(request: dict[str, Any], log: int, closing: tuple[int, ...]) -> None:
    """What ``subprocess.Popen`` and ``python -m`` would have set up."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in closing:
        os.close(fd)
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - fd 0 lives as long as the process
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [request["module"], *request["args"]]
    random.seed()  # each child its own sequence, as a new interpreter has


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    _serve()
