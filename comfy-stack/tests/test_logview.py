"""The launcher's log view: a real child process writes its log, the view prints it."""

import io
import re
from pathlib import Path

from comfy_stack.logview import LogView, fold_carriage_returns
from comfy_stack.processes import start_process
from comfy_stack.waiting import wait_for_condition_sync

# What tqdm writes for a 3-step bar (ComfyUI's KSampler, the emulator), then a plain line.
TQDM = (
    "  0%|          | 0/3 [00:00<?, ?it/s]\r 33%|###3      | 1/3\r 67%|######6   | 2/3"
    "\r100%|##########| 3/3 [00:00<00:00, 20.00it/s]\r100%|##########| 3/3 [00:00<00:00]\n"
    "Prompt executed in 0.16 seconds\n"
)


def test_a_progress_bar_is_folded_to_its_last_state() -> None:
    assert fold_carriage_returns(TQDM) == [
        "100%|##########| 3/3 [00:00<00:00]",
        "Prompt executed in 0.16 seconds",
    ]
    assert fold_carriage_returns("") == []
    assert fold_carriage_returns("a\n\nb\n") == ["a", "", "b"]


def test_the_view_prints_each_line_once_labelled_with_bars_folded(tmp_path: Path) -> None:
    out = io.StringIO()
    view = LogView([], out=out)
    view.start()
    emulator = start_process("comfyui-1", ["printf", TQDM.replace("%", "%%")], log_dir=tmp_path)
    view.add(emulator)
    try:
        wait_for_condition_sync(lambda: "Prompt executed" in out.getvalue(), what="lines shown")
    finally:
        view.stop()
        emulator.stop()

    assert out.getvalue().splitlines() == [
        "comfyui-1 | 100%|##########| 3/3 [00:00<00:00]",
        "comfyui-1 | Prompt executed in 0.16 seconds",
    ]


def test_the_banner_is_printed_again_on_request(tmp_path: Path) -> None:
    out = io.StringIO()
    view = LogView([], out=out)
    view.pin(["comfy-stack is up", "  api  http://127.0.0.1:8000"], "footer")
    view.show_banner()
    view.stop()

    assert out.getvalue().count("  api  http://127.0.0.1:8000\n") == 2
    assert "footer" not in out.getvalue()  # not a terminal: no footer to redraw


def test_on_a_terminal_the_footer_stays_under_the_logs(tmp_path: Path) -> None:
    screen = io.StringIO()
    view = LogView([], out=screen, terminal=True, width=60)
    view.start()
    view.pin(["comfy-stack is up"], "comfy-stack up: http://127.0.0.1:8000  " + "x" * 80)
    node = start_process("node-1", ["printf", "task dispatched\\ntask ended\\n"], log_dir=tmp_path)
    view.add(node)
    try:
        wait_for_condition_sync(lambda: "task ended" in screen.getvalue(), what="lines shown")
    finally:
        view.stop()
        node.stop()

    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    lines = [line for line in re.split(r"[\r\n]", drawn) if line.strip()]
    assert max(len(line) for line in lines) <= 60
    assert lines[-1].startswith("comfy-stack up: http://127.0.0.1:8000")  # last: the footer
    assert lines[-1].endswith("…")
    assert "node-1 | task ended" in lines
    assert lines.index("node-1 | task ended") > lines.index("comfy-stack is up")
