"""The logdy sink against real TCP listeners on loopback."""

import json
import time
from collections.abc import Iterator

import pytest
from loguru import logger

from comfy_shared.log_shipping import MAX_LINE_BYTES, LogdyShipper, ShipperConfig, encode_line
from comfy_shared.logs import record_to_dict
from comfy_stack.ports import free_port
from comfy_testkit.line_listener import LineListener
from comfy_testkit.waiting import wait_for_condition_sync


@pytest.fixture(autouse=True)
def _only_our_sinks() -> Iterator[None]:
    logger.remove()
    yield
    logger.remove()


def ship_to(port: int, **options: object) -> LogdyShipper:
    config = ShipperConfig(host="127.0.0.1", port=port, min_backoff_s=0.05, **options)  # type: ignore[arg-type]
    shipper = LogdyShipper(config, record_to_dict)
    logger.add(shipper.write, format="{message}", level="DEBUG")
    return shipper


def parsed(listener: LineListener) -> list[dict[str, object]]:
    return [json.loads(line) for line in listener.lines]


def test_each_record_is_one_json_line_with_the_documented_fields() -> None:
    with LineListener() as listener:
        shipper = ship_to(listener.port)
        with logger.contextualize(task_id="t-1", request_id="r-9"):
            logger.bind(service="service", node="gpu-1").info("task dispatched")
        wait_for_condition_sync(lambda: listener.lines, what="a line received")
        shipper.close()

    [record] = parsed(listener)
    assert record["message"] == "task dispatched"
    assert record["level"] == "INFO"
    assert (record["service"], record["node"], record["task_id"]) == ("service", "gpu-1", "t-1")
    assert record["request_id"] == "r-9"
    assert record["logger"] == __name__
    assert "+00:00" in str(record["time"]) or str(record["time"]).endswith("Z")


def test_a_traceback_stays_inside_one_line() -> None:
    with LineListener() as listener:
        shipper = ship_to(listener.port)
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            logger.exception("task failed\nwith detail")
        wait_for_condition_sync(lambda: listener.lines, what="a line received")
        shipper.close()

    [record] = parsed(listener)
    assert "ValueError: boom" in str(record["exception"])
    assert record["message"] == "task failed\nwith detail"


def test_a_burst_with_nothing_listening_is_fast_and_bounded() -> None:
    shipper = ship_to(free_port(), buffer_lines=1000)

    started = time.perf_counter()
    for index in range(10_000):
        logger.info("burst {}", index)
    elapsed = time.perf_counter() - started

    assert elapsed < 5  # ~0.3 ms per record would already be 3 s: the sink does no I/O
    assert shipper.pending <= 1000
    shipper.close(timeout_s=1)


def test_lines_flow_once_logdy_appears_and_the_gap_is_reported() -> None:
    port = free_port()
    shipper = ship_to(port, buffer_lines=100)
    for index in range(250):
        logger.info("while away {}", index)

    with LineListener(port) as listener:
        wait_for_condition_sync(lambda: len(listener.lines) >= 101, what="buffer flushed")
        logger.info("after the return")
        wait_for_condition_sync(
            lambda: any(b"after the return" in line for line in listener.lines), what="live line"
        )
        shipper.close()

    records = parsed(listener)
    notice = records[0]
    assert notice["level"] == "WARNING"
    away = [
        int(str(r["message"]).split()[-1]) for r in records if "while away" in str(r["message"])
    ]
    # Every line is either delivered or counted as dropped; the newest 100 are always kept, and
    # a batch the sender already held when the buffer overflowed is delivered too, in order.
    assert len(away) + int(notice["dropped"]) == 250  # type: ignore[call-overload]
    assert away == sorted(away)
    assert set(range(150, 250)) <= set(away)


def test_a_viewer_that_never_reads_does_not_block_logging() -> None:
    with LineListener(read=False) as stalled:
        shipper = ship_to(stalled.port, buffer_lines=500)
        big = "x" * 4000
        started = time.perf_counter()
        for index in range(3000):  # ~12 MB: far more than the socket buffers hold
            logger.info("{} {}", index, big)
        elapsed = time.perf_counter() - started
        shipper.close(timeout_s=1)

    assert elapsed < 5
    assert shipper.pending <= 500


def test_long_messages_are_truncated_with_a_marker() -> None:
    line = encode_line({"message": "é" * 100_000, "exception": "y" * 100_000, "level": "INFO"})
    assert len(line) < MAX_LINE_BYTES
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert "[truncated]" in json.loads(line)["message"]
