"""Request bodies a hostile (or careless) client sends, and what every API must answer to each:
the same table runs against a service and against the balancer."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import httpx

from comfy_testkit import graphs
from comfy_testkit.api import submit, wait_until_finished

SEED_MAX = 2**64 - 1
"""ComfyUI's largest seed: a valid request must keep getting through."""


@dataclass(frozen=True)
class Poison:
    name: str
    body: str
    """The JSON text, written out: a client library would refuse to encode most of these."""
    status: int
    code: str
    path: str | None = None
    """The JSON path the error must name, when it names one."""


def _graph_with(value: str) -> str:
    """A valid two-node graph whose EmptyImage width is ``value``, as JSON text."""
    graph = graphs.solid_image("poison")
    graph["1"]["inputs"]["width"] = "@"
    return json.dumps(graph).replace('"@"', value)


def _template_with(field: str, value: str) -> str:
    return f'{{"workflow": "txt2img-sdxl", "params": {{"prompt": "x", "{field}": {value}}}}}'


def _nested(depth: int) -> str:
    return '{"workflow": "demo", "client": {"deep": ' + "[" * depth + "]" * depth + "}}"


TEXT_POISONS = [
    Poison("NaN in params", _template_with("cfg", "NaN"), 422, "invalid_number", "$.params.cfg"),
    Poison(
        "1e400 overflows", _template_with("cfg", "1e400"), 422, "invalid_number", "$.params.cfg"
    ),
    Poison("-1e400", _template_with("cfg", "-1e400"), 422, "invalid_number", "$.params.cfg"),
    Poison(
        "10**400", _template_with("seed", "1" + "0" * 400), 422, "invalid_number", "$.params.seed"
    ),
    Poison("2**64", _template_with("seed", str(2**64)), 422, "invalid_number", "$.params.seed"),
    Poison(
        "-(2**63) - 1",
        _template_with("seed", str(-(2**63) - 1)),
        422,
        "invalid_number",
        "$.params.seed",
    ),
    Poison(
        "5000 digits, too long for int()",
        _template_with("seed", "9" * 5000),
        422,
        "invalid_number",
        "$.params.seed",
    ),
    Poison(
        "Infinity in a graph input",
        f'{{"prompt": {_graph_with("Infinity")}}}',
        422,
        "invalid_number",
        '$.prompt["1"].inputs.width',
    ),
    Poison(
        "-Infinity in client metadata",
        '{"workflow": "demo", "client": {"tags": [1, -Infinity]}}',
        422,
        "invalid_number",
        "$.client.tags[1]",
    ),
    Poison(
        "lone surrogate",
        '{"workflow": "demo", "client": {"note": "\\ud800"}}',
        422,
        "invalid_string",
        "$.client.note",
    ),
    Poison("65 levels deep", _nested(63), 422, "nested_too_deep", "$.client.deep" + "[0]" * 62),
    Poison("100000 levels deep", _nested(100_000), 422, "nested_too_deep"),
    Poison("not JSON", '{"workflow": "demo", ', 400, "malformed_json"),
]
NOT_UTF8 = Poison("not UTF-8", '{"workflow": "d\udcffemo"}', 400, "malformed_json")
"""Only in a JSON body: a form field's bytes are decoded by the form parser, not the JSON one."""
POISONS = [*TEXT_POISONS, NOT_UTF8]


def body_bytes(poison: Poison) -> bytes:
    # surrogateescape turns the \udcff of "not UTF-8" back into the raw byte 0xff.
    return poison.body.encode("utf-8", "surrogateescape")


def refusal_problems(poison: Poison, response: httpx.Response) -> list[str]:
    """What is wrong with ``response`` as the answer to ``poison`` (empty: nothing)."""
    try:
        body = response.json()
    except ValueError:
        return [f"{poison.name}: {response.status_code} {response.text[:200]!r}"]
    got = (response.status_code, body.get("code"), body.get("type"))
    problems = []
    if got != (poison.status, poison.code, "validation"):
        problems.append(f"{poison.name}: {got} {body.get('detail')!r}")
    if poison.path is not None and body.get("path") != poison.path:
        problems.append(f"{poison.name}: path {body.get('path')!r}, expected {poison.path!r}")
    return problems


# --- checks both APIs must pass, each against a live service or balancer -------------------


def _fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def check_an_id_naming_another_task_s_keys_is_refused(api: httpx.AsyncClient) -> None:
    task = await submit(api, graphs.solid_image(_fresh("k")), task_id=_fresh("x"))

    collision = await api.post(
        "/api/v1/generate",
        json={"prompt": graphs.solid_image(_fresh("k")), "task_id": f"{task['id']}:events"},
    )

    assert (collision.status_code, collision.json()["code"]) == (422, "invalid_request")
    assert (await wait_until_finished(api, task["id"], timeout_s=30))["status"] == "succeeded"


async def check_an_id_whose_keys_were_claimed_first_still_runs(api: httpx.AsyncClient) -> None:
    squatter = await api.post(
        "/api/v1/generate",
        json={"prompt": graphs.solid_image(_fresh("q")), "task_id": "order-200:events"},
    )
    assert squatter.status_code == 422

    task = await submit(api, graphs.solid_image(_fresh("q")), task_id="order-200")

    assert (await wait_until_finished(api, task["id"], timeout_s=30))["status"] == "succeeded"


async def check_every_task_route_refuses_an_id_outside_the_alphabet(
    api: httpx.AsyncClient,
) -> None:
    task = await submit(api, graphs.solid_image(_fresh("r")), task_id=_fresh("y"))
    await wait_until_finished(api, task["id"], timeout_s=30)
    # ":events" would address the task's event stream as if it were a task record.
    for bad_id in (f"{task['id']}:events", "-dash-first", "a" * 129, "new%0Aline", "sp%20ace"):
        for method, path in (
            ("GET", f"/api/v1/tasks/{bad_id}"),
            ("DELETE", f"/api/v1/tasks/{bad_id}"),
            ("GET", f"/api/v1/tasks/{bad_id}/events"),
            ("GET", f"/api/v1/tasks/{bad_id}/logs"),
            ("GET", f"/api/v1/tasks/{bad_id}/outputs/0"),
        ):
            response = await api.request(method, path)
            body = response.json()
            assert (response.status_code, body["code"], body["type"]) == (
                422, "invalid_task_id", "validation",
            ), (method, path, body)  # fmt: skip


async def check_priority_outside_the_queue_s_range_is_refused(api: httpx.AsyncClient) -> None:
    for priority in (2000, -2000, 2**63):
        response = await api.post(
            "/api/v1/generate", json={"workflow": "demo", "priority": priority}
        )
        assert (response.status_code, response.json()["code"]) == (422, "invalid_request")


async def check_the_largest_seed_still_runs(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/v1/generate",
        json={"workflow": "txt2img-sdxl", "params": {"prompt": "x", "steps": 2, "seed": SEED_MAX}},
    )
    assert response.status_code == 202, response.text

    task = await wait_until_finished(api, response.json()["id"], timeout_s=30)

    assert task["status"] == "succeeded"
    assert task["params"]["seed"] == SEED_MAX


async def check_a_graph_cannot_name_a_staged_input(api: httpx.AsyncClient) -> None:
    """Other tasks' images are staged under comfy-stack/: a graph of one's own cannot load
    them, whatever the name."""
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "comfy-stack/0123abcd.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    response = await api.post("/api/v1/generate", json={"prompt": graph})
    assert (response.status_code, response.json()["code"]) == (422, "staged_input")


async def check_an_idempotency_key_names_one_request(api: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": _fresh("order")}
    body = {"prompt": graphs.solid_image(_fresh("i"))}

    first = await api.post("/api/v1/generate", json=body, headers=key)
    again = await api.post("/api/v1/generate", json=body, headers=key)
    other = await api.post("/api/v1/generate", json={"workflow": "demo"}, headers=key)

    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reuse")
