"""The Prefect flows on a real emulated fleet, under Prefect's local test harness (a
temporary Prefect server on SQLite; no server of ours). Prefect lives in an environment of
its own (``scripts/prefect-env.sh``, run by ``./dev test``): elsewhere this module is
skipped."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from comfy_stack.batch import read_manifest
from comfy_testkit.cluster import Cluster
from comfy_testkit.image_files import image_bytes, write_tree
from comfy_testkit.stack import ADMIN_KEY

pytest.importorskip("prefect")

from prefect.testing.utilities import prefect_test_harness

from comfy_stack.batch.prefect_flows import main_flow

pytestmark = [
    pytest.mark.timeout(240),  # the harness starts a Prefect server: 9 s, 30 s on a busy machine
    # Prefect's own client leaves a connection to its temporary server unclosed.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]


@pytest.fixture(scope="module")
def prefect_server() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=180):
        yield


async def test_main_flow_processes_each_folder_of_each_root_through_the_fleet(
    prefect_server: None, make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    cluster = make_cluster(("a", "b"))
    await cluster.nodes_ready(2)
    write_tree(tmp_path / "studio", ["portraits/p1.png", "portraits/p2.jpg", "drafts/d.png"])
    write_tree(tmp_path / "field", ["portraits/f.webp", "top.png"])
    (tmp_path / "field" / "portraits" / "fake.png").write_bytes(image_bytes(".jpg"))
    out = tmp_path / "out"

    summary = await main_flow(
        roots=[str(tmp_path / "studio"), str(tmp_path / "field")],
        output_root=str(out), workflow="img2img-sdxl",
        params={"prompt": "a charcoal drawing", "steps": 2}, include_folders=["portrait"],
        url=cluster.balancer.url, api_key=ADMIN_KEY, concurrency=2,
    )  # fmt: skip

    assert (summary["folders"], summary["found"], summary["done"], summary["ok"]) == (2, 3, 3, True)
    assert [r["reason"] for r in summary["rejected"]] == ["not a PNG file (its bytes are JPEG)"]
    outputs = sorted(str(path.relative_to(out)) for path in out.rglob("*.png"))
    assert outputs == [
        "field/portraits/f.png",
        "studio/portraits/p1.png",
        "studio/portraits/p2.png",
    ]
    assert {record.state for record in read_manifest(out).values()} == {"done"}
    again = await main_flow(
        roots=[str(tmp_path / "studio"), str(tmp_path / "field")],
        output_root=str(out), workflow="img2img-sdxl",
        params={"prompt": "a charcoal drawing", "steps": 2}, include_folders=["portrait"],
        url=cluster.balancer.url, api_key=ADMIN_KEY,
    )  # fmt: skip
    assert (again["done"], again["already_done"]) == (0, 3)
