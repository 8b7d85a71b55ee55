"""The gateway WebSocket's relay in one balancer process: the open sockets, grouped by user
(tenant) and client id, and the prompts owed to them.

- **Who gets what.** A prompt's frames go to the sockets whose client id is the prompt's
  ``client_id`` (its ``PromptOrigin``) and whose user is the task's tenant, never another
  user's and never another client id's (ComfyUI's rule; a second script of the same user
  must not see the first one's ``executing {node: null}``). ``status`` goes to every socket
  of the user, with ``queue_remaining`` = the user's unfinished tasks over the whole fleet
  (``TaskStore.count_unfinished``): on enqueue, when a prompt starts, when it ends or is
  deleted.
- **Cheap per socket.** Each prompt is followed once per process, whatever the number of
  its sockets, through the process's one stream reader (``StreamHub``); a socket is an
  entry in a set and a queue (``ws_socket``). Only prompts whose client has a socket here
  are followed; a client's prompts stop being followed when its last socket leaves, and are
  taken up again, from where they are, when one comes back.
- **Places in the queue.** A waiting prompt's client is told how many tasks start before it,
  fleet-wide (``TaskQueue.position``), as a progress text on the prompt's output nodes ("In
  the queue: 3 ahead of you"): when it arrives, then at every rescan when the figure changed.
- **Finding new prompts.** The ``task-queued`` and ``task-ended`` signals say at once that a
  user's queue changed; every ``RESCAN_S`` each user's unfinished tasks are read again, so a
  lost signal costs latency, never a prompt.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from functools import partial
from typing import Final

from loguru import logger
from redis.asyncio import Redis

from comfy_balancer.gateway import relay_messages as messages
from comfy_balancer.gateway.live import LiveOutputs
from comfy_balancer.gateway.naming import present_node_output as public_output
from comfy_balancer.gateway.relay_task import (
    FRAME_GRACE_S,
    OutputRewrite,
    RelayTools,
    TaskRelay,
)
from comfy_balancer.gateway.ws_socket import ClientSocket
from comfy_shared.loops import LoopHandle
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.signals import Signals
from comfy_shared.stream_hub import StreamHub
from comfy_shared.task_queue import TASK_QUEUED, TaskQueue
from comfy_shared.task_store import TASK_ENDED, TaskStore

RESCAN_S: Final = 2.0
"""How often each user's unfinished tasks are read again (the safety net under the signals)."""
SIGNAL_BATCH: Final = 200
"""Signals handled together at most: a classroom pressing Run at once is one burst, read in
a few round trips, not a few per prompt."""
ORIGIN_HEAD_BYTES: Final = 512
_CLIENT_ID_FIELD: Final = '{"client_id":'


def client_id_in(head: str) -> tuple[bool, str | None]:
    """Whether the head of a stored ``PromptOrigin`` holds its client id (its first field,
    as pydantic writes fields in order), and the client id (None: none, or no origin)."""
    if not head.startswith(_CLIENT_ID_FIELD):
        return True, None
    try:
        value, _ = json.JSONDecoder().raw_decode(head, len(_CLIENT_ID_FIELD))
    except ValueError:
        return False, None  # cut short: longer than the head
    return True, value if isinstance(value, str) else None


class Room:
    """One user's sockets in this process, the user's unfinished tasks as far as known here
    (task id -> its client id; None: not sent through the gateway), and the relays."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.sockets: set[ClientSocket] = set()
        self.clients: dict[str, set[ClientSocket]] = {}
        self.known: dict[str, str | None] = {}
        self.relays: dict[str, TaskRelay] = {}
        self.learned = False
        self.lock = asyncio.Lock()
        self.joining = 0  # sockets being attached: the room stays while they are

    def of_client(self, client_id: str) -> Iterable[ClientSocket]:
        return self.clients.get(client_id, ())

    def add(self, socket: ClientSocket) -> None:
        self.sockets.add(socket)
        self.clients.setdefault(socket.client_id, set()).add(socket)

    def remove(self, socket: ClientSocket) -> bool:
        """Forget a socket; True if it was its client's last one."""
        self.sockets.discard(socket)
        sockets = self.clients.get(socket.client_id, set())
        sockets.discard(socket)
        if sockets:
            return False
        self.clients.pop(socket.client_id, None)
        return True

    def tell_queue(self, status: str, *, in_order_for: str | None = None) -> None:
        """A ``status`` to every socket of the user: in its place among the frames for the
        sockets of client ``in_order_for`` (it belongs to that client's prompt's sequence), a
        notice that a newer one may replace for the others."""
        for socket in self.sockets:
            if socket.client_id == in_order_for:
                socket.send_status(status)
            else:
                socket.send_queue_notice(status)


class GatewayRelay:
    def __init__(
        self,
        *,
        store: TaskStore,
        queue: TaskQueue,
        redis: Redis,
        keys: RedisKeys,
        hub: StreamHub,
        rewrite_output: OutputRewrite = public_output,
        live: LiveOutputs | None = None,
        rescan_s: float = RESCAN_S,
        frame_grace_s: float = FRAME_GRACE_S,
    ) -> None:
        """``live``: where the files an ``executed`` frame names are announced, so ``/view``
        serves them from their node until they are stored."""
        self._store = store
        self._redis = redis
        self._keys = keys
        self._signals = Signals(redis, keys)
        self._tools = RelayTools(
            store, queue, redis, hub, keys, rewrite_output, frame_grace_s, live
        )
        self._rescan_s = rescan_s
        self._rooms: dict[str, Room] = {}
        self._running: dict[TaskRelay, asyncio.Task[None]] = {}

    # --- sockets ---------------------------------------------------------------------------

    async def attach(self, socket: ClientSocket) -> None:
        """Register a new socket and queue its greeting: ``status`` with its ``sid`` and the
        user's true ``queue_remaining``, then ``executing`` for each prompt of its client
        running now."""
        room = self._rooms.setdefault(socket.tenant, Room(socket.tenant))
        room.joining += 1
        try:
            async with room.lock:
                remaining = await self._store.count_unfinished(room.tenant)
                if not room.learned:
                    await self._learn(room)
                if socket.client_id not in room.clients:
                    await self._take_up(room, socket.client_id)
                room.add(socket)
        finally:
            room.joining -= 1
            self._close_if_empty(room)
        socket.send_status(messages.status(remaining, sid=socket.client_id))
        for relay in room.relays.values():
            node = relay.running_node if relay.client_id == socket.client_id else None
            if node is not None:
                socket.send(messages.executing(relay.task_id, node))

    def detach(self, socket: ClientSocket) -> None:
        room = self._rooms.get(socket.tenant)
        if room is None or not room.remove(socket):
            return
        for relay in [r for r in room.relays.values() if r.client_id == socket.client_id]:
            self._stop(room, relay)
        self._close_if_empty(room)

    def _close_if_empty(self, room: Room) -> None:
        if not room.sockets and not room.joining and self._rooms.get(room.tenant) is room:
            for relay in list(room.relays.values()):
                self._stop(room, relay)
            del self._rooms[room.tenant]

    async def _learn(self, room: Room) -> None:
        """What the user has unfinished now (not news: no status is sent for it)."""
        ids = await self._store.unfinished_ids(room.tenant)
        room.known.update(await self._clients_of(ids))
        room.learned = True

    async def _take_up(self, room: Room, client_id: str) -> None:
        """Follow the prompts a client owns that are under way, from where they are."""
        for task_id, owner in list(room.known.items()):
            if owner == client_id and task_id not in room.relays:
                await self._relay(room, task_id, client_id, from_now=True)

    # --- prompts ---------------------------------------------------------------------------

    async def _relay(self, room: Room, task_id: str, client_id: str, *, from_now: bool) -> None:
        relay = TaskRelay(task_id, client_id, room, self._tools)
        if not await relay.open(from_now=from_now):
            room.known.pop(task_id, None)  # gone already
            return
        room.relays[task_id] = relay
        task = asyncio.create_task(relay.run(), name=f"gateway-relay:{task_id}")
        self._running[relay] = task
        task.add_done_callback(partial(self._relay_done, room, relay))

    def _relay_done(self, room: Room, relay: TaskRelay, task: asyncio.Task[None]) -> None:
        self._running.pop(relay, None)
        if room.relays.get(relay.task_id) is relay:
            del room.relays[relay.task_id]
            if relay.ended:
                room.known.pop(relay.task_id, None)
        if not task.cancelled() and task.exception() is not None:
            logger.opt(exception=task.exception()).error(
                "gateway relay failed", task_id=relay.task_id
            )

    def _stop(self, room: Room, relay: TaskRelay) -> None:
        room.relays.pop(relay.task_id, None)
        task = self._running.pop(relay, None)
        if task is not None:
            task.cancel()

    async def stop(self) -> None:
        """Stop every relay (at shutdown; the sockets are closed by then)."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._rooms.clear()

    # --- news ------------------------------------------------------------------------------

    async def run(self, handle: LoopHandle) -> None:
        """The ``gateway-relay`` loop: signals as they come, and a rescan every
        ``rescan_s``."""
        loop = asyncio.get_running_loop()
        async with self._signals.subscribe(TASK_QUEUED, TASK_ENDED) as signals:
            handle.working()
            next_scan = loop.time() + self._rescan_s
            while True:
                news = await signals.next(max(0.0, next_scan - loop.time()))
                if news is not None:
                    await self.on_signals([news, *await signals.arrived(SIGNAL_BATCH - 1)])
                if loop.time() >= next_scan:
                    await self.rescan()
                    await self.tell_places()
                    next_scan = loop.time() + self._rescan_s
                handle.working()

    async def on_signals(self, signals: list[tuple[str, str]]) -> None:
        """Signals in the order they came: the queued tasks of a burst are read together."""
        queued = [task_id for name, task_id in signals if name == TASK_QUEUED]
        if queued:
            await self._queued(queued)
        for name, task_id in signals:
            if name == TASK_ENDED:
                await self._ended(task_id)

    async def _queued(self, task_ids: list[str]) -> None:
        known = {task_id for room in self._rooms.values() for task_id in room.known}
        # Nobody here to tell, or tasks back in the queue (not news to the user).
        news = [task_id for task_id in dict.fromkeys(task_ids) if task_id not in known]
        if not self._rooms or not news:
            return
        by_tenant: dict[str, list[str]] = {}
        for task_id, record in (await self._store.find_many(news)).items():
            if record is not None and record.tenant in self._rooms:
                by_tenant.setdefault(record.tenant, []).append(task_id)
        for tenant, arrived in by_tenant.items():
            room = self._rooms.get(tenant)
            if room is None:
                continue
            async with room.lock:
                new = [task_id for task_id in arrived if task_id not in room.known]
                if new:
                    await self._arrived(room, await self._clients_of(new))

    async def _ended(self, task_id: str) -> None:
        for room in list(self._rooms.values()):
            if task_id in room.known and task_id not in room.relays:
                del room.known[task_id]  # a relayed prompt closes itself, status included
                await self._tell_queue(room)

    async def rescan(self) -> None:
        """Read each user's unfinished tasks again: those not seen arrive, those gone end."""
        for room in list(self._rooms.values()):
            async with room.lock:
                ids = await self._store.unfinished_ids(room.tenant)
                new = [task_id for task_id in ids if task_id not in room.known]
                gone = set(room.known) - set(ids) - set(room.relays)
                for task_id in gone:
                    del room.known[task_id]
                if new:
                    await self._arrived(room, await self._clients_of(new))
                elif gone:
                    await self._tell_queue(room)

    async def tell_places(self) -> None:
        """Tell each waiting prompt followed here its place, if it changed."""
        for room in list(self._rooms.values()):
            for relay in list(room.relays.values()):
                await relay.tell_place()

    async def _arrived(self, room: Room, owners: dict[str, str | None]) -> None:
        """New tasks of the user: the queue grew; prompts of a client here are followed
        from their first frame."""
        room.known.update(owners)
        await self._tell_queue(room)  # first: the prompts' own frames come after it
        await asyncio.gather(
            *(
                self._relay(room, task_id, client_id, from_now=False)
                for task_id, client_id in owners.items()
                if client_id is not None and client_id in room.clients
            )
        )

    async def _tell_queue(self, room: Room) -> None:
        remaining = await self._store.count_unfinished(room.tenant)
        room.tell_queue(messages.status(remaining))

    async def _clients_of(self, task_ids: list[str]) -> dict[str, str | None]:
        """Each task's client id (None: not a gateway prompt). Only the head of each origin
        is read: its ``extra_data`` carries the UI workflow, often hundreds of kB, and a
        user's queue may hold thousands of prompts."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.getrange(self._keys.task_origin(task_id), 0, ORIGIN_HEAD_BYTES - 1)
            heads = await pipe.execute()
        owners: dict[str, str | None] = {}
        unread = []
        for task_id, head in zip(task_ids, heads, strict=True):
            read, owners[task_id] = client_id_in(head)
            if not read:
                unread.append(task_id)
        if unread:  # a client id longer than the head: read those origins whole
            origins = await self._store.get_origins(unread)
            owners |= {t: origin.client_id if origin else None for t, origin in origins.items()}
        return owners
