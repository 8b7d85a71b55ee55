"""Free TCP ports on loopback, chosen where no outgoing connection can take them.

Asking the OS for port 0 hands out a port from the ephemeral range, the same range every
outgoing connection draws its local port from. Between picking such a port and the child
binding it (or between a component's stop and its restart on the same port), any client
connection on the machine may take it: a race that shows up as ``address already in use``
under a busy parallel test run. Ports below the ephemeral range are only ever taken by
listeners, so here a port is chosen there, checked by binding it, and never handed out
twice by one process.
"""

from __future__ import annotations

import contextlib
import random
import socket
from pathlib import Path

LISTENER_PORTS_START = 20000
"""Below this sit the ports people give their own services (8000, 8188, 9000, ...)."""
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")

_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now and that no outgoing connection will take."""
    first, end = _listener_range()
    span = end - first
    if span < 1000:  # an unusual kernel setting: let the OS choose
        return _os_chosen_port(host)
    start = random.randrange(span)  # spreads parallel processes over the range
    for step in range(span):
        port = first + (start + step) % span
        if port not in _handed_out and _bindable(host, port):
            _handed_out.add(port)
            return port
    return _os_chosen_port(host)


def _listener_range() -> tuple[int, int]:
    """``[LISTENER_PORTS_START, first ephemeral port)``."""
    ephemeral_start = 32768  # Linux's default
    with contextlib.suppress(OSError, ValueError, IndexError):
        ephemeral_start = int(EPHEMERAL_RANGE.read_text().split()[0])
    return LISTENER_PORTS_START, ephemeral_start


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bindable(host: str, port: int) -> bool:
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        # As every server here binds: a port whose old connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _os_chosen_port(host: str) -> int:
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
