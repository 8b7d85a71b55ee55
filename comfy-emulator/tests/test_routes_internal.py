"""/internal/* (only without the /api prefix)."""

from __future__ import annotations

from comfy_emulator.testing import EmulatorClient
from comfy_emulator.workflows import solid_image


async def test_logs_as_string_and_raw(client: EmulatorClient) -> None:
    await client.post_prompt(solid_image())
    await client.wait_idle()
    text = await client.get_json("/internal/logs")
    assert isinstance(text, str)
    assert " - got prompt\n" in text
    raw = await client.get_json("/internal/logs/raw")
    assert raw["size"] == {"cols": 80, "rows": 24}
    assert any(e["m"].startswith("Prompt executed in ") for e in raw["entries"])


async def test_subscribe_needs_both_keys(client: EmulatorClient) -> None:
    async with client.session.patch(
        client.base_url + "/internal/logs/subscribe", json={"clientId": "x"}
    ) as response:
        assert response.status == 500


async def test_files_listing(client: EmulatorClient) -> None:
    await client.post_prompt(solid_image(prefix="listed"))
    await client.wait_idle()
    assert await client.get_json("/internal/files/output") == ["listed_00001_.png"]
    async with client.session.get(client.base_url + "/internal/files/models") as response:
        assert response.status == 400
        assert await response.json() == {"error": "Invalid directory type"}
    paths = await client.get_json("/internal/folder_paths")
    assert "checkpoints" in paths
