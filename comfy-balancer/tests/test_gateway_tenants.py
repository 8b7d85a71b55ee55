"""Two API keys of two tenants on one gateway: each is a ComfyUI of its own. B sees none of
A's prompts, files or uploads and can stop none of them; A's /api/v1 tasks are A's prompts
too."""

import io
import uuid
from collections.abc import Callable

import httpx
from PIL import Image

from comfy_testkit import graphs
from comfy_testkit.api_keys import KeyClients
from comfy_testkit.cluster import Cluster
from comfy_testkit.waiting import wait_for_condition


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def status_of(client: httpx.AsyncClient, prompt_id: str) -> str:
    status: str = (await client.get(f"/api/jobs/{prompt_id}")).json()["status"]
    return status


async def test_one_tenant_sees_and_stops_nothing_of_another(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(["a"], balancer_args=["--slots-per-node", "1"])
    await cluster.nodes_ready(1)
    async with KeyClients(cluster) as keys:
        alice, bob = await keys.make(fresh("alice")), await keys.make(fresh("bob"))
        image = io.BytesIO()
        Image.new("RGB", (8, 8), (1, 2, 3)).save(image, "PNG")
        upload = await alice.post(
            "/upload/image", files={"image": ("secret.png", image.getvalue(), "image/png")}
        )
        assert upload.status_code == 200, upload.text
        done = (await alice.post("/prompt", json={"prompt": graphs.solid_image(fresh("a"))})).json()
        slow = graphs.txt2img(fresh("slow"), steps=3000)
        running = (await alice.post("/prompt", json={"prompt": slow})).json()["prompt_id"]
        waiting = (await alice.post("/prompt", json={"prompt": graphs.solid_image("w")})).json()
        v1_task = (await alice.post("/api/v1/generate", json={"workflow": "demo"})).json()

        async def running_and_done() -> bool:
            finished = (await alice.get(f"/history/{done['prompt_id']}")).json()
            return bool(finished) and await status_of(alice, running) == "in_progress"

        await wait_for_condition(running_and_done, timeout_s=30, what="alice's prompts under way")
        [image_file] = (await alice.get(f"/history/{done['prompt_id']}")).json()[done["prompt_id"]][
            "outputs"
        ]["3"]["images"]
        alice_ids = {done["prompt_id"], running, waiting["prompt_id"], v1_task["id"]}
        alice_jobs = {job["id"] for job in (await alice.get("/api/jobs")).json()["jobs"]}
        assert alice_jobs == alice_ids  # her /api/v1 task is one of her prompts too

        # Bob sees nothing of it...
        assert (await bob.get("/history")).json() == {}
        assert (await bob.get(f"/history/{done['prompt_id']}")).json() == {}
        assert (await bob.get("/queue")).json() == {"queue_running": [], "queue_pending": []}
        assert (await bob.get("/prompt")).json() == {"exec_info": {"queue_remaining": 0}}
        assert (await bob.get("/api/jobs")).json()["jobs"] == []
        assert (await bob.get(f"/api/jobs/{running}")).status_code == 404
        view = {k: image_file[k] for k in ("filename", "subfolder", "type")}
        assert (await alice.get("/view", params=view)).status_code == 200
        assert (await bob.get("/view", params=view)).status_code == 404
        uploaded = {"filename": "secret.png", "type": "input"}
        assert (await alice.get("/view", params=uploaded)).status_code == 200
        assert (await bob.get("/view", params=uploaded)).status_code == 404
        # ... an upload of his own under the same name is his alone ...
        mine = await bob.post(
            "/upload/image", files={"image": ("secret.png", b"\x89PNG\r\n\x1a\n", "image/png")}
        )
        assert mine.status_code == 400  # a truncated PNG: refused, and nothing of hers changed
        assert (await alice.get("/view", params=uploaded)).content == image.getvalue()

        # ... and stops nothing of it, however he asks.
        assert (await bob.post(f"/api/jobs/{running}/cancel")).json() == {"cancelled": False}
        cancel_all = await bob.post("/api/jobs/cancel", json={"job_ids": [running]})
        assert cancel_all.json() == {"cancelled": False}
        await bob.post("/interrupt", json={"prompt_id": running})
        await bob.post("/interrupt")
        await bob.post("/queue", json={"delete": [waiting["prompt_id"]], "clear": True})
        await bob.post("/history", json={"delete": [done["prompt_id"]], "clear": True})
        taken = await bob.post("/prompt", json={"prompt": slow, "prompt_id": running})
        assert (taken.status_code, taken.json()["error"]["type"]) == (409, "task_id_taken")
        assert await status_of(alice, running) == "in_progress"
        assert await status_of(alice, waiting["prompt_id"]) == "pending"
        assert done["prompt_id"] in (await alice.get("/history")).json()
        assert (await alice.get("/prompt")).json()["exec_info"]["queue_remaining"] >= 2

        await alice.post("/interrupt")  # hers: stops her running prompt
        await wait_for_condition(
            lambda: _is(alice, running, "cancelled"), timeout_s=15, what="alice's interrupt"
        )


async def _is(client: httpx.AsyncClient, prompt_id: str, status: str) -> bool:
    return await status_of(client, prompt_id) == status
