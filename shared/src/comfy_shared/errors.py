"""Domain exceptions shared by every comfy-stack process. They carry no HTTP knowledge;
each app maps them to status codes in one table.

    ComfyStackError
    ├── SettingsError          invalid configuration, names the variable
    ├── TaskNotFound           no task with that id (or it expired)
    ├── TaskAlreadyExists      a create with an id that is taken
    ├── InvalidTransition      the state machine forbids the change (e.g. cancel a finished task)
    ├── ConcurrentUpdate       optimistic update lost the race too many times
    └── TooManyStreams         the process serves its maximum of event streams already

The ComfyUI client has its own tree under ``comfy_shared.comfyui.errors``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from comfy_shared.task_state import TaskStatus


class ComfyStackError(Exception):
    """Base of every domain error."""


class SettingsError(ComfyStackError):
    """Settings could not be loaded; the message names each offending variable."""


class TaskNotFound(ComfyStackError):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id!r} not found")
        self.task_id = task_id


class TaskAlreadyExists(ComfyStackError):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id!r} already exists")
        self.task_id = task_id


class InvalidTransition(ComfyStackError):
    def __init__(self, task_id: str, current: TaskStatus, target: TaskStatus) -> None:
        super().__init__(f"task {task_id!r} is {current.value}; it cannot become {target.value}")
        self.task_id = task_id
        self.current = current
        self.target = target


class ConcurrentUpdate(ComfyStackError):
    def __init__(self, task_id: str, attempts: int) -> None:
        super().__init__(f"task {task_id!r} changed under us {attempts} times in a row")
        self.task_id = task_id


class TooManyStreams(ComfyStackError):
    def __init__(self, limit: int, retry_after_s: int) -> None:
        super().__init__(f"this server serves its maximum of {limit} event streams; retry later")
        self.retry_after_s = retry_after_s
