"""pytest plugin (registered through the ``pytest11`` entry point) with the shared fixtures.

- ``redis_server``: one real Redis server per test session, on a free port.
- ``redis_url``: that server's URL, with the database flushed before each test.
- ``redis``: an async client (decode_responses) for the test, closed afterwards.
- ``redis_cluster``: a real Redis Cluster of three primaries per test session, started only
  when a test asks for it; ``redis_cluster_url`` is its ``redis+cluster://`` URL, every
  primary flushed before each test. A module runs its processes on it by overriding
  ``redis_url`` with ``redis_cluster_url`` (``tests/test_redis_cluster.py``).
- ``restartable_redis``: a Redis of the test's own that it may kill and start again; a module
  using it overrides ``redis_url`` with its URL.
- ``sentinel_group``: a primary, its replica and three sentinels of the test's own
  (``comfy_testkit.sentinel``), the replica in sync; the test may kill the primary.
- ``s3_server``: one real S3-compatible server (moto's server mode, its own process) per test
  session, on a free port; tests make their own buckets in it.
- ``process_log_dir``: where child processes of a test write their output.
- ``start_emulator`` / ``start_service`` / ``start_balancer``: factories that start real
  processes on free ports and stop them (and print their output if the test failed) at teardown.
- ``make_cluster`` / ``cluster``: emulator + service pairs and a balancer, with clients.

Services and balancers run with an internal token (``comfy_testkit.stack.TEST_INTERNAL_TOKEN``)
unless a test passes ``internal_token=None`` (or another token) to the factory; a client that
calls a service directly sends ``service.auth_headers``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync
from redis.asyncio import Redis
from selenium.webdriver import Chrome as WebDriver

from comfy_shared.redis_client import connect_redis
from comfy_stack.embedded_redis import RedisServer, start_redis_server
from comfy_testkit.api_keys import KeyClients
from comfy_testkit.browser import chromium
from comfy_testkit.cluster import Cluster, Node
from comfy_testkit.emulator_control import EmulatorControl
from comfy_testkit.redis_cluster import RedisClusterServers, start_redis_cluster
from comfy_testkit.restartable_redis import RestartableRedis
from comfy_testkit.s3 import S3Server, start_s3_server
from comfy_testkit.sentinel import SentinelGroup
from comfy_testkit.stack import (
    AUTH_HEADERS,
    TEST_INTERNAL_TOKEN,
    RunningComponent,
    start_balancer_process,
    start_emulator_process,
    start_service_process,
)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis_server(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3_server(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    with redis_sync.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    cluster = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisClusterServers) -> str:
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture
def restartable_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    """A Redis of the test's own, which it may kill and start again. A module that uses it
    overrides ``redis_url`` with its URL, so every process of the test talks to it, and those
    processes, started after it, are stopped before it."""
    server = RestartableRedis(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    group = SentinelGroup(tmp_path / "sentinel-group")
    try:
        group.wait_until_replicated()
        yield group
    finally:
        group.stop()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = await connect_redis(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def process_log_dir(tmp_path: Path) -> Path:
    path = tmp_path / "process-logs"
    path.mkdir()
    return path


EmulatorFactory = Callable[..., RunningComponent]
ServiceFactory = Callable[..., RunningComponent]


@pytest.fixture
def components(request: pytest.FixtureRequest) -> Iterator[list[RunningComponent]]:
    """Every process a test started; all are stopped at teardown, outputs shown on failure."""
    started: list[RunningComponent] = []
    yield started
    for component in reversed(started):
        component.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for component in started:
            print(f"--- output of {component.name} ---\n{component.process.output()}")


@pytest.fixture
def start_emulator(
    components: list[RunningComponent], process_log_dir: Path, tmp_path: Path
) -> EmulatorFactory:
    def start(name: str = "emulator", **kwargs: Any) -> RunningComponent:
        emulator = start_emulator_process(process_log_dir, tmp_path / name, name=name, **kwargs)
        components.append(emulator)
        return emulator

    return start


@pytest.fixture
def start_service(
    components: list[RunningComponent], process_log_dir: Path, redis_url: str
) -> ServiceFactory:
    def start(comfyui_url: str, node_id: str = "node-a", **kwargs: Any) -> RunningComponent:
        service = start_service_process(
            process_log_dir, redis_url=redis_url, comfyui_url=comfyui_url, node_id=node_id, **kwargs
        )
        components.append(service)
        return service

    return start


BalancerFactory = Callable[..., RunningComponent]


@pytest.fixture
def start_balancer(
    components: list[RunningComponent], process_log_dir: Path, redis_url: str
) -> BalancerFactory:
    def start(name: str = "balancer", **kwargs: Any) -> RunningComponent:
        balancer = start_balancer_process(process_log_dir, redis_url=redis_url, name=name, **kwargs)
        components.append(balancer)
        return balancer

    return start


CLIENT_LIMITS = httpx.Limits(keepalive_expiry=1.0)
"""uvicorn closes a connection idle for 5 s, httpx reuses one idle for up to 5 s: a request
sent just as the server closes its connection fails with ReadError. Idle connections are
dropped well before the server's timeout instead."""


@pytest.fixture
async def make_cluster(
    start_emulator: EmulatorFactory,
    start_service: ServiceFactory,
    start_balancer: BalancerFactory,
) -> AsyncIterator[Callable[..., Cluster]]:
    """Build a cluster: ``make(["a", "b"], emulator_args={"b": [...]}, balancer_args=[...])``;
    ``internal_token=None`` runs it with no internal token."""
    opened: list[httpx.AsyncClient | EmulatorControl] = []

    def make(
        node_ids: Sequence[str] = ("a", "b"),
        *,
        emulator_args: dict[str, list[str]] | None = None,
        balancer_args: Sequence[str] = (),
        service_args: Sequence[str] = (),
        step_time_s: float = 0.01,
        internal_token: str | None = TEST_INTERNAL_TOKEN,
    ) -> Cluster:
        nodes = []
        for node_id in node_ids:
            emulator = start_emulator(
                f"emulator-{node_id}",
                step_time_s=step_time_s,
                extra_args=(emulator_args or {}).get(node_id, []),
            )
            service = start_service(
                emulator.url,
                node_id=node_id,
                internal_token=internal_token,
                extra_args=list(service_args),
            )
            control = EmulatorControl(emulator.url)
            opened.append(control)
            nodes.append(Node(node_id, emulator, service, control))
        balancer = start_balancer(extra_args=list(balancer_args), internal_token=internal_token)
        api = httpx.AsyncClient(
            base_url=balancer.url, timeout=15, headers=AUTH_HEADERS, limits=CLIENT_LIMITS
        )
        opened.append(api)
        return Cluster(balancer, nodes, api)

    yield make
    for client in opened:
        await client.aclose()


@pytest.fixture
async def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    return make_cluster()


@pytest.fixture
async def keys(cluster: Cluster) -> AsyncIterator[KeyClients]:
    """``await keys.make("alice")``: API keys made on ``cluster`` (the test module's own
    cluster where it defines one), each a client that presents its key."""
    async with KeyClients(cluster) as made:
        yield made


@pytest.fixture
def browsers(tmp_path: Path) -> Iterator[Callable[[str], WebDriver]]:
    """``browsers("alice-laptop")``: a headless Chromium with its own profile (its own
    cookies), quit at the end of the test."""
    opened: list[Any] = []

    def open_browser(name: str) -> WebDriver:
        context = chromium(tmp_path / f"profile-{name}")
        opened.append(context)
        return context.__enter__()

    yield open_browser
    for context in reversed(opened):
        context.__exit__(None, None, None)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item, so fixtures can tell whether it failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
