"""Shared bits of the benchmarks: starting a local stack and summarising latencies."""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from comfy_stack.embedded_redis import start_redis_server
from comfy_testkit.stack import RunningComponent, start_emulator_process, start_service_process


@dataclass(frozen=True)
class Latencies:
    name: str
    samples_ms: list[float]
    wall_s: float

    @property
    def p50(self) -> float:
        return percentile(self.samples_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.samples_ms, 99)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples_ms)

    @property
    def throughput(self) -> float:
        return len(self.samples_ms) / self.wall_s


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def print_table(rows: list[Latencies], baseline: Latencies) -> None:
    columns = ("n", "req/s", "mean ms", "p50 ms", "p99 ms", "p50 x")
    header = f"{'target':<34} " + " ".join(f"{c:>8}" for c in columns)
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = row.p50 / baseline.p50 if baseline.p50 else float("nan")
        print(
            f"{row.name:<34} {len(row.samples_ms):>8} {row.throughput:>8.0f} {row.mean:>8.2f} "
            f"{row.p50:>8.2f} {row.p99:>8.2f} {ratio:>8.2f}"
        )


@dataclass
class LocalStack:
    redis_url: str
    emulator: RunningComponent
    service: RunningComponent


@contextmanager
def local_stack(step_time_s: float = 0.0) -> Iterator[LocalStack]:
    """Redis, one emulator and one service as separate processes (this process only drives)."""
    with tempfile.TemporaryDirectory(prefix="comfy-bench-") as tmp:
        root = Path(tmp)
        redis = start_redis_server(root)
        emulator = start_emulator_process(
            root / "logs", root / "emulator", step_time_s=step_time_s, extra_args=["--quiet"]
        )
        service = start_service_process(
            root / "logs",
            redis_url=redis.url,
            comfyui_url=emulator.url,
            extra_args=["--log-level", "WARNING"],
        )
        try:
            yield LocalStack(redis.url, emulator, service)
        finally:
            service.stop()
            emulator.stop()
            redis.stop()
