"""``comfy-service``: run one service next to one ComfyUI."""

from __future__ import annotations

from collections.abc import Sequence

from comfy_service.main import create_app
from comfy_service.settings import ServiceSettings
from comfy_shared.api.app import serve


def main(argv: Sequence[str] | None = None) -> None:
    serve(
        ServiceSettings,
        create_app,
        argv,
        prog="comfy-service",
        description="Wrap one ComfyUI server as the comfy-stack text-to-image API.",
        service="service",
    )


if __name__ == "__main__":
    main()
