"""``comfy-service``: run one service next to one ComfyUI."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import uvicorn

from comfy_service.main import create_app
from comfy_service.settings import ServiceSettings
from comfy_shared.errors import SettingsError
from comfy_shared.logs import configure_logging
from comfy_shared.settings import settings_from_argv
from comfy_shared.workflows import TemplateError


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = settings_from_argv(
            ServiceSettings,
            argv,
            prog="comfy-service",
            description="Wrap one ComfyUI server as the comfy-stack text-to-image API.",
        )
    except SettingsError as exc:
        print(f"comfy-service: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    configure_logging(
        service="service",
        node=settings.node_id,
        level=settings.log_level,
        json_lines=settings.log_json,
        logdy=settings.logdy,
        logdy_buffer_lines=settings.logdy_buffer_lines,
    )
    try:
        app = create_app(settings)
    except TemplateError as exc:
        print(f"comfy-service: broken workflow template: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
    )


if __name__ == "__main__":
    main()
