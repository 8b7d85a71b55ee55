"""A child started with the hook dies with its parent, even when the parent is SIGKILLed."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

from comfy_stack.waiting import wait_for_condition_sync

PARENT = """
import subprocess, sys
from comfy_shared.child_processes import die_with_parent_hook
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                         preexec_fn=die_with_parent_hook())
print(child.pid, flush=True)
child.wait()
"""


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_the_child_dies_when_its_parent_is_killed() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        child = psutil.Process(int(parent.stdout.readline()))
        assert child.is_running()
        parent.kill()

    def gone() -> bool:
        return not child.is_running() or child.status() == psutil.STATUS_ZOMBIE

    wait_for_condition_sync(gone, timeout_s=10, what="child gone")
