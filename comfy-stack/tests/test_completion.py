"""Shell completion: the script ``comfy-stack completion bash`` prints, sourced in a real bash
and asked what completes, as bash asks when TAB is pressed."""

import shlex
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


def test_zsh_and_fish_scripts_cover_the_same_commands() -> None:
    zsh = _completion("zsh")
    fish = _completion("fish")

    assert zsh.startswith("#compdef comfy-stack\n")
    assert "bashcompinit" in zsh
    assert "complete -c comfy-stack -n '__comfy_stack_at \"\"' -a workflows" in fish
    assert (
        "complete -c comfy-stack -n '__comfy_stack_at \"keys create\"' -l scope -x "
        "-a 'submit read admin'"
    ) in fish
