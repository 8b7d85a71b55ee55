"""Schemathesis against a live API: does every answer match what the OpenAPI document says?

Runs schemathesis' command line on a process started by the tests (a service with its
emulator, or a balancer with a node), with every check on (no server error, status codes,
content types, headers and bodies as documented, schema-valid requests accepted, invalid
ones refused, 405 with a true ``Allow``...), a fixed seed and a bounded number of cases per
operation, so a run is repeatable and takes well under a minute. What it must be told about
our API beyond the document is in ``schemathesis.toml`` beside this file, with the reasons.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = 20261013
MAX_EXAMPLES = 100
"""Cases per operation and phase: about 20 s per API on two cores, idle."""
RUN_TIMEOUT_S = 240


@dataclass(frozen=True)
class ConformanceRun:
    exit_code: int
    output: str
    report: dict[str, Any]
    """Schemathesis' JSON report: operations, test cases, failures, errors, warnings."""

    def problems(self) -> list[str]:
        """Everything wrong with the run: failures, errors, operations left untested."""
        operations = self.report["operations"]
        problems = [f"failure: {json.dumps(failure)[:2000]}" for failure in self.report["failures"]]
        problems += [f"error: {json.dumps(error)[:2000]}" for error in self.report["errors"]]
        if operations["tested"] != operations["selected"]:
            problems.append(f"operations not tested: {operations}")
        if self.exit_code != 0 and not problems:
            problems.append(f"exit code {self.exit_code}")
        return problems


def run_schemathesis(
    base_url: str,
    work_dir: Path,
    *,
    headers: Mapping[str, str] | None = None,
    seed: int = SEED,
    max_examples: int = MAX_EXAMPLES,
) -> ConformanceRun:
    """Run every check against the API at ``base_url``; ``headers`` go with every request
    (an API key, say). ``work_dir`` holds the report."""
    report_path = work_dir / "schemathesis-report.json"
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG),
        "run", f"{base_url}/openapi.json",
        "--checks", "all",
        "--seed", str(seed),
        "--max-examples", str(max_examples),
        "--workers", "1",  # the machine has two cores, shared with the processes under test
        "--request-timeout", "10",
        "--continue-on-failure",
        "--no-color",
        "--report", "json", "--report-json-path", str(report_path),
    ]  # fmt: skip
    for name, value in (headers or {}).items():
        command += ["--header", f"{name}: {value}"]
    completed = subprocess.run(
        command, cwd=work_dir, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
    output = completed.stdout + completed.stderr
    if not report_path.exists():
        raise AssertionError(f"schemathesis wrote no report:\n{output}")
    report = json.loads(report_path.read_text())
    return ConformanceRun(completed.returncode, output, report)
