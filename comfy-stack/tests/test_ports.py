"""Free ports come from below the ephemeral range, so no outgoing connection can take one."""

from __future__ import annotations

import random
import socket

import pytest

from comfy_stack import ports
from comfy_stack.ports import LISTENER_PORTS_START, free_port


def test_a_free_port_is_below_the_ephemeral_range_and_never_handed_out_twice() -> None:
    first_ephemeral = int(ports.EPHEMERAL_RANGE.read_text().split()[0])
    picked = [free_port() for _ in range(200)]
    assert all(LISTENER_PORTS_START <= port < first_ephemeral for port in picked)
    assert len(set(picked)) == len(picked)


def test_a_port_with_a_listener_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        taken = listener.getsockname()[1]
        # Pin the range to the taken port and its neighbour: the neighbour must be chosen.
        monkeypatch.setattr(ports, "_listener_range", lambda: (taken, taken + 1000))
        monkeypatch.setattr(random, "randrange", lambda span: 0)
        assert taken < free_port() < taken + 1000


def test_the_chosen_port_can_be_bound_by_a_server() -> None:
    port = free_port()
    with socket.create_server(("127.0.0.1", port)) as server:
        assert server.getsockname()[1] == port
