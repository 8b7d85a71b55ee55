"""Start-up and shutdown of a comfy-balancer process.

Start: Redis (retried until it answers), the clients, then the loops: the dispatcher, the
webhook delivery (every replica delivers; the outbox's leases keep them apart) and the
ComfyUI gateway's WebSocket relay. Stop: the
loops first (placements being sent are cancelled; the next cycle of any replica re-sends
them), then the clients. Nothing else lives in the process: every fact is in Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

import httpx
from fastapi import FastAPI
from loguru import logger
from pydantic import SecretStr
from redis.asyncio import Redis

from comfy_balancer.auth.callers import Authenticator
from comfy_balancer.auth.keys import KeyStore
from comfy_balancer.auth.rate_limit import SubmitRateLimiter
from comfy_balancer.budgets import Budgets
from comfy_balancer.costs import CostModel
from comfy_balancer.dispatcher import Dispatcher
from comfy_balancer.eta import PaceReader
from comfy_balancer.fleet_catalog import FleetCatalog
from comfy_balancer.gateway.live import LiveOutputs
from comfy_balancer.gateway.relay import GatewayRelay
from comfy_balancer.intake import TaskIntake
from comfy_balancer.metrics import BalancerMetrics, FleetLease
from comfy_balancer.registry import NodeRegistry
from comfy_balancer.scheduling import make_strategy
from comfy_balancer.sending import Sender
from comfy_balancer.service_client import ServiceClient
from comfy_balancer.settings import BalancerSettings
from comfy_balancer.sweep import SweepRules
from comfy_balancer.usage import UsageBook
from comfy_balancer.webhooks.delivery import WebhookDelivery
from comfy_balancer.webhooks.outbox import Outbox
from comfy_balancer.webhooks.submit import WebhookGuard
from comfy_shared.api.schemas import QueueStanding
from comfy_shared.loops import LoopHandle, Supervisor
from comfy_shared.models import TaskRecord
from comfy_shared.outputs import make_store
from comfy_shared.outputs.catalog import OutputCatalog
from comfy_shared.outputs.inputs import InputStash
from comfy_shared.outputs.retention import start_retention
from comfy_shared.outputs.store import OutputStore
from comfy_shared.redis_client import connect_redis, is_cluster_url
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.signals import Signals
from comfy_shared.stream_hub import StreamHub
from comfy_shared.task_logs import TaskLogSink, install_task_log_sink
from comfy_shared.task_queue import TaskQueue
from comfy_shared.task_store import TaskStore
from comfy_shared.workflows import TemplateLibrary


@dataclass
class BalancerState:
    settings: BalancerSettings
    redis: Redis
    store: TaskStore
    queue: TaskQueue
    registry: NodeRegistry
    fleet_catalog: FleetCatalog
    intake: TaskIntake
    auth: Authenticator
    keystore: KeyStore
    dispatcher: Dispatcher
    pace: PaceReader
    nodes_client: ServiceClient
    http: httpx.AsyncClient
    keys: RedisKeys
    task_logs: TaskLogSink
    stream_hub: StreamHub
    usage: UsageBook
    outputs: OutputStore
    catalog: OutputCatalog
    webhooks: WebhookGuard
    outbox: Outbox
    webhook_http: httpx.AsyncClient
    gateway: GatewayRelay
    metrics: BalancerMetrics
    fleet_lease: FleetLease
    loops: Supervisor = field(default_factory=Supervisor)

    async def queue_standing(self, task: TaskRecord) -> QueueStanding | None:
        position = await self.queue.position(task.id)
        if position is None:
            return None
        return QueueStanding(
            queue_position=position, eta=await self.pace.expected_times(task, position)
        )


def balancer_lifespan(
    settings: BalancerSettings, templates: TemplateLibrary
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await _start(settings, templates)
        app.state.balancer = state
        logger.info("comfy-balancer ready", strategy=settings.strategy, port=settings.port)
        try:
            yield
        finally:
            await _stop(state)

    return lifespan


async def _start(settings: BalancerSettings, templates: TemplateLibrary) -> BalancerState:
    keys = RedisKeys(settings.redis_prefix, cluster=is_cluster_url(settings.redis_url))
    redis = await connect_redis(settings.redis_target(), attempts=30)
    metrics = BalancerMetrics()
    store = TaskStore(
        redis,
        keys,
        retention_s=settings.retention_s,
        events_maxlen=settings.events_maxlen,
        on_end=metrics.outcomes.observe_end,
        on_retry=metrics.outcomes.observe_retry,
    )
    queue = TaskQueue(
        redis,
        keys,
        store,
        batch_max_wait_s=settings.batch_max_wait_s,
        replication=settings.replication(),
    )
    registry = NodeRegistry(
        redis, keys, slots=settings.slots_per_node, allowed=frozenset(settings.nodes)
    )
    http = httpx.AsyncClient(timeout=settings.dispatch_timeout_s)
    token = settings.internal_token
    nodes_client = ServiceClient(http, internal_token=token.get_secret_value() if token else None)
    policy = settings.retry_policy()
    costs = CostModel(redis, keys)
    usage = UsageBook(redis, keys)
    outputs = await make_store(settings.output_store())
    catalog = OutputCatalog(redis, keys)
    fleet_catalog = FleetCatalog(redis, keys, registry, merge=settings.object_info_merge)
    intake = TaskIntake(
        store=store,
        stash=InputStash(store=outputs, catalog=catalog, hold_s=settings.retention_s),
        queue=queue,
        registry=registry,
        fleet_catalog=fleet_catalog,
        nodes_client=nodes_client,
        policy=policy,
        templates=templates,
        max_queue=settings.max_queue,
        fair=settings.queue_policy == "fair",
        costs=costs,
        rate_limiter=SubmitRateLimiter(redis, keys),
        budgets=Budgets(usage),
        metrics=metrics,
    )
    keystore = KeyStore(redis, keys)
    admin_key = settings.admin_key.get_secret_value() if settings.admin_key else None
    auth = Authenticator(enabled=settings.auth == "on", admin_secret=admin_key, store=keystore)
    dispatcher = Dispatcher(
        store=store,
        queue=queue,
        registry=registry,
        sender=Sender(store=store, queue=queue, registry=registry, nodes_client=nodes_client),
        signals=Signals(redis, keys),
        strategy=make_strategy(settings.strategy, affinity_window_s=settings.affinity_window_s),
        policy=policy,
        lookahead=settings.lookahead,
        rules=SweepRules(
            dispatch_timeout_ms=settings.dispatch_timeout_s * 1000,
            comfyui_down_grace_s=settings.comfyui_down_grace_s,
        ),
        costs=costs,
        metrics=metrics,
        prefetch_lead_s=settings.prefetch_lead_s,
    )
    task_logs = install_task_log_sink(
        settings.redis_target(), keys, retention_s=settings.retention_s, level=settings.log_level
    )
    stream_hub = StreamHub(
        settings.redis_target(), redis, max_streams=settings.max_streams, slot_key=keys.root
    )
    state = BalancerState(
        settings=settings,
        redis=redis,
        store=store,
        queue=queue,
        registry=registry,
        fleet_catalog=fleet_catalog,
        intake=intake,
        auth=auth,
        keystore=keystore,
        dispatcher=dispatcher,
        pace=PaceReader(registry, queue, store),
        nodes_client=nodes_client,
        http=http,
        keys=keys,
        task_logs=task_logs,
        stream_hub=stream_hub,
        usage=usage,
        outputs=outputs,
        catalog=catalog,
        webhooks=WebhookGuard(
            allow=settings.webhook_allow_list(),
            deployment_secret=_secret(settings.webhook_secret),
            keys=keystore,
        ),
        outbox=Outbox(redis, keys),
        # Its own client: no proxy from the environment (it would resolve the name again),
        # no redirects, nothing shared with the calls to nodes.
        webhook_http=httpx.AsyncClient(follow_redirects=False, trust_env=False),
        gateway=GatewayRelay(
            store=store,
            queue=queue,
            redis=redis,
            keys=keys,
            hub=stream_hub,
            live=LiveOutputs(redis, keys, retention_s=settings.retention_s),
        ),
        metrics=metrics,
        fleet_lease=FleetLease(redis, keys.metrics_lease()),
    )
    state.loops.start("event-streams", state.stream_hub.run)
    state.loops.start("gateway-relay", state.gateway.run)
    start_retention(state.loops, settings, state.catalog, outputs)
    _start_webhook_delivery(state)
    if settings.dispatch:

        async def dispatch(handle: LoopHandle) -> None:
            await dispatcher.run(handle, settings.sweep_interval_s)

        state.loops.start("dispatcher", dispatch)
    else:
        logger.info("not placing tasks: this replica only serves the API")
    return state


def _start_webhook_delivery(state: BalancerState) -> None:
    settings = state.settings
    delivery = WebhookDelivery(
        outbox=state.outbox,
        http=state.webhook_http,
        secret_of=state.webhooks.secret_of,
        allow=settings.webhook_allow_list(),
        delays_s=settings.webhook_retry_delays_s,
        timeout_s=settings.webhook_timeout_s,
    )

    async def deliver(handle: LoopHandle) -> None:
        await delivery.run(handle, settings.webhook_poll_s)

    state.loops.start("webhooks", deliver)


def _secret(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


async def _stop(state: BalancerState) -> None:
    await state.loops.stop()
    await state.gateway.stop()
    await state.dispatcher.stop()
    await state.http.aclose()
    await state.outputs.aclose()
    await state.webhook_http.aclose()
    await state.fleet_lease.release()
    logger.info("comfy-balancer stopped")
    state.task_logs.close()
    await state.redis.aclose()
