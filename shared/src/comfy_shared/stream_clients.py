"""How many clients a process streams events to now, by kind: ``comfy_stream_clients``.

A process counts its own (each balancer replica and each service exports its figure; sum
them in Prometheus). Kinds: ``sse`` (a task's Server-Sent Events) and ``ws`` (the ComfyUI
gateway's WebSocket, on the balancer). A client counts from the moment its response starts
until it ends, however it ends (done, client gone, cancelled).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Final, Literal

from prometheus_client.core import GaugeMetricFamily

StreamKind = Literal["sse", "ws"]
STREAM_KINDS: Final[tuple[StreamKind, ...]] = ("sse", "ws")


class StreamClients:
    def __init__(self) -> None:
        self._open: Counter[StreamKind] = Counter()

    @contextmanager
    def serving(self, kind: StreamKind) -> Iterator[None]:
        """Counts one client of ``kind`` while the block runs."""
        self._open[kind] += 1
        try:
            yield
        finally:
            self._open[kind] -= 1

    def open(self, kind: StreamKind) -> int:
        return self._open[kind]

    def family(self, kinds: Iterable[StreamKind] = STREAM_KINDS) -> GaugeMetricFamily:
        """The gauge, with every kind the process serves (0 included)."""
        family = GaugeMetricFamily(
            "comfy_stream_clients",
            "Clients this process streams events to now, by kind (sse, ws).",
            labels=["kind"],
        )
        for kind in kinds:
            family.add_metric([kind], self._open[kind])
        return family
