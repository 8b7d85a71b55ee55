"""The preset logdy layout: the shape logdy's UI needs, and the columns the docs promise."""

import json
from pathlib import Path
from typing import Any

from loguru import logger

from comfy_shared.logs import record_to_dict

LAYOUT = Path(__file__).parents[1] / "logdy" / "logdy.config.json"


def test_layout_has_what_the_ui_needs_to_load_it() -> None:
    layout = json.loads(LAYOUT.read_text())
    assert isinstance(layout["columns"], list)
    assert isinstance(layout["settings"]["middlewares"], list)  # the UI crashes without it
    ids = [column["id"] for column in layout["columns"]]
    assert len(ids) == len(set(ids))
    for column in layout["columns"]:
        assert column["handlerTsCode"].startswith("(line: Message)")


def test_visible_columns_and_filters_are_the_documented_ones() -> None:
    columns = json.loads(LAYOUT.read_text())["columns"]
    visible = [c["name"] for c in columns if not c["hidden"]]
    faceted = {c["name"] for c in columns if c["faceted"]}
    assert visible == ["time", "level", "service", "node", "task_id", "source", "message"]
    assert {"level", "service", "node", "task_id"} <= faceted


def test_every_column_reads_a_field_our_records_have() -> None:
    records: list[dict[str, Any]] = []
    handler = logger.add(lambda message: records.append(record_to_dict(message.record)))
    try:
        raise ValueError("boom")
    except ValueError:
        logger.bind(service="service", node="n", source="comfyui", attempt=2).exception("x")
    logger.remove(handler)

    columns = json.loads(LAYOUT.read_text())["columns"]
    read = {c["handlerTsCode"].split(").")[1].split(" ")[0] for c in columns}
    assert read <= set(records[0])
