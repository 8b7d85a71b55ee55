from collections.abc import AsyncIterator, Callable, Sequence

import httpx
import pytest

from comfy_testkit.cluster import Cluster, Node
from comfy_testkit.emulator_control import EmulatorControl
from comfy_testkit.plugin import BalancerFactory, EmulatorFactory, ServiceFactory


@pytest.fixture
async def make_cluster(
    start_emulator: EmulatorFactory,
    start_service: ServiceFactory,
    start_balancer: BalancerFactory,
) -> AsyncIterator[Callable[..., Cluster]]:
    """Build a cluster: ``make(["a", "b"], emulator_args={"b": [...]}, balancer_args=[...])``."""
    opened: list[httpx.AsyncClient | EmulatorControl] = []

    def make(
        node_ids: Sequence[str] = ("a", "b"),
        *,
        emulator_args: dict[str, list[str]] | None = None,
        balancer_args: Sequence[str] = (),
        step_time_s: float = 0.01,
    ) -> Cluster:
        nodes = []
        for node_id in node_ids:
            emulator = start_emulator(
                f"emulator-{node_id}",
                step_time_s=step_time_s,
                extra_args=(emulator_args or {}).get(node_id, []),
            )
            service = start_service(emulator.url, node_id=node_id)
            control = EmulatorControl(emulator.url)
            opened.append(control)
            nodes.append(Node(node_id, emulator, service, control))
        balancer = start_balancer(extra_args=list(balancer_args))
        api = httpx.AsyncClient(base_url=balancer.url, timeout=15)
        opened.append(api)
        return Cluster(balancer, nodes, api)

    yield make
    for client in opened:
        await client.aclose()


@pytest.fixture
async def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    return make_cluster()
