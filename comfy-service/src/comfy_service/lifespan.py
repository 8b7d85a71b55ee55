"""Start-up and shutdown of a comfy-service process.

Start: Redis (retried until it answers), the ComfyUI client, then the loops: the WebSocket
listener that tracks tasks, the writer of gateway prompts' frames, the health publisher, the
watchdog, the safety-net reconcile, (if configured) the warm-up and, with
``--comfyui-command``, ComfyUI itself as a child (``comfy_service/supervisor.py``).
Stop: loops first, then withdraw the health key (routing stops at once), then close clients.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from importlib.metadata import version

from fastapi import FastAPI
from loguru import logger
from redis.asyncio import Redis

from comfy_service.ending import TaskEndings
from comfy_service.frames import FrameRecorder
from comfy_service.health import HealthPublisher, last_learned_profile, last_measured_speed
from comfy_service.host_metrics import GpuReader
from comfy_service.keeping import OutputKeeper
from comfy_service.lifecycle import Lifecycle
from comfy_service.memory import MemoryRelief
from comfy_service.metrics import ServiceMetrics
from comfy_service.profile import ModelProfiler
from comfy_service.prompts import FollowedPrompts
from comfy_service.queue_view import QueueView
from comfy_service.reachability import Reachability
from comfy_service.reconcile import Reconciler
from comfy_service.recycling import RecyclePolicy, Recycler
from comfy_service.settings import ServiceSettings
from comfy_service.speed import SpeedMeter
from comfy_service.submission import Submitter
from comfy_service.submit_gate import SubmitGate
from comfy_service.supervisor import ComfySupervisor
from comfy_service.tracking import EventTracker
from comfy_service.warmup import WarmUp, WarmUpWorkflow
from comfy_service.watchdog import Limits, watchdog_once
from comfy_shared.api.schemas import QueueStanding
from comfy_shared.clock import utc_now
from comfy_shared.comfyui import ComfyClient, ComfyEventListener, ListenerConfig
from comfy_shared.loops import LoopHandle, Supervisor
from comfy_shared.models import TaskRecord
from comfy_shared.outputs import make_store
from comfy_shared.outputs.catalog import OutputCatalog
from comfy_shared.outputs.inputs import InputStash
from comfy_shared.outputs.retention import start_retention
from comfy_shared.outputs.store import OutputStore
from comfy_shared.redis_client import connect_redis, is_cluster_url
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.stream_hub import StreamHub
from comfy_shared.task_logs import TaskLogSink, install_task_log_sink
from comfy_shared.task_queue import TaskQueue
from comfy_shared.task_store import TaskStore
from comfy_shared.workflows import TemplateLibrary

WATCHDOG_INTERVAL_S = 1.0
WS_RECONNECT_MAX_S = 2.0
"""Longest wait between two attempts to reach a ComfyUI that went away. One service per
ComfyUI, on its host: an attempt is cheap, and the balancer places work on the node as soon as
ComfyUI answers again, so its events must be followed again as soon (not after a backoff grown
towards the listener's default 30 s)."""


@dataclass
class ServiceState:
    """Everything the routes need, created once per process and reached through deps."""

    settings: ServiceSettings
    redis: Redis
    store: TaskStore
    comfy: ComfyClient
    submitter: Submitter
    endings: TaskEndings
    queue_view: QueueView
    health: HealthPublisher
    keys: RedisKeys
    task_logs: TaskLogSink
    speed: SpeedMeter
    profile: ModelProfiler
    submits: SubmitGate
    stream_hub: StreamHub
    outputs: OutputStore
    catalog: OutputCatalog
    metrics: ServiceMetrics
    lifecycle: Lifecycle
    warm_up: WarmUp
    """Call ``warm_up.request()`` after restarting ComfyUI: no task until it warmed up."""
    loops: Supervisor = field(default_factory=Supervisor)
    comfyui: ComfySupervisor | None = None
    """The ComfyUI this service started (``--comfyui-command``), if any."""

    async def queue_standing(self, task: TaskRecord) -> QueueStanding | None:
        """A service keeps no queue of its own: ComfyUI's is the node's."""
        return None


def service_lifespan(
    settings: ServiceSettings,
    templates: TemplateLibrary,
    warm_up: WarmUpWorkflow | None = None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await _start(settings, templates, warm_up)
        app.state.service = state
        logger.info("comfy-service ready", url=settings.base_url, comfyui=settings.comfyui_url)
        try:
            yield
        finally:
            await _stop(state)

    return lifespan


async def _start(
    settings: ServiceSettings, templates: TemplateLibrary, warm_up: WarmUpWorkflow | None
) -> ServiceState:
    keys = RedisKeys(settings.redis_prefix, cluster=is_cluster_url(settings.redis_url))
    redis = await connect_redis(settings.redis_target(), attempts=30)
    comfy = ComfyClient(settings.comfyui_url, timeout=settings.comfyui_timeout_s)
    metrics = ServiceMetrics(redis, keys, settings.node_id)
    store = TaskStore(
        redis,
        keys,
        retention_s=settings.retention_s,
        events_maxlen=settings.events_maxlen,
        on_end=metrics.outcomes.observe_end,
        on_retry=metrics.outcomes.observe_retry,
    )
    prompts = FollowedPrompts(redis, keys, settings.node_id)
    reachability = Reachability()
    speed = SpeedMeter(await last_measured_speed(redis, keys, settings.node_id))
    profile = ModelProfiler(
        speed,
        await last_learned_profile(redis, keys, settings.node_id),
        on_switch=metrics.observe_model_switch,
    )
    lifecycle = Lifecycle()
    memory = MemoryRelief(comfy, metrics.freed_memory)
    health = HealthPublisher(
        redis=redis,
        keys=keys,
        comfy=comfy,
        prompts=prompts,
        reachability=reachability,
        speed=speed,
        profile=profile,
        gpus=GpuReader(),
        lifecycle=lifecycle,
        node_id=settings.node_id,
        url=settings.base_url,
        version=version("comfy-service"),
        started_at=utc_now(),
        ttl_s=settings.health_ttl_s,
    )
    task_logs = install_task_log_sink(
        settings.redis_target(), keys, retention_s=settings.retention_s, level=settings.log_level
    )
    outputs = await make_store(settings.output_store())
    catalog = OutputCatalog(redis, keys)
    keeper = OutputKeeper(
        store=outputs,
        catalog=catalog,
        comfy=comfy,
        ttl_s=min(settings.outputs_ttl_s, settings.retention_s),
    )
    endings = TaskEndings(
        store=store,
        queue=TaskQueue(redis, keys, store),
        comfy=comfy,
        prompts=prompts,
        node_id=settings.node_id,
        keeper=keeper,
        memory=memory,
    )
    state = ServiceState(
        settings=settings,
        redis=redis,
        store=store,
        comfy=comfy,
        submitter=Submitter(
            store=store,
            stash=InputStash(store=outputs, catalog=catalog, hold_s=settings.retention_s),
            comfy=comfy,
            prompts=prompts,
            endings=endings,
            templates=templates,
            node_id=settings.node_id,
            # Stable across restarts, so events of prompts queued by a previous run reach us.
            client_id=_client_id(settings),
        ),
        endings=endings,
        queue_view=QueueView(comfy, settings.node_id),
        health=health,
        keys=keys,
        task_logs=task_logs,
        speed=speed,
        profile=profile,
        submits=SubmitGate(settings.max_concurrent_submits),
        stream_hub=StreamHub(
            settings.redis_target(), redis, max_streams=settings.max_streams, slot_key=keys.root
        ),
        outputs=outputs,
        catalog=catalog,
        metrics=metrics,
        lifecycle=lifecycle,
        warm_up=WarmUp(
            workflow=warm_up,
            comfy=comfy,
            lifecycle=lifecycle,
            memory=memory,
            client_id=f"{_client_id(settings)}-warm-up",  # its events are not the tracker's
            timeout_s=settings.warmup_timeout_s,
        ),
    )
    state.warm_up.request()  # before the first health document: no task until it passed
    _start_loops(settings, state, prompts, reachability)
    start_retention(state.loops, settings, state.catalog, outputs)
    return state


def _client_id(settings: ServiceSettings) -> str:
    return f"comfy-service-{settings.node_id}"


def _start_loops(
    settings: ServiceSettings,
    state: ServiceState,
    prompts: FollowedPrompts,
    reachability: Reachability,
) -> None:
    store, comfy, endings = state.store, state.comfy, state.endings
    reconciler = Reconciler(
        endings=endings,
        store=store,
        prompts=prompts,
        comfy=comfy,
        interval_s=settings.reconcile_interval_s,
    )

    async def after_connect() -> None:
        await state.warm_up.comfyui_connected()  # a new ComfyUI takes no task until warm
        await reconciler.reconcile()  # then: withdraw the prompts of attempts that are over
        await state.health.refresh_capabilities()  # ComfyUI may have restarted with new nodes

    limits = Limits(
        start_timeout_s=settings.start_timeout_s,
        stall_timeout_s=settings.stall_timeout_s,
        task_timeout_s=settings.task_timeout_s,
        comfyui_down_grace_s=settings.comfyui_down_grace_s,
    )

    async def watchdog() -> None:
        await watchdog_once(
            endings=endings, store=store, prompts=prompts, comfy=comfy,
            reachability=reachability, limits=limits,
        )  # fmt: skip

    # Frames of gateway prompts go to Redis beside the tracker, never in its way.
    frames = FrameRecorder(store=store, prompts=prompts, redis=state.redis, keys=state.keys)
    tracker = EventTracker(
        store=store,
        prompts=prompts,
        endings=endings,
        comfy=comfy,
        on_connected=after_connect,
        on_missed=reconciler.missed_events,
        speed=state.speed,
        profile=state.profile,
        loaders=state.health.loaders,
        logs_from_socket=settings.comfyui_argv is None,  # else from its output
    )
    listener = ComfyEventListener(
        settings.comfyui_url,
        _client_id(settings),
        ListenerConfig(
            max_backoff_s=WS_RECONNECT_MAX_S,
            silence_timeout_s=settings.ws_silence_timeout_s,
            ping_interval_s=min(10.0, settings.ws_silence_timeout_s / 3),
            # Previews then come as type 4, naming their prompt (routed to its client).
            supports_preview_metadata=True,
        ),
        on_frame=frames.offer,
    )

    async def follow_events(handle: LoopHandle) -> None:
        await listener.run(tracker.handle, on_handled=handle.working, on_failed=handle.failing)

    _supervise_comfyui(settings, state, tracker, prompts)
    state.loops.start("comfyui-events", follow_events)
    state.loops.start("comfyui-frames", frames.run)
    state.loops.start("event-streams", state.stream_hub.run)
    state.loops.start_every("health", settings.health_interval_s, state.health.publish_once)
    state.loops.start_every("watchdog", WATCHDOG_INTERVAL_S, watchdog)
    state.loops.start("reconcile", reconciler.run)
    if state.warm_up.configured:
        state.loops.start("warm-up", state.warm_up.run)


def _supervise_comfyui(
    settings: ServiceSettings, state: ServiceState, tracker: EventTracker, prompts: FollowedPrompts
) -> None:
    """Start ComfyUI as a child, if the settings name its command; recycle it if asked."""
    if (argv := settings.comfyui_argv) is None:
        return

    async def after_restart() -> None:
        if not state.warm_up.configured:  # else the warm-up requested at the restart does it
            state.lifecycle.warmed_up()

    state.comfyui = ComfySupervisor(
        argv,
        comfy=state.comfy,
        lifecycle=state.lifecycle,
        on_line=tracker.comfy_line,
        on_restart=state.warm_up.request,
        after_restart=after_restart,
        connections=lambda: tracker.connections,
    )
    state.loops.start("comfyui-process", state.comfyui.run)
    policy = RecyclePolicy.of(settings.recycle_after_tasks, settings.recycle_memory_growth_mb)
    if policy.enabled:
        recycler = Recycler(
            policy=policy,
            comfyui=state.comfyui,
            lifecycle=state.lifecycle,
            prompts=prompts,
            submits=state.submits,
        )
        state.loops.start("recycling", recycler.run)


async def _stop(state: ServiceState) -> None:
    await state.loops.stop()
    try:
        await state.health.withdraw()
    except Exception:
        logger.opt(exception=True).warning("could not withdraw the health key")
    await state.comfy.aclose()
    await state.outputs.aclose()
    logger.info("comfy-service stopped")
    state.task_logs.close()
    await state.redis.aclose()
