"""One timeline per task: every log record that carries a ``task_id`` (from the balancer, the
services and ComfyUI itself) is also kept in a capped Redis list under the task's key, with the
task's retention, so any process can serve ``GET /tasks/{id}/logs``.

Writing follows the log shipper's rule: the sink only appends to a bounded buffer; one thread
writes batches to Redis with a short timeout, so logging never waits on Redis.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, cast

import redis as redis_sync
from loguru import logger
from redis.asyncio import Redis

from comfy_shared.logs import record_to_dict
from comfy_shared.redis_client import RedisTarget, redis_sync_client
from comfy_shared.redis_keys import RedisKeys

if TYPE_CHECKING:
    from loguru import Message, Record

MAX_LINES_PER_TASK: Final = 2000
_BATCH: Final = 500


class TaskLogSink:
    """A loguru sink for records with a task id (see :func:`install_task_log_sink`)."""

    def __init__(
        self,
        target: RedisTarget | str,
        keys: RedisKeys,
        *,
        to_dict: Callable[[Record], dict[str, Any]],
        retention_s: int,
        buffer_lines: int = 10_000,
    ) -> None:
        self._redis = redis_sync_client(target, timeout_s=2)
        self._keys = keys
        self._to_dict = to_dict
        self._retention_s = retention_s
        self._buffer: deque[tuple[str, str]] = deque(maxlen=buffer_lines)
        self._ready = threading.Condition()
        self._closed = False
        self.handler_id: int | None = None
        self._thread = threading.Thread(target=self._run, name="task-logs", daemon=True)
        self._thread.start()

    @staticmethod
    def has_task(record: Record) -> bool:
        return bool(record["extra"].get("task_id"))

    def write(self, message: Message) -> None:
        try:
            data = self._to_dict(message.record)
            line = json.dumps(data, ensure_ascii=False, default=str)
        except Exception:
            return
        with self._ready:
            self._buffer.append((str(data["task_id"]), line))
            self._ready.notify()

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop taking records, write what is buffered (at most ``timeout_s``)."""
        if self.handler_id is not None:
            logger.remove(self.handler_id)
            self.handler_id = None
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join(timeout=timeout_s)
        self._redis.close()

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            # Redis down: the task's timeline misses these lines, logging itself goes on.
            with contextlib.suppress(redis_sync.RedisError):
                self._store(batch)

    def _next_batch(self) -> list[tuple[str, str]] | None:
        with self._ready:
            while not self._buffer and not self._closed:
                self._ready.wait()
            if not self._buffer:
                return None
            return [self._buffer.popleft() for _ in range(min(_BATCH, len(self._buffer)))]

    def _store(self, batch: list[tuple[str, str]]) -> None:
        with self._redis.pipeline(transaction=False) as pipe:
            for task_id in {task_id for task_id, _ in batch}:
                key = self._keys.task_logs(task_id)
                pipe.rpush(key, *(line for owner, line in batch if owner == task_id))
                pipe.ltrim(key, -MAX_LINES_PER_TASK, -1)
                pipe.expire(key, self._retention_s)
            pipe.execute()


async def read_task_log(redis: Redis, keys: RedisKeys, task_id: str) -> list[dict[str, Any]]:
    """The task's log records in time order (several processes append, so sort)."""
    lines = cast(list[str], await redis.lrange(keys.task_logs(task_id), 0, -1))
    records = [json.loads(line) for line in lines]
    return sorted(records, key=lambda record: str(record.get("time", "")))


def format_task_log(records: list[dict[str, Any]]) -> str:
    """Plain text: ``time level service/node [source] message``, one record a line."""
    lines = []
    for record in records:
        source = f" [{record['source']}]" if record.get("source") else ""
        where = f"{record.get('service')}/{record.get('node')}{source}"
        text = f"{record.get('time')} {record.get('level', ''):<7} {where} {record.get('message')}"
        if record.get("exception"):
            text += "\n" + str(record["exception"]).rstrip()
        lines.append(text)
    return "\n".join(lines) + ("\n" if lines else "")


def install_task_log_sink(
    target: RedisTarget | str, keys: RedisKeys, *, retention_s: int, level: str = "INFO"
) -> TaskLogSink:
    """Add the sink to loguru for this process; close it on shutdown."""
    sink = TaskLogSink(target, keys, to_dict=record_to_dict, retention_s=retention_s)
    sink.handler_id = logger.add(
        sink.write, level=level, format="{message}", filter=TaskLogSink.has_task
    )
    return sink
