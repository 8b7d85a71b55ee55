"""The client and the listener against the emulator over real HTTP and WebSocket.

The cancel and prompt-id tests run a real emulator process playing each ComfyUI version
(`--comfyui-version`), so they cover both the jobs route (0.26.0) and the fallback (0.8.0).
"""

import io
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

import httpx
import pytest
from PIL import Image

from comfy_emulator import EmulatorConfig, start_emulator
from comfy_shared.comfyui import (
    ComfyClient,
    ComfyEventListener,
    ComfyNotFound,
    Connected,
    Executing,
    ExecutionStart,
    HistoryEntry,
    ListenerConfig,
    Progress,
    PromptRejected,
)
from comfy_shared.comfyui.prompt_ids import prompt_id_for
from comfy_testkit import graphs
from comfy_testkit.emulator_control import EmulatorControl
from comfy_testkit.plugin import EmulatorFactory
from comfy_testkit.waiting import wait_for_condition


@pytest.fixture
async def emulator_url() -> AsyncIterator[str]:
    running = await start_emulator(EmulatorConfig(port=0, step_time=0.005, load_scale=0.01))
    yield running.url
    await running.stop()


@pytest.fixture
async def comfy(emulator_url: str) -> AsyncIterator[ComfyClient]:
    async with ComfyClient(emulator_url) as client:
        yield client


async def test_a_prompt_runs_with_progress_and_its_output_downloads(
    emulator_url: str, comfy: ComfyClient
) -> None:
    listener = ComfyEventListener(emulator_url, "client-a", ListenerConfig(ping_interval_s=None))
    seen: list[object] = []
    async with aclosing(listener.events()) as events:
        first = await anext(events)
        assert isinstance(first, Connected)
        submitted = await comfy.submit(
            graphs.txt2img("emu-int", steps=5), prompt_id="p-1", client_id="client-a"
        )
        async for event in events:
            seen.append(event)
            if isinstance(event, Executing) and event.done and event.prompt_id == "p-1":
                break

    assert submitted.prompt_id == "p-1"
    assert any(isinstance(e, ExecutionStart) for e in seen)
    assert [e.value for e in seen if isinstance(e, Progress)] == [1, 2, 3, 4, 5]
    entry = await comfy.get_history("p-1")
    assert entry is not None
    assert entry.succeeded
    [file] = entry.files()
    image = Image.open(io.BytesIO(await comfy.view(file.filename, file.subfolder, file.type)))
    assert image.size == (64, 64)


async def test_rejections_uploads_and_capabilities(comfy: ComfyClient) -> None:
    with pytest.raises(PromptRejected) as rejected:
        await comfy.submit(graphs.invalid_width("x"), prompt_id="bad", client_id="c")
    assert rejected.value.node_errors["1"]["errors"][0]["type"] == "value_smaller_than_min"

    png = io.BytesIO()
    Image.new("RGB", (10, 10), "red").save(png, format="PNG")
    upload = await comfy.upload_image(png.getvalue(), "red.png", subfolder="uploads")
    assert upload.image_ref == "uploads/red.png"
    assert await comfy.view("red.png", "uploads", "input") == png.getvalue()
    with pytest.raises(ComfyNotFound):
        await comfy.view("missing.png")

    info = await comfy.object_info()
    assert graphs.SDXL_CHECKPOINT in info["CheckpointLoaderSimple"].model_inputs()["ckpt_name"]
    assert (await comfy.system_stats()).device is not None


async def test_targeted_interrupt_stops_only_the_running_prompt(comfy: ComfyClient) -> None:
    await comfy.submit(graphs.txt2img("long", steps=2000), prompt_id="long", client_id="c")
    await comfy.submit(graphs.solid_image("next"), prompt_id="next", client_id="c")

    async def running() -> bool:
        return (await comfy.get_queue()).is_running("long")

    await wait_for_condition(running, what="long prompt running")

    await comfy.interrupt("next")  # not running: ComfyUI ignores it
    assert (await comfy.get_queue()).is_running("long")
    await comfy.interrupt("long")

    async def both_finished() -> bool:
        return all([await comfy.get_history(p) is not None for p in ("long", "next")])

    await wait_for_condition(both_finished, what="both prompts in history")
    long_entry, next_entry = await comfy.get_history("long"), await comfy.get_history("next")
    assert long_entry is not None
    assert long_entry.status is not None
    assert long_entry.status.interruption is not None
    assert next_entry is not None
    assert next_entry.succeeded


# --- cancel and prompt ids against each ComfyUI version (real emulator processes) -------------

JOBS_CANCEL = "jobs-cancel"
FALLBACK = ["/queue", "/interrupt"]


class RecordingClient:
    """A ComfyClient over an httpx client that records the path of every POST it sends."""

    def __init__(self, url: str) -> None:
        self.paths: list[str] = []
        self.http = httpx.AsyncClient(timeout=10, event_hooks={"request": [self._record]})
        self.comfy = ComfyClient(url, http=self.http)

    async def _record(self, request: httpx.Request) -> None:
        path = request.url.path
        if request.method == "POST" and path != "/prompt":
            self.paths.append(JOBS_CANCEL if path.startswith("/api/jobs/") else path)

    def take(self) -> list[str]:
        """The paths sent since the last call."""
        paths, self.paths = self.paths, []
        return paths

    async def aclose(self) -> None:
        await self.http.aclose()


StartComfyUI = Callable[[str], str]


@pytest.fixture
def start_comfyui(start_emulator: EmulatorFactory) -> StartComfyUI:
    """Start an emulator process playing ComfyUI `version`; returns its URL."""

    def start(version: str) -> str:
        return start_emulator(f"comfyui-{version}", extra_args=["--comfyui-version", version]).url

    return start


async def _wait_running(comfy: ComfyClient, prompt_id: str) -> None:
    async def running() -> bool:
        return (await comfy.get_queue()).is_running(prompt_id)

    await wait_for_condition(running, what=f"{prompt_id} running")


async def _wait_finished(comfy: ComfyClient, prompt_id: str) -> HistoryEntry:
    async def finished() -> HistoryEntry | None:
        return await comfy.get_history(prompt_id)

    return await wait_for_condition(finished, what=f"{prompt_id} in history")


@pytest.mark.parametrize(
    ("version", "first_cancel", "later_cancel"),
    [
        ("0.8.0", [JOBS_CANCEL, *FALLBACK], FALLBACK),  # 404 once, then straight to the fallback
        ("0.26.0", [JOBS_CANCEL], [JOBS_CANCEL]),
    ],
)
async def test_cancel_prompt_stops_a_pending_then_a_running_prompt(
    start_comfyui: StartComfyUI,
    version: str,
    first_cancel: list[str],
    later_cancel: list[str],
) -> None:
    url = start_comfyui(version)
    control, recorder = EmulatorControl(url), RecordingClient(url)
    comfy = recorder.comfy
    running, pending, after = (prompt_id_for(f"task-{n}", 1) for n in range(3))
    try:
        await control.hang_next(1)  # `running` holds the worker until it is interrupted
        await comfy.submit(graphs.solid_image("running"), prompt_id=running, client_id="c")
        await _wait_running(comfy, running)
        for prompt_id in (pending, after):
            await comfy.submit(graphs.solid_image(prompt_id), prompt_id=prompt_id, client_id="c")
        recorder.take()

        await comfy.cancel_prompt(pending)
        assert recorder.take() == first_cancel
        queue = await comfy.get_queue()
        assert queue.is_running(running)
        assert [item.prompt_id for item in queue.pending] == [after]

        await comfy.cancel_prompt(running)
        assert recorder.take() == later_cancel

        interrupted = await _wait_finished(comfy, running)
        assert interrupted.status is not None
        assert interrupted.status.interruption is not None
        assert (await _wait_finished(comfy, after)).succeeded
        assert await comfy.get_history(pending) is None
        assert await control.executions(pending) == 0
        await comfy.cancel_prompt(after)  # finished: nothing to do, on either version
        assert (await comfy.get_history(after)) is not None
    finally:
        await control.aclose()
        await recorder.aclose()


async def test_the_missing_jobs_route_is_remembered_per_client(
    start_comfyui: StartComfyUI,
) -> None:
    url = start_comfyui("0.8.0")
    first, second = RecordingClient(url), RecordingClient(url)
    unknown = str(uuid.uuid4())
    try:
        assert await first.comfy.cancel_job(unknown) is None
        await first.comfy.cancel_prompt(unknown)
        await first.comfy.cancel_prompt(unknown)
        await second.comfy.cancel_prompt(unknown)
    finally:
        await first.aclose()
        await second.aclose()

    # cancel_job itself never remembers; cancel_prompt learns once per client instance.
    assert first.paths == [JOBS_CANCEL, JOBS_CANCEL, *FALLBACK, *FALLBACK]
    assert second.paths == [JOBS_CANCEL, *FALLBACK]


async def test_cancel_job_answers_on_0_26_0(start_comfyui: StartComfyUI) -> None:
    url = start_comfyui("0.26.0")
    async with ComfyClient(url) as comfy:
        done = str(uuid.uuid4())
        await comfy.submit(graphs.solid_image("done"), prompt_id=done, client_id="c")
        await _wait_finished(comfy, done)

        assert await comfy.cancel_job(done) is False
        assert await comfy.cancel_job(str(uuid.uuid4())) is False


async def test_0_26_0_rejects_a_prompt_id_that_is_not_a_uuid(
    start_comfyui: StartComfyUI,
) -> None:
    url = start_comfyui("0.26.0")
    async with ComfyClient(url) as comfy:
        for refused in ("task-42", str(uuid.uuid4()).upper()):
            with pytest.raises(PromptRejected) as rejected:
                await comfy.submit(graphs.solid_image("x"), prompt_id=refused, client_id="c")
            assert rejected.value.error_type == "invalid_prompt_id"
            assert rejected.value.node_errors == {}

        derived = prompt_id_for("task-42", 2)
        accepted = await comfy.submit(graphs.solid_image("x"), prompt_id=derived, client_id="c")
        assert accepted.prompt_id == derived
        assert (await _wait_finished(comfy, derived)).succeeded
