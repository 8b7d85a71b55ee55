"""The service's answers match its OpenAPI document: schemathesis, every check, against a
real service process with the emulator as ComfyUI (``comfy_testkit.conformance``)."""

from pathlib import Path

import pytest

from comfy_testkit.conformance import run_schemathesis
from comfy_testkit.stack import RunningComponent


@pytest.mark.timeout(300)
def test_every_answer_matches_the_openapi_document(
    service: RunningComponent, tmp_path: Path
) -> None:
    run = run_schemathesis(service.url, tmp_path, headers=service.auth_headers)

    assert run.problems() == [], run.output
    assert run.report["operations"]["tested"] >= 9
    assert run.report["test_cases"]["generated"] > 1000
