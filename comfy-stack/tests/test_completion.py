"""Shell completion: the script ``comfy-stack completion bash`` prints, sourced in a real bash
and asked what completes, as bash asks when TAB is pressed."""

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    script = tmp_path_factory.mktemp("completion") / "comfy-stack.bash"
    script.write_text(_completion("bash"))
    return script


def _completion(shell: str) -> str:
    command = [sys.executable, "-m", "comfy_stack", "completion", shell]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=30).stdout


def complete(script: Path, line: str) -> list[str]:
    """What bash offers for the last word of ``line`` (empty after a trailing space)."""
    words = line.split() + ([""] if line.endswith(" ") else [])
    program = f"""
        source {shlex.quote(str(script))}
        COMP_WORDS=({" ".join(shlex.quote(word) for word in words)})
        COMP_CWORD={len(words) - 1}
        COMP_LINE={shlex.quote(line)}
        COMP_POINT={len(line)}
        _comfy_stack
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """
    run = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return [word for word in run.stdout.splitlines() if word]


@pytest.mark.parametrize(
    ("line", "offered"),
    [
        ("comfy-stack ge", ["generate"]),
        ("comfy-stack wor", ["workflows"]),
        ("comfy-stack nodes dr", ["drain"]),
        ("comfy-stack keys create --sc", ["--scope"]),
        ("comfy-stack keys create --scope ", ["submit", "read", "admin"]),
        ("comfy-stack completion ", ["bash", "zsh", "fish", "-h", "--help"]),
        ("comfy-stack generate --band i", ["interactive"]),
        ("comfy-stack tasks --status f", ["failed"]),
        ("comfy-stack logs --j", ["--json"]),
        ("comfy-stack up --ho", ["--host"]),
    ],
)
def test_bash_completes_commands_actions_options_and_choices(
    bash_script: Path, line: str, offered: list[str]
) -> None:
    assert sorted(complete(bash_script, line)) == sorted(offered)


def test_bash_offers_every_command_first(bash_script: Path) -> None:
    commands = complete(bash_script, "comfy-stack ")

    for command in ("up", "generate", "status", "tasks", "logs", "events", "workflows", "keys"):
        assert command in commands


def test_a_value_that_is_no_choice_leaves_bash_to_complete_file_names(bash_script: Path) -> None:
    assert complete(bash_script, "comfy-stack generate --prompt-file ") == []
    registration = "complete -o default -o bashdefault -F _comfy_stack comfy-stack"
    assert registration in bash_script.read_text()


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
@pytest.mark.parametrize(
    ("line", "offered"),
    [
        ("comfy-stack ge", ["generate"]),
        ("comfy-stack keys create --scope ", ["admin", "read", "submit"]),
        ("comfy-stack tasks --st", ["--status"]),
        ("comfy-stack nodes ", ["drain", "undrain"]),
    ],
)
def test_fish_completes_the_same(tmp_path: Path, line: str, offered: list[str]) -> None:
    script = tmp_path / "comfy-stack.fish"
    script.write_text(_completion("fish"))
    program = f"source {shlex.quote(str(script))}; complete -C {shlex.quote(line)}"
    run = subprocess.run(["fish", "-c", program], capture_output=True, text=True, timeout=30)

    assert run.returncode == 0, run.stderr
    assert [row.split("\t")[0] for row in run.stdout.splitlines()] == offered


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_runs_the_bash_function_through_bashcompinit(tmp_path: Path) -> None:
    """As zsh's ``_bash_complete`` calls it: 0-based arrays (ksharrays); zsh itself then
    keeps the candidates that match the word."""
    script = tmp_path / "_comfy-stack"
    script.write_text(_completion("zsh"))
    assert script.read_text().startswith("#compdef comfy-stack\n")
    program = f"""
        autoload -U compinit && compinit -u
        source {shlex.quote(str(script))}
        setopt ksharrays
        COMP_WORDS=(comfy-stack keys create --scope ""); COMP_CWORD=4; _comfy_stack
        print -l -- "${{COMPREPLY[@]}}"
        print -- ---
        COMP_WORDS=(comfy-stack nodes ""); COMP_CWORD=2; _comfy_stack
        print -l -- "${{COMPREPLY[@]}}"
    """
    run = subprocess.run(["zsh", "-f", "-c", program], capture_output=True, text=True, timeout=30)

    assert run.returncode == 0, run.stderr
    scopes, actions = run.stdout.split("---\n")
    assert sorted(scopes.split()) == ["admin", "read", "submit"]
    assert {"drain", "undrain"} <= set(actions.split())
