"""The command-line client's own logic: saving outputs without losing a file, reading an
event stream. The API is faked at the transport (httpx.MockTransport)."""

from pathlib import Path

import httpx
import pytest

from comfy_stack.client import StackClient, create_file, parse_sse


def test_a_taken_name_gets_the_next_free_one_and_overwrite_replaces(tmp_path: Path) -> None:
    (tmp_path / "out.png").write_bytes(b"old")
    (tmp_path / "out-1.png").write_bytes(b"older")

    path, file = create_file(tmp_path / "out.png")
    with file:
        file.write(b"new")
    replaced, again = create_file(tmp_path / "out.png", overwrite=True)
    with again:
        again.write(b"newest")

    assert path == tmp_path / "out-2.png"
    assert path.read_bytes() == b"new"
    assert replaced == tmp_path / "out.png"
    assert (tmp_path / "out.png").read_bytes() == b"newest"
    assert (tmp_path / "out-1.png").read_bytes() == b"older"


@pytest.mark.parametrize("overwrite", [False, True])
def test_two_outputs_with_the_same_name_both_survive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overwrite: bool
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("ComfyUI_00001_.png").write_bytes(b"from an earlier run")
    outputs = [
        {"filename": "ComfyUI_00001_.png", "url": f"/api/v1/tasks/t1/outputs/{index}"}
        for index in range(2)
    ]

    def serve(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=f"image {request.url.path[-1]}".encode())

    transport = httpx.MockTransport(serve)
    client = StackClient(httpx.Client(base_url="http://stack", transport=transport))
    saved = client.download({"outputs": outputs}, None, overwrite=overwrite)

    contents = {path.name: path.read_bytes() for path in saved}
    if overwrite:
        assert contents == {"ComfyUI_00001_.png": b"image 0", "ComfyUI_00001_-1.png": b"image 1"}
    else:
        assert contents == {"ComfyUI_00001_-1.png": b"image 0", "ComfyUI_00001_-2.png": b"image 1"}
        assert Path("ComfyUI_00001_.png").read_bytes() == b"from an earlier run"


def test_an_output_name_is_never_a_path_outside_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    output = {"filename": "../../etc/evil.png", "url": "/api/v1/tasks/t1/outputs/0"}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=b"x"))
    client = StackClient(httpx.Client(base_url="http://stack", transport=transport))

    saved = client.download({"outputs": [output]}, tmp_path / "out.png")
    default = client.download({"outputs": [output]}, None)

    assert saved == [tmp_path / "out.png"]
    assert default == [Path("evil.png")]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["evil.png", "out.png"]


def test_server_sent_events_are_parsed_and_heartbeats_skipped() -> None:
    lines = [
        ": heartbeat", "id: 1-0", "event: state", 'data: {"status": "queued"}', "",
        "", ": heartbeat", "event: queue", "data: not json", "",
        "id: 2-0", "event: progress", 'data: {"value":', "data: 3}", "",
    ]  # fmt: skip

    assert list(parse_sse(iter(lines))) == [
        {"id": "1-0", "event": "state", "data": {"status": "queued"}},
        {"id": None, "event": "queue", "data": "not json"},
        {"id": "2-0", "event": "progress", "data": {"value": 3}},
    ]
