"""Pure model helpers: queue ordering, output flattening, object_info combos."""

from __future__ import annotations

from typing import Any

import pytest

from comfy_shared.comfyui import (
    HistoryEntry,
    NodeInfo,
    OutputFile,
    OutputText,
    QueueItem,
    QueueState,
    Unknown,
    combo_options,
    model_files,
    output_files,
)
from comfy_testkit.captures import load_capture


def _item(number: float, prompt_id: str) -> list[Any]:
    return [number, prompt_id, {}, {"client_id": "c"}, ["9"]]


def test_pending_is_sorted_into_run_order() -> None:
    # The heap order observed on a real server, from the protocol notes.
    raw = {
        "queue_running": [],
        "queue_pending": [
            _item(-18, "q-front"),
            _item(2.5, "q-num"),
            _item(17, "q-2"),
            _item(16, "q-1"),
            _item(15, "q-0"),
        ],
    }

    queue = QueueState.model_validate(raw)

    assert [i.prompt_id for i in queue.pending] == ["q-front", "q-num", "q-0", "q-1", "q-2"]
    assert queue.position("q-front") == 0
    assert queue.position("q-2") == 4


def test_equal_numbers_are_ordered_by_prompt_id() -> None:
    raw = {"queue_running": [], "queue_pending": [_item(3, "b"), _item(3, "a")]}

    assert [i.prompt_id for i in QueueState.model_validate(raw).pending] == ["a", "b"]


def test_queue_item_from_list_keeps_types_and_extra_elements_are_ignored() -> None:
    item = QueueItem.model_validate([*_item(2.5, "p"), {"hidden": 1}])

    assert item.number == 2.5
    assert item.client_id == "c"
    assert item.create_time_ms is None


def test_output_files_of_every_kind() -> None:
    outputs: dict[str, Any] = {
        "9": {
            "images": [
                {"filename": "a.png", "subfolder": "s", "type": "output"},
                {"filename": "b.png", "subfolder": "s", "type": "output"},
            ],
            "animated": [False],
        },
        "10": {
            "gifs": [
                {"filename": "v.mp4", "subfolder": "", "type": "output", "format": "video/h264-mp4"}
            ]
        },
        "11": {"audio": [{"filename": "a.flac", "subfolder": "audio", "type": "temp"}]},
        "12": {"text": ["hello"], "video": {"filename": "one.webm", "subfolder": None}},
        "13": {},
        "14": {"images": [{"filename": "clip.webp", "type": "output"}], "animated": [True]},
    }

    assert output_files(outputs) == [
        OutputFile(node_id="9", kind="images", filename="a.png", subfolder="s"),
        OutputFile(node_id="9", kind="images", filename="b.png", subfolder="s"),
        OutputFile(node_id="10", kind="gifs", filename="v.mp4"),
        OutputFile(node_id="11", kind="audio", filename="a.flac", subfolder="audio", type="temp"),
        OutputFile(node_id="12", kind="video", filename="one.webm"),
        OutputFile(node_id="14", kind="images", filename="clip.webp", animated=True),
    ]


def test_output_entries_are_files_and_texts_in_the_order_comfyui_reported_them() -> None:
    outputs: dict[str, Any] = {
        "5": {"text": ["first", "second"]},  # PreviewAny; ShowText-like nodes send several
        "3": {"images": [{"filename": "a.png", "type": "output"}], "animated": [False]},
        "7": {"text": "bare", "string": ["not a text key"]},  # a bare string counts too
        "8": {"text": [{"filename": "notes.txt", "type": "output"}, 42, None, "after"]},
    }

    entries = HistoryEntry.model_validate({"prompt": _item(1, "p"), "outputs": outputs}).entries()

    assert entries == [
        OutputText(node_id="5", position=0, text="first"),
        OutputText(node_id="5", position=1, text="second"),
        OutputFile(node_id="3", kind="images", filename="a.png"),
        OutputText(node_id="7", position=0, text="bare"),
        OutputFile(node_id="8", kind="text", filename="notes.txt"),
        OutputText(node_id="8", position=3, text="after"),
    ]
    assert output_files(outputs) == [e for e in entries if isinstance(e, OutputFile)]


def test_history_entry_keeps_every_ui_key_and_tolerates_missing_status() -> None:
    raw = {
        "prompt": _item(1, "p"),
        "outputs": {"5": {"images": [], "custom_key": {"x": 1}}},
        "meta": {},
        "added_by_a_future_version": True,
    }

    entry = HistoryEntry.model_validate(raw)

    assert entry.outputs["5"]["custom_key"] == {"x": 1}
    assert entry.status is None
    assert not entry.succeeded


# --- object_info -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "options"),
    [
        ([["a.safetensors", "b.safetensors"]], ["a.safetensors", "b.safetensors"]),
        ([["x"], {"default": "x"}], ["x"]),
        (["COMBO", {"multiselect": False, "options": ["red", "green"]}], ["red", "green"]),
        (["INT", {"default": 1}], None),
        (["IMAGE"], None),
        (["COMBO", {}], None),
        ("PROMPT", None),
        ([], None),
        (None, None),
    ],
)
def test_combo_options(spec: Any, options: list[str] | None) -> None:
    assert combo_options(spec) == options


def test_combo_options_from_a_real_validation_error() -> None:
    # A real input_config of the V3 form, as echoed by a 400 from /prompt.
    body = load_capture("19-post-prompt-400-bad-combo")["response"]["body"]
    spec = body["node_errors"]["2"]["errors"][0]["extra_info"]["input_config"]

    assert combo_options(spec) == ["red", "green", "blue", "alpha"]


def test_model_files_v1_and_v3_loaders() -> None:
    catalogue = {
        "CheckpointLoaderSimple": NodeInfo(
            name="CheckpointLoaderSimple",
            input={"required": {"ckpt_name": [["sd15.safetensors", "sdxl.safetensors"]]}},
        ),
        "LoraLoader": NodeInfo(
            name="LoraLoader",
            input={
                "required": {
                    "model": ["MODEL"],
                    "lora_name": ["COMBO", {"options": ["style.safetensors"]}],
                    "strength_model": ["FLOAT", {"default": 1.0}],
                }
            },
        ),
        "DualCLIPLoader": NodeInfo(
            name="DualCLIPLoader",
            input={
                "required": {
                    "clip_name1": [["t5.safetensors"]],
                    "clip_name2": [["clip_l.safetensors"]],
                    "type": [["flux", "sdxl"]],
                }
            },
        ),
        "VAELoader": NodeInfo(name="VAELoader", input={"optional": {"vae_name": [[]]}}),
        "KSampler": NodeInfo(
            name="KSampler",
            input={"required": {"sampler_name": [["euler"]], "scheduler": [["normal"]]}},
        ),
        "SaveImage": NodeInfo(
            name="SaveImage", input={"required": {"filename_prefix": ["STRING", {}]}}
        ),
    }

    assert model_files(catalogue) == {
        "CheckpointLoaderSimple": {"ckpt_name": ["sd15.safetensors", "sdxl.safetensors"]},
        "LoraLoader": {"lora_name": ["style.safetensors"]},
        "DualCLIPLoader": {
            "clip_name1": ["t5.safetensors"],
            "clip_name2": ["clip_l.safetensors"],
        },
        "VAELoader": {"vae_name": []},
    }


def test_malformed_history_message_reads_as_unknown() -> None:
    raw = {
        "prompt": _item(1, "p"),
        "status": {
            "status_str": "error",
            "completed": False,
            "messages": [["execution_start", {"prompt_id": "p"}], ["execution_error", {"x": 1}]],
        },
    }

    status = HistoryEntry.model_validate(raw).status

    assert status is not None
    assert status.error is None
    assert status.events()[1] == Unknown(type="execution_error", data={"x": 1})
