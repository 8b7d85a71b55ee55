"""What a batch run tells: counts while it runs, and a summary at the end (text or JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


@dataclass
class Counts:
    """A run's files so far: ``total`` to do in this run (earlier runs' done files are not
    counted), ``running`` the ones in flight."""

    total: int = 0
    done: int = 0
    failed: int = 0
    running: int = 0
    elapsed_s: float = 0.0

    @property
    def finished(self) -> int:
        return self.done + self.failed

    def rate(self) -> float:
        """Files finished per second so far."""
        return self.finished / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def eta_s(self) -> float | None:
        rate = self.rate()
        return (self.total - self.finished) / rate if rate > 0 else None


class ProgressSink(Protocol):
    """Told of every change while a batch runs (``comfy_stack.batch.display`` draws it)."""

    def update(self, counts: Counts) -> None: ...


@dataclass(frozen=True)
class FileFailure:
    file: str
    error: dict[str, str]
    attempts: int
    final: bool
    """No retry would mend it (or every attempt is used)."""


@dataclass
class BatchSummary:
    found: int = 0
    """Images the scan kept."""
    done: int = 0
    """Finished in this run."""
    already_done: int = 0
    """Done by an earlier run, skipped."""
    failed: list[FileFailure] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    """Files with an image extension that were not sent, and why."""
    interrupted: int = 0
    """Not finished when the run was stopped: a rerun resumes them."""
    outputs: int = 0
    throttled: int = 0
    """Answers that asked to come back later (429, 503), each waited out."""
    elapsed_s: float = 0.0
    aborted: str | None = None
    """Why the run stopped early (the API refused the key, ...), if it did."""
    unreachable: bool = False
    """It stopped because the API no longer answered (a rerun resumes)."""
    manifest: str = ""

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted and self.aborted is None

    def files_per_s(self) -> float:
        return (self.done + len(self.failed)) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        rounded = {
            "elapsed_s": round(self.elapsed_s, 3),
            "files_per_s": round(self.files_per_s(), 3),
        }
        return asdict(self) | rounded | {"ok": self.ok}

    def text(self) -> str:
        lines = [
            f"{self.found} images: {self.done} done now, {self.already_done} done before, "
            f"{len(self.failed)} failed, {self.interrupted} interrupted, "
            f"{len(self.rejected)} not images",
            f"{self.outputs} outputs written in {self.elapsed_s:.1f} s "
            f"({self.files_per_s():.2f} files/s); manifest {self.manifest}",
        ]
        lines += [f"  not sent: {item['path']}: {item['reason']}" for item in self.rejected]
        lines += [_failure_line(failure) for failure in self.failed]
        if self.throttled:
            lines.append(f"  the API asked {self.throttled} time(s) to wait (429/503): waited")
        if self.interrupted:
            lines.append("  interrupted: run the same command again to resume")
        if self.aborted:
            lines.append(f"  stopped: {self.aborted}")
        return "\n".join(lines)


def _failure_line(failure: FileFailure) -> str:
    error = failure.error
    retry = "" if failure.final else " (a rerun retries it)"
    return (
        f"  failed: {failure.file}: ({error.get('type')}, {error.get('code')}) "
        f"{error.get('message')} after {failure.attempts} attempt(s){retry}"
    )
