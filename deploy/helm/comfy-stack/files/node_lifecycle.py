"""A node pod's start and stop on Kubernetes, through the balancer's drain API.

    node_lifecycle.py drain --deadline-s S         preStop of comfy-service
    node_lifecycle.py wait-drained --deadline-s S  preStop of ComfyUI
    node_lifecycle.py undrain --deadline-s S       init container of a new pod

``drain`` asks the balancer to drain this node (``POST /api/v1/nodes/{id}/drain``: it places
nothing more there, the running task finishes), waits until ``GET /api/v1/nodes`` lists the
node as ``drained`` (or ``dead``), then marks the pod drained (a file in a volume both
containers share) and returns: Kubernetes then stops the processes. ``wait-drained`` holds
ComfyUI until that mark exists, since Kubernetes stops every container of the pod at once and
ComfyUI runs the task the drain waits for. ``undrain`` puts the node id back in rotation when
a new pod starts under it (a StatefulSet reuses the name its predecessor drained).

Each gives up at its deadline and returns 0 all the same: a stop must never hang past the
pod's grace period, and a task cut off anyway is placed again by the balancer (lease expiry).
Settings come from the environment: NODE_LIFECYCLE_NODE_ID, NODE_LIFECYCLE_BALANCER_URL,
NODE_LIFECYCLE_ADMIN_KEY_FILE (the balancer's admin key; absent: no authentication) and
NODE_LIFECYCLE_STATE_DIR (default /run/comfy-node). Standard library only: it runs in both
images.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

POLL_S = 2.0
REQUEST_TIMEOUT_S = 10.0
GONE_STATES = {"drained", "dead"}
"""States in which a node runs nothing any more."""


class Balancer:
    """The few balancer routes the hooks use, with the admin key when there is one."""

    def __init__(self, url: str, admin_key: str | None) -> None:
        self._url = url.rstrip("/")
        self._admin_key = admin_key

    def call(self, method: str, path: str) -> Any:
        """The JSON answer; None for 404. Raises OSError (URLError) for anything else."""
        request = urllib.request.Request(self._url + path, method=method)
        if self._admin_key:
            request.add_header("Authorization", f"Bearer {self._admin_key}")
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def node_state(self, node_id: str) -> str | None:
        """The node's state as ``GET /api/v1/nodes`` lists it; None if it is not listed."""
        nodes = self.call("GET", "/api/v1/nodes") or []
        return next((n["state"] for n in nodes if n["node_id"] == node_id), None)


def log(message: str) -> None:
    print(f"node-lifecycle: {message}", flush=True)


def until(deadline: float, attempt: Callable[[], bool], what: str) -> bool:
    """Calls ``attempt`` every POLL_S until it returns True or the deadline passes; errors
    (balancer restarting, network) count as "not yet"."""
    last_error = ""
    while True:
        try:
            if attempt():
                return True
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if str(exc) != last_error:
                log(f"{what}: {exc} (trying again)")
                last_error = str(exc)
        if time.monotonic() + POLL_S > deadline:
            log(f"{what}: gave up at the deadline")
            return False
        time.sleep(POLL_S)


def drain(balancer: Balancer, node_id: str, state_dir: Path, deadline: float) -> None:
    try:
        drained = until(deadline, lambda: _drain_asked(balancer, node_id), "drain") and until(
            deadline, lambda: _drain_over(balancer, node_id), "wait for drained"
        )
        log(f"node {node_id} {'drained' if drained else 'not drained in time'}")
    finally:
        # Always: ComfyUI's hook waits for this mark.
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / "drained").touch()


def _drain_asked(balancer: Balancer, node_id: str) -> bool:
    if balancer.call("POST", f"/api/v1/nodes/{node_id}/drain") is None:
        log(f"node {node_id} never published its health: nothing to drain")
    return True


def _drain_over(balancer: Balancer, node_id: str) -> bool:
    state = balancer.node_state(node_id)
    return state is None or state in GONE_STATES


def undrain(balancer: Balancer, node_id: str, deadline: float) -> None:
    def attempt() -> bool:
        answer = balancer.call("POST", f"/api/v1/nodes/{node_id}/undrain")
        log(f"node {node_id} {'undrained' if answer is not None else 'is new: nothing to undrain'}")
        return True

    until(deadline, attempt, "undrain")


def wait_drained(state_dir: Path, deadline: float) -> None:
    if until(deadline, (state_dir / "drained").exists, "wait for the service's drain"):
        log("the service's drain is over")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["drain", "wait-drained", "undrain"])
    parser.add_argument("--deadline-s", type=float, required=True, help="give up after this")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.deadline_s
    state_dir = Path(os.environ.get("NODE_LIFECYCLE_STATE_DIR", "/run/comfy-node"))
    if args.action == "wait-drained":
        wait_drained(state_dir, deadline)
        return 0
    key_file = Path(os.environ.get("NODE_LIFECYCLE_ADMIN_KEY_FILE", "/nonexistent"))
    admin_key = key_file.read_text().strip() if key_file.is_file() else None
    balancer = Balancer(os.environ["NODE_LIFECYCLE_BALANCER_URL"], admin_key)
    node_id = os.environ["NODE_LIFECYCLE_NODE_ID"]
    if args.action == "drain":
        drain(balancer, node_id, state_dir, deadline)
    else:
        undrain(balancer, node_id, deadline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
