"""One call configures loguru for a process.

- Human-readable lines on stderr, or one JSON object per line (``json_lines=True``).
- stdlib logging (uvicorn, httpx, redis...) is routed into loguru, so there is one stream.
- ``service`` and ``node`` are bound to every record; request and task context
  (``task_id``, ``request_id``, ``attempt``) is added with ``logger.contextualize``.
"""

from __future__ import annotations

import atexit
import json
import logging
import sys
import traceback
from typing import TYPE_CHECKING, Any, Final

from loguru import logger

from comfy_shared.log_shipping import LogdyShipper, ShipperConfig

if TYPE_CHECKING:
    from loguru import Record

_STATIC_FIELDS: Final = ("service", "node")
_TEXT_CONTEXT: Final = (
    "task_id", "request_id", "attempt", "source", "to_node", "from_node", "node_id", "reason",
)  # fmt: skip


def configure_logging(
    *,
    service: str,
    node: str,
    level: str = "INFO",
    json_lines: bool = False,
    logdy: str | None = None,
    logdy_buffer_lines: int = 10_000,
) -> LogdyShipper | None:
    """Set up loguru for this process; with ``logdy`` (``HOST:PORT``) also ship JSON lines
    there. The shipper is closed (buffer flushed, at most 2 s) when the process exits."""
    logger.remove()
    # Every sink prints tracebacks as Python does (backtrace=False, diagnose=False): loguru's
    # default adds each frame's local variables, which puts prompts, keys and whole records
    # into the logs and makes one traceback hundreds of lines long.
    logger.configure(extra={"service": service, "node": node})
    if json_lines:
        logger.add(
            _write_json_line, level=level, format="{message}", backtrace=False, diagnose=False
        )
    else:
        logger.add(
            sys.stderr,
            level=level,
            format=_text_format,
            colorize=False,
            backtrace=False,
            diagnose=False,
        )
    _route_stdlib_logging(level)
    if logdy is None:
        return None
    shipper = LogdyShipper(
        ShipperConfig.parse(logdy, buffer_lines=logdy_buffer_lines), record_to_dict
    )
    logger.add(
        shipper.write, level=level, format="{message}", catch=True, backtrace=False, diagnose=False
    )
    atexit.register(shipper.close)
    return shipper


def record_to_dict(record: Record) -> dict[str, Any]:
    """The JSON shape of a record, shared by the stderr JSON mode and the log shipper."""
    extra = dict(record["extra"])
    data: dict[str, Any] = {
        "time": record["time"].isoformat(timespec="milliseconds"),
        "level": record["level"].name,
        "service": extra.pop("service", None),
        "node": extra.pop("node", None),
        "task_id": extra.pop("task_id", None),
        "logger": record["name"],
        "message": record["message"],
    }
    if record["exception"] is not None:
        exc_type, exc_value, exc_tb = record["exception"]
        data["exception"] = "".join(traceback.format_exception(exc_type, exc_value, exc_tb))
    data.update({key: _jsonable(value) for key, value in extra.items()})
    return data


def _write_json_line(message: Any) -> None:
    sys.stderr.write(json.dumps(record_to_dict(message.record), default=str) + "\n")


def _text_format(record: Record) -> str:
    context = " ".join(
        f"{key}={record['extra'][key]}" for key in _TEXT_CONTEXT if key in record["extra"]
    )
    suffix = f" [{context}]" if context else ""
    return (
        "{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <7} "
        "{extra[service]}/{extra[node]} {name}: {message}"
        + suffix.replace("{", "{{").replace("}", "}}")
        + "\n{exception}"
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


class _InterceptHandler(logging.Handler):
    """Hands stdlib records to loguru with the caller's frame, so names and lines stay right."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=_stdlib_depth(), exception=record.exc_info).bind(
            logger_name=record.name
        ).log(level, record.getMessage())


def _stdlib_depth() -> int:
    frame, depth = sys._getframe(2), 2
    while frame is not None and frame.f_code.co_filename == logging.__file__:
        frame = frame.f_back  # type: ignore[assignment]
        depth += 1
    return depth


def _route_stdlib_logging(level: str) -> None:
    # The root level filters before a record is even made: at level 0, httpcore and websockets
    # build a debug record for every request and frame, only for loguru to drop it.
    logging.basicConfig(handlers=[_InterceptHandler()], level=logger.level(level).no, force=True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "redis", "websockets"):
        stdlib_logger = logging.getLogger(name)
        stdlib_logger.handlers = []
        stdlib_logger.propagate = True
    # Per-request access lines and client chatter would drown the task lines at INFO.
    quiet_level = max(logging.WARNING, logger.level(level).no)
    logging.getLogger("httpx").setLevel(quiet_level)
    logging.getLogger("uvicorn.access").setLevel(quiet_level)
