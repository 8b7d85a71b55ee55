"""A real S3-compatible server for tests: moto's server mode, run as its own process over HTTP
on a free loopback port (never moto's in-process mock, so every request goes through botocore,
aiohttp and a socket as it does against a real bucket)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from comfy_stack.ports import free_port
from comfy_stack.processes import ManagedProcess, start_python_module, wait_until_http_ok

S3_ACCESS_KEY_ID = "testkit-access-key"
S3_SECRET_ACCESS_KEY = "testkit-secret-key"
S3_REGION = "us-east-1"


@dataclass
class S3Server:
    process: ManagedProcess
    url: str
    access_key_id: str = S3_ACCESS_KEY_ID
    secret_access_key: str = S3_SECRET_ACCESS_KEY
    region: str = S3_REGION

    def stop(self) -> None:
        self.process.stop()


def start_s3_server(log_dir: Path, *, enforce_credentials: bool = False) -> S3Server:
    """``enforce_credentials``: every request must be signed with a key moto's IAM knows, and
    none is known, so every request is refused as a wrong credential is."""
    port = free_port()
    env = {"INITIAL_NO_AUTH_ACTION_COUNT": "0"} if enforce_credentials else {}
    process = start_python_module(
        f"s3-{port}",
        "moto.server",
        ["--host", "127.0.0.1", "--port", str(port)],
        log_dir=log_dir,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_http_ok(process, f"{url}/moto-api/")
    except BaseException:
        process.stop()
        raise
    return S3Server(process, url)
