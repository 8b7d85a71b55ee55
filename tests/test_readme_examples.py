"""Every shell example of the docs runs, verbatim, against a real stack (docs that cannot rot).

The convention (README.md, "Development notes"):

- Fenced blocks marked ``sh``, ``bash`` or ``console`` are shell examples. All of them run, in
  the order of the document, in one folder and against one stack that ``comfy-stack up``
  started there (on free ports): a block may use what an earlier one made.
- A ``console`` block is a session: each line starting with ``$ `` is a command (a line
  ending with ``\\`` goes on to the next), the lines up to the next ``$ `` are what it
  prints. The commands run one after the other in one bash (an alias or a variable lasts
  until the block ends) and each must exit 0; where output is shown, the output must have
  its shape: as many lines; a JSON line the same keys and types of values (``null`` stands
  for any value; a list of another length for a list of items like its first); another line
  the same text once numbers are masked (``...`` stands for anything).
- An ``sh`` or ``bash`` block is a script: it runs whole, with ``set -eo pipefail``, and
  must exit 0.
- A block that cannot run here (it needs Docker, a GPU, a real ComfyUI, or runs for ever)
  has ``<!-- not run: REASON -->`` on the line before its fence; it is reported as skipped
  with that reason.

Each shell starts in the folder of the stack's data (``.comfy-stack/``, with ``examples/``
next to it), with the ``comfy-stack`` of this checkout on its PATH and the variables that
``eval "$(comfy-stack env)"`` sets (``COMFY_STACK_URL``, ``COMFY_STACK_API_KEY``), as a
reader's shell has them after "Set-up"; aliases expand, as in an interactive shell.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfy_stack.ports import free_port
from comfy_stack.processes import ManagedProcess, start_process
from comfy_stack.waiting import wait_for_condition_sync

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "README.md", ROOT / "examples" / "README.md")
SHELL_LANGUAGES = frozenset({"sh", "bash", "console"})
OPT_OUT = re.compile(r"^<!-- not run: (?P<reason>\S.*?) -->$")
FENCE = re.compile(r"^```(?P<language>\S*)\s*$")
COMMAND_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Example:
    doc: str
    line: int
    language: str
    text: str
    skip_reason: str | None

    @property
    def name(self) -> str:
        return f"{self.doc}:{self.line}"


@dataclass(frozen=True)
class Command:
    text: str
    expected: tuple[str, ...]


def shell_examples(doc: Path) -> list[Example]:
    """The fenced shell blocks of ``doc``, with the reason each opted out, if it did."""
    lines = doc.read_text().splitlines()
    found, index = [], 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        if fence["language"] in SHELL_LANGUAGES:
            marker = OPT_OUT.match(lines[index - 1]) if index > 0 else None
            found.append(
                Example(
                    doc=str(doc.relative_to(ROOT)),
                    line=index + 1,
                    language=fence["language"],
                    text="\n".join(lines[index + 1 : end]),
                    skip_reason=marker["reason"] if marker else None,
                )
            )
        index = end + 1
    return found


def session_commands(text: str) -> list[Command]:
    """The ``$ `` commands of a console block, each with the output lines shown after it."""
    commands: list[Command] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        if not lines[index].startswith("$ "):
            raise ValueError(f"console block line {lines[index]!r} is neither '$ ' nor output")
        command = [lines[index][2:]]
        while command[-1].endswith("\\"):
            index += 1
            command.append(lines[index])
        index += 1
        output_start = index
        while index < len(lines) and not lines[index].startswith("$ "):
            index += 1
        commands.append(Command("\n".join(command), tuple(lines[output_start:index])))
    return commands


def same_shape(expected: str, actual: str) -> bool:
    """Whether ``actual`` is a line like ``expected`` (see the module docstring)."""
    try:
        return _json_shape_matches(json.loads(expected), json.loads(actual))
    except ValueError:
        pass
    pattern = re.escape(_mask_numbers(expected)).replace(re.escape("..."), ".*")
    return re.fullmatch(pattern, _mask_numbers(actual)) is not None


def _mask_numbers(line: str) -> str:
    return " ".join(re.sub(r"\d+(\.\d+)?", "#", line).split())


def _json_shape_matches(expected: Any, actual: Any) -> bool:
    if expected is None or actual is None:
        return True
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and expected.keys() == actual.keys()
            and all(_json_shape_matches(expected[key], actual[key]) for key in expected)
        )
    if isinstance(expected, list):
        if not isinstance(actual, list) or bool(expected) != bool(actual):
            return False
        if len(expected) == len(actual):  # a record such as [id, state, count]
            return all(map(_json_shape_matches, expected, actual))
        return all(_json_shape_matches(expected[0], item) for item in actual)
    numbers = (int, float)
    if isinstance(expected, numbers) and not isinstance(expected, bool):
        return isinstance(actual, numbers) and not isinstance(actual, bool)
    return type(expected) is type(actual)


def all_examples() -> list[Example]:
    return [example for doc in DOCS for example in shell_examples(doc)]


@dataclass(frozen=True)
class Stack:
    folder: Path
    env: dict[str, str]
    launcher: ManagedProcess


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``comfy-stack up`` as ``./dev up`` runs it, in a folder of its own, on a free port."""
    folder = tmp_path_factory.mktemp("readme")
    (folder / "examples").symlink_to(ROOT / "examples")
    port = free_port()
    command = [
        sys.executable, "-m", "comfy_stack", "up", "--port", str(port),
        "--data-dir", str(folder / ".comfy-stack"), "--step-time", "0.01",
    ]  # fmt: skip
    launcher = start_process("launcher", command, log_dir=folder.parent / f"{folder.name}-logs",
                             cwd=folder)  # fmt: skip
    try:
        wait_for_condition_sync(
            lambda: _up(launcher), timeout_s=90, interval_s=0.1, what="the stack up"
        )
        env = _shell_env(folder)
        wait_for_condition_sync(lambda: _ready_nodes(env) == 2, timeout_s=30, what="2 nodes")
        yield Stack(folder, env, launcher)
    finally:
        launcher.send_signal(signal.SIGINT)
        try:
            launcher.process.wait(timeout=30)
        finally:
            launcher.kill()


def _up(launcher: ManagedProcess) -> bool:
    if not launcher.is_running():
        raise AssertionError(f"comfy-stack up exited:\n{launcher.output()}")
    return "comfy-stack is up" in launcher.output()


def _shell_env(folder: Path) -> dict[str, str]:
    """This checkout's programs first on the PATH, and what ``comfy-stack env`` prints."""
    base = {name: value for name, value in os.environ.items() if not name.startswith("COMFY_")}
    env = base | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    printed = subprocess.run(
        [sys.executable, "-m", "comfy_stack", "env", "--json"],
        cwd=folder, env=env, capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    variables: dict[str, str] = json.loads(printed)
    return env | variables


def _ready_nodes(env: dict[str, str]) -> int:
    headers = {"Authorization": f"Bearer {env['COMFY_STACK_API_KEY']}"}
    nodes = httpx.get(f"{env['COMFY_STACK_URL']}/api/v1/nodes", headers=headers).json()
    return sum(node["state"] == "ready" for node in nodes)


class Session:
    """One bash that runs a console block's commands one at a time, as a reader types them."""

    def __init__(self, stack: Stack, scratch: Path) -> None:
        self._scratch = scratch
        self._bash = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            cwd=stack.folder, env=stack.env, text=True, bufsize=1,
        )  # fmt: skip
        self._count = 0
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read_lines, daemon=True)
        self._reader.start()
        self._send("shopt -s expand_aliases\n")

    def run(self, command: str) -> tuple[int, str, str]:
        """Exit code, standard output and standard error of ``command``."""
        self._count += 1
        out, err = self._scratch / f"{self._count}.out", self._scratch / f"{self._count}.err"
        marker = f"__command_{self._count}_ended__"
        self._send(f"{{ {command}\n}} </dev/null >{out} 2>{err}; echo {marker} $?\n")
        said, ended = self._read_until(marker)
        return int(ended.split()[-1]), out.read_text(), said + err.read_text()

    def close(self) -> None:
        assert self._bash.stdin is not None
        assert self._bash.stdout is not None
        self._bash.stdin.close()
        try:
            self._bash.wait(timeout=10)
        finally:
            self._bash.kill()
            self._bash.wait()
            self._reader.join(timeout=10)
            self._bash.stdout.close()

    def _send(self, text: str) -> None:
        assert self._bash.stdin is not None
        self._bash.stdin.write(text)

    def _read_lines(self) -> None:
        assert self._bash.stdout is not None
        for line in self._bash.stdout:
            self._lines.put(line)
        self._lines.put("")  # bash exited

    def _read_until(self, marker: str) -> tuple[str, str]:
        """What bash itself said (a syntax error, say), and the marker's line."""
        said = ""
        while True:
            try:
                line = self._lines.get(timeout=COMMAND_TIMEOUT_S)
            except queue.Empty:
                raise AssertionError(f"no end within {COMMAND_TIMEOUT_S} s:\n{said}") from None
            if not line:
                raise AssertionError(f"bash exited:\n{said}")
            if line.startswith(marker):
                return said, line
            said += line


def run_session(stack: Stack, example: Example, scratch: Path) -> None:
    session = Session(stack, scratch)
    try:
        for command in session_commands(example.text):
            code, out, err = session.run(command.text)
            where = f"{example.name}: $ {command.text}"
            assert code == 0, f"{where}\nexited {code}\n{out}{err}"
            if command.expected:
                _assert_same_shape(where, command.expected, out.splitlines())
    finally:
        session.close()


def _assert_same_shape(where: str, expected: tuple[str, ...], actual: list[str]) -> None:
    shown = "\n".join(expected)
    printed = "\n".join(actual)
    assert len(actual) == len(expected), f"{where}\nshows:\n{shown}\nprinted:\n{printed}"
    for want, got in zip(expected, actual, strict=True):
        assert same_shape(want, got), f"{where}\nshows:   {want}\nprinted: {got}"


def run_script(stack: Stack, example: Example) -> None:
    script = f"set -eo pipefail\nshopt -s expand_aliases\n{example.text}\n"
    run = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", script], cwd=stack.folder, env=stack.env,
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
    )  # fmt: skip
    assert run.returncode == 0, f"{example.name}\n{example.text}\nexited {run.returncode}\n" + (
        run.stdout + run.stderr
    )


@pytest.mark.timeout(240)  # the stack starts once, then every example of the docs runs
@pytest.mark.parametrize("example", all_examples(), ids=lambda example: example.name)
def test_the_shell_example_runs_as_shown(stack: Stack, example: Example, tmp_path: Path) -> None:
    if example.skip_reason is not None:
        pytest.skip(example.skip_reason)
    if example.language == "console":
        run_session(stack, example, tmp_path)
    else:
        run_script(stack, example)


def test_the_convention_is_checked_as_documented() -> None:
    assert same_shape('{"id":"a","n":1,"l":[1],"x":null}', '{"id":"b","n":2.5,"l":[3,4],"x":{}}')
    assert not same_shape('{"id":"a"}', '{"id":"a","more":1}')
    assert not same_shape('{"l":[1]}', '{"l":[]}')
    assert not same_shape('{"n":1}', '{"n":"1"}')
    assert same_shape("     27 event: progress", "      5 event: progress")
    assert not same_shape("200 image/png", "404 application/json")
    assert same_shape("saved ... in 3 s", "saved out.png and out-1.png in 12 s")
    assert session_commands("$ a \\\n  b\nout 1\n$ c") == [
        Command("a \\\n  b", ("out 1",)),
        Command("c", ()),
    ]
    shells = all_examples()
    assert all(example.skip_reason is None or example.skip_reason.strip() for example in shells)
    assert any(example.language == "console" for example in shells)
