import json
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from loguru import logger

from comfy_shared.logs import configure_logging
from comfy_testkit.line_listener import LineListener
from comfy_testkit.waiting import wait_for_condition_sync


def json_lines(err: str) -> list[dict[str, Any]]:
    """The records in captured stderr (other tests' background threads may add plain text)."""
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    logger.remove()
    logging.basicConfig(handlers=[], force=True)


def test_json_lines_carry_static_and_context_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(service="service", node="gpu-1", json_lines=True)

    with logger.contextualize(task_id="t-1", attempt=2):
        logger.info("task dispatched")

    [line] = json_lines(capsys.readouterr().err)
    assert line["service"] == "service"
    assert line["node"] == "gpu-1"
    assert line["task_id"] == "t-1"
    assert line["attempt"] == 2
    assert line["message"] == "task dispatched"
    assert line["level"] == "INFO"
    assert datetime.fromisoformat(line["time"]).utcoffset() is not None  # RFC 3339: has a zone


def test_stdlib_records_are_routed_into_loguru(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(service="balancer", node="b1", json_lines=True)

    logging.getLogger("uvicorn.error").warning("port %d busy", 8000)

    [line] = json_lines(capsys.readouterr().err)
    assert line["message"] == "port 8000 busy"
    assert line["logger_name"] == "uvicorn.error"
    assert line["service"] == "balancer"


def test_stdlib_records_below_the_level_are_never_made() -> None:
    configure_logging(service="service", node="n", level="INFO", json_lines=True)
    assert not logging.getLogger("httpcore.http11").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("websockets.client").isEnabledFor(logging.INFO)

    configure_logging(service="service", node="n", level="DEBUG", json_lines=True)
    assert logging.getLogger("httpcore.http11").isEnabledFor(logging.DEBUG)


def test_an_exception_is_one_record_with_its_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(service="service", node="n", json_lines=True)

    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("task failed")

    [record] = json_lines(capsys.readouterr().err)
    assert "ValueError: boom" in record["exception"]
    assert "Traceback" in record["exception"]


def test_text_mode_shows_task_context(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(service="service", node="gpu-1")

    with logger.contextualize(task_id="t-9"):
        logger.info("task {} queued", "x")

    err = capsys.readouterr().err
    assert "service/gpu-1" in err
    assert "task x queued" in err
    assert "task_id=t-9" in err


def test_logdy_address_adds_a_shipping_sink() -> None:
    with LineListener() as listener:
        shipper = configure_logging(
            service="balancer", node="b1", logdy=f"127.0.0.1:{listener.port}"
        )
        assert shipper is not None
        logger.info("hello logdy")
        wait_for_condition_sync(lambda: listener.lines, what="line shipped")
        shipper.close()
    assert json.loads(listener.lines[0])["service"] == "balancer"


@pytest.mark.parametrize("json_mode", [False, True], ids=["text", "json"])
def test_a_logged_traceback_shows_no_local_variables(
    capsys: pytest.CaptureFixture[str], json_mode: bool
) -> None:
    configure_logging(service="service", node="gpu-1", json_lines=json_mode)

    def submit(prompt: str) -> None:
        api_key = "sk-" + "do-not-log-me"  # noqa: F841 - a local a traceback must not show
        raise ValueError("the graph is broken")

    prompt = "".join(["a secret ", "prompt"])  # not in the source lines a traceback quotes
    try:
        submit(prompt)
    except ValueError:
        logger.exception("submit failed")

    err = capsys.readouterr().err
    assert "ValueError: the graph is broken" in err
    assert "in submit" in err  # the frames are there ...
    assert "sk-do-not-log-me" not in err  # ... their variables are not
    assert "a secret prompt" not in err
