"""``comfy-balancer``: one API in front of many comfy-service nodes."""

from __future__ import annotations

from collections.abc import Sequence

from comfy_balancer.main import create_app
from comfy_balancer.settings import BalancerSettings
from comfy_shared.api.app import serve


def main(argv: Sequence[str] | None = None) -> None:
    serve(
        BalancerSettings,
        create_app,
        argv,
        prog="comfy-balancer",
        description="Serve the comfy-stack API for a cluster of comfy-service nodes.",
        service="balancer",
    )


if __name__ == "__main__":
    main()
