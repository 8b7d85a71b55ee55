"""The service's answers match its OpenAPI document: schemathesis, every check, against a
real service process with the emulator as ComfyUI (``comfy_testkit.conformance``)."""

from pathlib import Path

import pytest

from comfy_testkit.conformance import run_schemathesis
from comfy_testkit.stack import RunningComponent


@pytest.fixture
def api_headers() -> dict[str, str]:
    """Headers every request of the run carries (credentials, should the API want them)."""
    return {}


@pytest.mark.timeout(300)
def test_every_answer_matches_the_openapi_document(
    service: RunningComponent, api_headers: dict[str, str], tmp_path: Path
) -> None:
    run = run_schemathesis(service.url, tmp_path, headers=api_headers)

    assert run.problems() == [], run.output
    assert run.report["operations"]["tested"] >= 9
    assert run.report["test_cases"]["generated"] > 1000
