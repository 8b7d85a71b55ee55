"""``python -m comfy_balancer.autoscaler``: run the autoscaler until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence

import docker
from loguru import logger

from comfy_balancer.autoscaler.containers import DockerNodes
from comfy_balancer.autoscaler.scaler import Autoscaler
from comfy_balancer.autoscaler.settings import AutoscalerSettings
from comfy_shared.errors import SettingsError
from comfy_shared.logs import configure_logging
from comfy_shared.loops import Supervisor
from comfy_shared.redis_client import connect_redis
from comfy_shared.settings import settings_from_argv

PROG = "comfy-autoscaler"


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = settings_from_argv(
            AutoscalerSettings,
            argv,
            prog=PROG,
            description="Start and stop node containers (one GPU each) as the queue asks.",
        )
    except SettingsError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    configure_logging(
        service="autoscaler",
        node=settings.node_id,
        level=settings.log_level,
        json_lines=settings.log_json,
        logdy=settings.logdy,
        logdy_buffer_lines=settings.logdy_buffer_lines,
    )
    asyncio.run(run_autoscaler(settings))


async def run_autoscaler(settings: AutoscalerSettings) -> None:
    """Decide every ``interval_s`` until SIGTERM/SIGINT. A failing tick (Redis or Docker
    away) is logged once per outage by the supervisor and tried again next interval."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    redis = await connect_redis(settings.redis_target(), attempts=30)
    containers = DockerNodes(lambda: _docker_client(settings), settings, os.environ)
    autoscaler = Autoscaler(settings, redis, containers)
    supervisor = Supervisor()
    supervisor.start_every("autoscaler", settings.interval_s, autoscaler.autoscale_once)
    logger.info("autoscaler started", scope=settings.scope, gpus=settings.gpus)
    try:
        await stop.wait()
    finally:
        await supervisor.stop()  # the node containers stay: a restart finds them by label
        await redis.aclose()
        logger.info("autoscaler stopped")


def _docker_client(settings: AutoscalerSettings) -> docker.DockerClient:
    if settings.docker_url:
        return docker.DockerClient(base_url=settings.docker_url)
    return docker.from_env()


if __name__ == "__main__":
    main()
