"""Prometheus metrics of task outcomes, counted once per task (README "Metrics").

A task ends in exactly one :meth:`TaskStore.apply` that wins its write (a lost race reads
the record again and is refused once it is terminal), so the process that made the
transition counts it: the service for tasks that ran, the balancer for tasks cancelled or
failed before a node took them. Prometheus' sum over all targets is then exact.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram

from comfy_shared.lifecycle import RetryReason
from comfy_shared.models import TaskRecord

RAW_GRAPH = "graph"
"""The ``workflow`` label of a task sent as a graph rather than a template."""
SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
"""From an instant image on a warm node to a long video."""


def workflow_label(workflow: str | None) -> str:
    return workflow or RAW_GRAPH


def failure_reason(record: TaskRecord) -> str:
    """The ``reason`` of a finished task: a failed one's error type (``validation``,
    ``comfyui``, ``service``: a closed enum), else empty (Prometheus reads an empty label as
    absent)."""
    return record.error.type.value if record.error is not None else ""


class TaskOutcomes:
    """``comfy_tasks_finished_total``, ``comfy_task_retries_total`` and the wait, run and
    end-to-end histograms."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.finished = Counter(
            "comfy_tasks_finished",
            "Tasks this process moved to a terminal status; a failed one by its error type.",
            ["tenant", "workflow", "status", "reason"],
            registry=registry,
        )
        self.retries = Counter(
            "comfy_task_retries",
            "Tasks this process sent back to the queue for another attempt, by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in RetryReason:
            self.retries.labels(reason.value)
        self.queue_wait = Histogram(
            "comfy_task_queue_wait_seconds",
            "From a finished task's creation to its first placement on a node.",
            ["workflow", "priority"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.run = Histogram(
            "comfy_task_run_seconds",
            "From the start in ComfyUI of a finished task's last attempt to its end.",
            ["workflow", "node"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.e2e = Histogram(
            "comfy_task_e2e_seconds",
            "From a finished task's creation to its end.",
            ["workflow"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )

    def observe_retry(self, reason: RetryReason) -> None:
        """Count a task sent back for another attempt (TaskStore's ``on_retry``)."""
        self.retries.labels(reason.value).inc()

    def observe_end(self, record: TaskRecord) -> None:
        """Count ``record``, which just became terminal (TaskStore's ``on_end``)."""
        workflow = workflow_label(record.workflow)
        status = record.status.value
        self.finished.labels(record.tenant, workflow, status, failure_reason(record)).inc()
        end = record.finished_at
        if end is None:
            return
        self.e2e.labels(workflow).observe(_seconds(record.created_at, end))
        if not record.attempt_log:
            return  # never placed: it waited, but has no wait to a placement
        placed = record.attempt_log[0].dispatched_at
        wait_s = _seconds(record.created_at, placed)
        self.queue_wait.labels(workflow, record.band.value).observe(wait_s)
        last = record.attempt_log[-1]  # the run that ended it (earlier ones were retried)
        if last.started_at is not None:
            self.run.labels(workflow, last.node_id).observe(_seconds(last.started_at, end))


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())
