import base64
import io
import json
import random
import re
from pathlib import Path

import pytest
from PIL import Image

from comfy_shared.workflows import (
    DEFAULT_TEMPLATES_DIR,
    ImageLimits,
    InvalidParams,
    StagedInputReference,
    TemplateError,
    TemplateLibrary,
    UnknownWorkflow,
    image_problem,
    load_template,
)
from comfy_testkit import hostile

SHIPPED = TemplateLibrary.load(DEFAULT_TEMPLATES_DIR)


def png_base64(size: tuple[int, int] = (8, 8)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, "red").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_the_shipped_templates_load() -> None:
    assert {"txt2img-sdxl", "img2img-sdxl", "demo"} <= set(SHIPPED.names())


def test_precedence_request_then_default_then_graph() -> None:
    template = SHIPPED.get("txt2img-sdxl")
    expanded = template.expand(template.resolve({"prompt": "a fox", "width": 768}))

    assert expanded.graph["6"]["inputs"]["text"] == "a fox"  # request
    assert expanded.graph["5"]["inputs"]["width"] == 768  # request
    assert expanded.graph["5"]["inputs"]["height"] == 1024  # template default
    assert expanded.graph["7"]["inputs"]["text"] == template.graph["7"]["inputs"]["text"]  # graph
    assert template.graph["6"]["inputs"]["text"] != "a fox"  # the template itself is untouched


def test_an_unset_seed_is_random_and_reported() -> None:
    template = SHIPPED.get("txt2img-sdxl")
    first = template.resolve({"prompt": "x"}, random.Random(1))
    second = template.resolve({"prompt": "x"}, random.Random(2))
    assert first["seed"] != second["seed"]
    expansion = template.expand(first)
    assert expansion.params["seed"] == expansion.graph["3"]["inputs"]["seed"] == first["seed"]
    assert template.resolve({"seed": 7})["seed"] == 7


@pytest.mark.parametrize(
    ("params", "field", "reason"),
    [
        ({"colour": 1}, "colour", "unknown parameter"),
        ({"width": "wide"}, "width", "expected an integer"),
        ({"width": 10.5}, "width", "expected an integer"),
        ({"width": 4}, "width", "below the minimum"),
        ({"width": 99999}, "width", "above the maximum"),
        ({"blur_radius": True}, "blur_radius", "expected an integer"),
    ],
)
def test_bad_params_name_the_field(params: dict[str, object], field: str, reason: str) -> None:
    with pytest.raises(InvalidParams) as caught:
        SHIPPED.get("demo").resolve(params)
    assert reason in caught.value.errors[field]
    assert f"params.{field}" in str(caught.value)


def test_enum_required_and_image_checks() -> None:
    with pytest.raises(InvalidParams) as caught:
        SHIPPED.get("txt2img-sdxl").resolve({"sampler": "fastest"})
    assert "expected one of" in caught.value.errors["sampler"]

    img2img = SHIPPED.get("img2img-sdxl")
    with pytest.raises(InvalidParams) as missing:
        img2img.resolve({})
    assert missing.value.errors == {"image": "required", "prompt": "required"}
    with pytest.raises(InvalidParams) as not_image:
        img2img.resolve({"prompt": "x", "image": base64.b64encode(b"GIF89a...").decode()})
    assert "not a PNG, JPEG or WebP" in not_image.value.errors["image"]
    resolved = img2img.resolve({"prompt": "x", "image": "data:image/png;base64," + png_base64()})
    with pytest.raises(InvalidParams, match="larger than 10"):
        img2img.check_images(resolved, ImageLimits(max_bytes=10, max_pixels=10**6))
    expansion = img2img.expand(resolved)
    again = img2img.expand(resolved)
    [image] = expansion.inputs
    assert re.fullmatch(r"[0-9a-f]{32}\.png", image.name)  # unguessable by other tasks
    assert again.inputs[0].name != image.name
    assert image.data.startswith(b"\x89PNG")
    assert expansion.graph["10"]["inputs"]["image"] == f"comfy-stack/{image.name}"  # set once
    assert expansion.params["image"] == f"<png image, {len(image.data)} bytes>"


def test_unknown_workflow_lists_the_known_ones() -> None:
    with pytest.raises(UnknownWorkflow, match="demo"):
        SHIPPED.get("nope")


def test_json_schema_describes_every_parameter() -> None:
    schema = SHIPPED.get("txt2img-sdxl").json_schema()
    assert schema["additionalProperties"] is False
    assert schema["properties"]["width"] == {
        "description": "Image width in pixels.",
        "type": "integer",
        "minimum": 512,
        "maximum": 2048,
        "default": 1024,
    }
    assert "enum" in schema["properties"]["sampler"]
    assert "random when unset" in schema["properties"]["seed"]["description"]
    assert SHIPPED.get("img2img-sdxl").json_schema()["required"] == ["image", "prompt"]


GRAPH = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8}}}


@pytest.mark.parametrize(
    ("declaration", "graph", "message"),
    [
        ("params: [", GRAPH, "not valid YAML"),
        ("params: {w: {type: int, targets: [{node: '9', input: width}]}}", GRAPH,
         "params.w.targets.0: node '9' is not in the graph"),
        ("params: {w: {type: int, targets: [{node: '1', input: height}]}}", GRAPH,
         "node '1' (EmptyImage) has no input 'height'"),
        ("params: {w: {type: int, default: big, targets: [{node: '1', input: width}]}}", GRAPH,
         "params.w: Value error, default 'big': expected an integer"),
        ("params: {w: {type: colour, targets: [{node: '1', input: width}]}}", GRAPH,
         "params.w.type"),
        ("params: {w: {type: enum, targets: [{node: '1', input: width}]}}", GRAPH,
         "needs 'choices'"),
        ("params: {w: {type: int, min: 9, max: 1, targets: [{node: '1', input: width}]}}", GRAPH,
         "'min' is greater than 'max'"),
        ("params: {w: {type: int, targets: []}}", GRAPH, "params.w.targets"),
        ("params: {w: {type: int, tragets: [{node: '1', input: width}]}}", GRAPH,
         "params.w.targets: Field required"),
        ("params: {}", None, "the graph file is missing"),
        ("params: {}", ["not", "a", "graph"], "not an API-format graph"),
    ],
)  # fmt: skip
def test_broken_templates_are_refused_naming_file_and_field(
    tmp_path: Path, declaration: str, graph: object, message: str
) -> None:
    (tmp_path / "broken.yaml").write_text(declaration)
    if graph is not None:
        (tmp_path / "broken.json").write_text(json.dumps(graph))
    with pytest.raises(TemplateError) as caught:
        load_template(tmp_path / "broken.yaml")
    assert str(caught.value).startswith("broken.")
    assert message in str(caught.value)


def test_a_missing_templates_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="does not exist"):
        TemplateLibrary.load(tmp_path / "nope")


LIMITS = ImageLimits(max_bytes=10**6, max_pixels=1000 * 1000)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (hostile.png_declaring(13000, 13000), "13000x13000 = 169000000 pixels is larger than"),
        (hostile.png_declaring(1001, 1000), "pixels is larger than 1000000"),
        (hostile.real_png((64, 64))[:-20], "truncated PNG"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "unreadable or truncated PNG"),
        (b"\xff\xd8\xff" + b"\x00" * 40, "unreadable or truncated JPEG"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 8, "unreadable or truncated WEBP"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * (10**6 - 7), "1000001 bytes is larger than 1000000"),
        (b"\x00" * 2 * 10**6, "image larger than 1000000 bytes"),  # refused before decoding
    ],
)
def test_an_image_is_judged_by_its_header(data: bytes, problem: str) -> None:
    encoded = base64.b64encode(data).decode()

    assert problem in (image_problem(encoded, LIMITS) or "")
    assert problem in (image_problem(f"data:image/png;base64,{encoded}", LIMITS) or "")


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP"])
def test_images_within_the_limits_pass(image_format: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (1000, 1000), "navy").save(buffer, format=image_format)

    assert image_problem(base64.b64encode(buffer.getvalue()).decode(), LIMITS) is None


@pytest.mark.parametrize(
    "value",
    ["comfy-stack/0123.png", "./comfy-stack/x.png", "../comfy-stack/x.png",
     "comfy-stack\\x.png", "comfy-stack/x.png [input]"],
)  # fmt: skip
def test_a_graph_of_the_caller_s_own_may_not_name_a_staged_input(value: str) -> None:
    graph = {"10": {"class_type": "LoadImage", "inputs": {"image": value}}}
    with pytest.raises(StagedInputReference, match="node '10' input 'image'"):
        SHIPPED.expand_request(prompt=graph, workflow=None, params={})
    mine = {"10": {"class_type": "LoadImage", "inputs": {"image": "my-stack/x.png"}}}
    SHIPPED.expand_request(prompt=mine, workflow=None, params={})
