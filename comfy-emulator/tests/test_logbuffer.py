"""The log ring buffer: capacity, tqdm-style carriage returns, joined form, listeners."""

from __future__ import annotations

import io

from comfy_emulator.logbuffer import LogBuffer, LogEntry


def test_keeps_the_newest_300_entries() -> None:
    logs = LogBuffer()
    for n in range(310):
        logs.log(f"line {n}")
    entries = logs.entries()
    assert len(entries) == 300
    assert entries[0]["m"] == "line 10\n"


def test_carriage_return_replaces_an_unfinished_line() -> None:
    logs = LogBuffer()
    logs.write("\r 10%|#")
    logs.write("\r 50%|#####")
    logs.write("\r100%|##########\n")
    logs.write("\rnext")  # the previous entry ended with a newline: kept
    assert [e["m"] for e in logs.entries()] == ["\r100%|##########\n", "\rnext"]


def test_joined_and_listeners_and_echo() -> None:
    echo = io.StringIO()
    logs = LogBuffer(echo=echo)
    seen: list[list[LogEntry]] = []
    logs.add_listener(seen.append)
    logs.log("got prompt")
    entry = logs.entries()[0]
    assert logs.joined() == f"{entry['t']} - got prompt\n"
    assert seen == [[entry]]
    assert echo.getvalue() == "got prompt\n"
    logs.remove_listener(seen.append)
    logs.log("more")
    assert len(seen) == 1
