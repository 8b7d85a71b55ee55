"""The balancer's answers match its OpenAPI document: schemathesis, every check, against a
real balancer process with one node (service and emulator) behind it
(``comfy_testkit.conformance``)."""

from collections.abc import Callable
from pathlib import Path

import pytest

from comfy_testkit.cluster import Cluster
from comfy_testkit.conformance import run_schemathesis


@pytest.fixture
def api_headers() -> dict[str, str]:
    """Headers every request of the run carries: an API key, once the balancer wants one."""
    return {}


@pytest.mark.timeout(300)
def test_every_answer_matches_the_openapi_document(
    make_cluster: Callable[..., Cluster], api_headers: dict[str, str], tmp_path: Path
) -> None:
    cluster = make_cluster(["a"])

    run = run_schemathesis(cluster.balancer.url, tmp_path, headers=api_headers)

    assert run.problems() == [], run.output
    assert run.report["operations"]["tested"] >= 12
    assert run.report["test_cases"]["generated"] > 1000
