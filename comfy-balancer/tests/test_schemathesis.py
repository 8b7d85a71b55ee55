"""The balancer's answers match its OpenAPI document: schemathesis, every check, against a
real balancer process with one node (service and emulator) behind it
(``comfy_testkit.conformance``)."""

from collections.abc import Callable
from pathlib import Path

import pytest

from comfy_testkit.cluster import Cluster
from comfy_testkit.conformance import run_schemathesis


@pytest.mark.timeout(300)
def test_every_answer_matches_the_openapi_document(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    cluster = make_cluster(["a"])

    # the admin key reaches every route; the checker also sends requests without it
    run = run_schemathesis(cluster.balancer.url, tmp_path, headers=cluster.balancer.auth_headers)

    assert run.problems() == [], run.output
    assert run.report["operations"]["tested"] >= 12
    assert run.report["test_cases"]["generated"] > 1000
