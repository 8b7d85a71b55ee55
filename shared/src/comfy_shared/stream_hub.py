"""One reader of Redis streams for a whole process, fanning entries out to its followers.

Every open event stream (SSE) follows one task's Redis stream. Were each to wait on Redis
itself, each would hold a pooled connection for its blocking read, and a few hundred watchers
would starve the submits and the dispatcher of connections. Here a process has one
:class:`StreamHub`; it owns ONE dedicated connection (outside the process's pool, with a
socket timeout longer than its block time) on which it runs a single ``XREAD BLOCK`` over
every followed stream key, and it hands what arrives to each :class:`Follower` through a
bounded in-memory queue.

- **Joining.** A new follower first catches up on a pooled connection with non-blocking reads
  from its cursor, then joins the hub. So that it does not wait out the hub's block time for
  its first live entry, the hub's pending read is ended at once with ``CLIENT UNBLOCK`` (sent
  on a pooled connection) and issued again with the new key.
- **Bounded memory.** A follower's queue holds at most ``queue_entries``. A follower whose
  reader is too slow to keep up leaves the hub when its queue is full; once it has drained
  its queue it catches up from its own cursor again (Redis keeps the entries), so it loses
  and repeats nothing, and the hub never holds more than the queue for it.
- **Faults.** The hub runs as a supervised loop (``comfy_shared.loops``): when Redis goes away
  its read raises, the loop reports failing (``/readyz`` names it) and is started again,
  reconnecting by itself. Followers keep their cursors meanwhile, so they continue where
  they were, with no entry lost or repeated.
- **Redis Cluster.** One ``XREAD`` can only name keys of one slot: a cluster refuses keys of
  two slots (CROSSSLOT) even when one node serves both, so streams spread over slots would
  need a blocking connection per slot, in practice per task. Every stream a hub follows (a
  task's events and frames) is therefore in the key schema's shared slot, and the hub reads
  them all at once, from the primary that serves that slot (looked up at each connect, so a
  failover or a moved slot is followed once the loop starts again); ``CLIENT UNBLOCK`` goes to
  that node too. A key of another slot is refused when it is followed.
- **Admission.** At most ``max_streams`` followers at a time; one more raises
  :class:`TooManyStreams`, so a crowd of watchers is refused rather than degrading the server.
  The pooled commands streams make (opening checks, catch-ups) take turns, ``POOLED_READS``
  at a time, so a burst of new streams leaves the pool to submits and the dispatcher.
"""

from __future__ import annotations

import asyncio
from typing import Final, cast
from urllib.parse import urlsplit

from loguru import logger
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError
from redis.typing import KeyT, StreamIdT

from comfy_shared.errors import TooManyStreams
from comfy_shared.loops import LoopHandle
from comfy_shared.redis_client import RedisTarget, as_target, plain_url, redis_client
from comfy_shared.stream_clients import StreamClients

Entry = tuple[str, dict[str, str]]
"""A stream entry as Redis returns it: its id and its fields."""

BLOCK_S: Final = 5.0
"""How long one read of the hub waits for entries. It only bounds how soon an idle hub
notices that Redis went away: new followers wake the read, and entries end it at once."""
REPLY_MARGIN_S: Final = 5.0
"""A reply of the hub's connection may take its block time plus this; later, the connection
counts as lost (a read is never cut while it waits in Redis)."""
CONNECT_TIMEOUT_S: Final = 5.0
READ_COUNT: Final = 100
"""Entries per stream key in one read (hub and catch-up alike)."""
QUEUE_ENTRIES: Final = 64
"""Entries held for one follower before it falls back to reading from its cursor."""
CATCH_UP_RETRY_S: Final = 0.5
"""Pause before a follower tries a failed catch-up read again (Redis away)."""
UNBLOCK_ATTEMPTS: Final = 50
UNBLOCK_RETRY_S: Final = 0.002
RETRY_AFTER_S: Final = 5
POOLED_READS: Final = 8
"""Pooled connections that event streams use at once (opening checks, catch-ups, heartbeat
checks), so a burst of streams (say a thousand clients reconnecting after a restart) waits
its turn instead of draining the process's pool."""


def stream_order(entry_id: str) -> tuple[int, int]:
    """An entry id as a sortable pair (``1700000000000-3`` -> ``(1700000000000, 3)``)."""
    millis, _, sequence = entry_id.partition("-")
    return int(millis), int(sequence or 0)


def _entry_id(order: tuple[int, int]) -> str:
    return f"{order[0]}-{order[1]}"


class Follower:
    """One reader's position in one stream. Get entries with :meth:`next_entries`; always
    :meth:`close` it (idempotent), which frees its place in the hub."""

    def __init__(self, hub: StreamHub, key: str, after: str, queue_entries: int) -> None:
        self.key = key
        self.cursor = after
        """Id of the last entry handed to the reader."""
        self.live = False
        """Joined to the hub (else it catches up from ``cursor`` on the next call)."""
        self.queued_until = stream_order(after)
        """Id of the last entry the hub put into the queue (the hub's side)."""
        self.queue: asyncio.Queue[Entry] = asyncio.Queue(maxsize=queue_entries)
        self._hub = hub
        self._closed = False

    async def next_entries(self, timeout_s: float) -> list[Entry]:
        """The entries after the cursor, as soon as there are any (in order, each once);
        an empty list when ``timeout_s`` passes without one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            entries = await self._next_batch(deadline)
            if entries:
                self.cursor = entries[-1][0]
                return entries
            if loop.time() >= deadline:
                return []

    async def _next_batch(self, deadline: float) -> list[Entry]:
        if not self.queue.empty():
            return self._drain()
        if not self.live:
            return await self._catch_up(deadline)
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation.
            async with asyncio.timeout_at(deadline):
                first = await self.queue.get()
        except TimeoutError:
            return []
        return [first, *self._drain()]

    def _drain(self) -> list[Entry]:
        entries = []
        while not self.queue.empty():
            entries.append(self.queue.get_nowait())
        return entries

    async def _catch_up(self, deadline: float) -> list[Entry]:
        """Read from the cursor on a pooled connection, without blocking; join the hub once
        at the end of the stream."""
        try:
            entries = await self._hub.read_after(self.key, self.cursor)
        except RedisError as exc:
            # Redis is away (the hub's loop reports it): try again shortly, until the deadline.
            logger.debug("event stream catch-up failed", key=self.key, error=str(exc))
            remaining = deadline - asyncio.get_running_loop().time()
            await asyncio.sleep(max(0.0, min(CATCH_UP_RETRY_S, remaining)))
            return []
        if len(entries) < READ_COUNT and not self._closed:
            self._hub.join(self, after=entries[-1][0] if entries else self.cursor)
        return entries

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._hub.release(self)


class StreamHub:
    """The one reader of followed Redis streams in a process (see the module docstring).

    ``redis`` is the process's pooled client (catch-up reads, ``CLIENT UNBLOCK``);
    ``target`` is where the hub opens its own dedicated connection. :meth:`run` is the
    loop body for the process's :class:`~comfy_shared.loops.Supervisor`."""

    def __init__(
        self,
        target: RedisTarget | str,
        redis: Redis,
        *,
        max_streams: int,
        block_s: float = BLOCK_S,
        queue_entries: int = QUEUE_ENTRIES,
        slot_key: str = "",
    ) -> None:
        """``slot_key``: on a Redis Cluster, a key of the slot every followed stream is in
        (the key schema's ``root``)."""
        self._target = target
        self._redis = redis
        self._slot_key = slot_key
        self._reader_node: ClusterNode | None = None  # on a cluster: where the reader is
        self.max_streams = max_streams
        self._block_s = block_s
        self._queue_entries = queue_entries
        self._open = 0
        self._following: dict[str, set[Follower]] = {}
        self._generation = 0  # bumped whenever a follower joins
        self._read_generation = 0  # the generation the pending read was built from
        self._reading = False  # a read is pending on the dedicated connection
        self._client_id: int | None = None  # of the dedicated connection, while connected
        self._joined = asyncio.Event()
        self._waker: asyncio.Task[None] | None = None
        self.pooled_turn = asyncio.Semaphore(POOLED_READS)
        """Hold it around a pooled Redis command made for an event stream."""
        self.clients = StreamClients()
        """The process's event-stream clients (SSE, WebSocket), for its metrics."""

    @property
    def open_streams(self) -> int:
        return self._open

    def follow(self, key: str, after: str) -> Follower:
        """A follower of stream ``key`` from entry id ``after`` (exclusive).

        Raises :class:`TooManyStreams` when ``max_streams`` followers are open already."""
        if self._open >= self.max_streams:
            raise TooManyStreams(self.max_streams, RETRY_AFTER_S)
        if isinstance(self._redis, RedisCluster) and key_slot(key.encode()) != key_slot(
            self._slot_key.encode()
        ):
            raise ValueError(f"stream {key!r} is not in the hub's slot (of {self._slot_key!r})")
        self._open += 1
        return Follower(self, key, after, self._queue_entries)

    async def read_after(self, key: str, after: str) -> list[Entry]:
        """Up to ``READ_COUNT`` entries of ``key`` after ``after``, on a pooled connection."""
        async with self.pooled_turn:
            reply = cast(
                "list[tuple[str, list[Entry]]]",
                await self._redis.xread({key: after}, count=READ_COUNT),
            )
        return reply[0][1] if reply else []

    def join(self, follower: Follower, *, after: str) -> None:
        """The follower has read everything up to ``after``: the hub reads on for it."""
        follower.queued_until = stream_order(after)
        follower.live = True
        self._following.setdefault(follower.key, set()).add(follower)
        self._generation += 1
        self._joined.set()
        if self._waker is None or self._waker.done():
            self._waker = asyncio.create_task(self._wake_reader(), name="stream-hub-waker")

    def release(self, follower: Follower) -> None:
        self._leave(follower)
        self._open -= 1

    def _leave(self, follower: Follower) -> None:
        follower.live = False
        followers = self._following.get(follower.key)
        if followers is not None:
            followers.discard(follower)
            if not followers:
                del self._following[follower.key]

    async def run(self, handle: LoopHandle) -> None:
        """The supervised loop: connect, then read and hand out until cancelled. A lost
        connection raises, so the supervisor reports the loop failing and starts it again
        (which reconnects); followers keep their cursors meanwhile."""
        reader = await self._connect()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                self._client_id = await reader.client_id()
            handle.working()
            while True:
                await self.fan_out_once(reader)
                handle.working()
        finally:
            self._client_id = None
            if self._waker is not None:
                self._waker.cancel()
            await reader.aclose()

    async def _connect(self) -> Redis:
        target = self._target
        if isinstance(self._redis, RedisCluster):
            target = await self._slot_node_url(self._redis)
        return redis_client(
            target,
            max_connections=1,
            single_connection=True,  # one connection, in a pool of its own
            # No socket timeout: the hub bounds each command itself (asyncio.timeout), since
            # redis-py's write timeout (asyncio.wait_for on Python 3.11) can swallow a
            # cancellation, which would leave the loop unstoppable while it blocks.
            socket_timeout_s=None,
            connect_timeout_s=CONNECT_TIMEOUT_S,
            health_check_interval_s=0,
            # No silent reconnect (none of the factory's clients has one): the hub must learn
            # the new connection's client id.
        )

    async def _slot_node_url(self, cluster: RedisCluster) -> str:
        """The URL of the primary serving the followed streams' slot. The pooled client is
        asked about the slot first: after a failover its answer (a redirection or a lost
        connection) makes it learn the new primary before we look it up."""
        await cluster.exists(self._slot_key)
        node = cluster.get_node_from_key(self._slot_key)
        if node is None:
            raise RedisClusterException(f"no node serves the slot of {self._slot_key!r}")
        self._reader_node = node
        # Its credentials and TLS from the configured URL, the node's address.
        url = urlsplit(plain_url(as_target(self._target).url))
        credentials, at, _ = url.netloc.rpartition("@")
        return url._replace(netloc=f"{credentials}{at}{node.host}:{node.port}", path="").geturl()

    async def fan_out_once(self, reader: Redis) -> int:
        """One read over every followed stream, or, with none, a wait for the first follower
        (checking the connection with PING every block period). Returns the entries queued."""
        if not self._following:
            self._joined.clear()
            try:
                async with asyncio.timeout(self._block_s):
                    await self._joined.wait()
            except TimeoutError:
                async with asyncio.timeout(REPLY_MARGIN_S):
                    await reader.ping()
            return 0
        streams: dict[KeyT, StreamIdT] = {
            key: _entry_id(min(follower.queued_until for follower in followers))
            for key, followers in self._following.items()
        }
        self._read_generation = self._generation
        self._reading = True
        try:
            async with asyncio.timeout(self._block_s + REPLY_MARGIN_S):
                reply = cast(
                    "list[tuple[str, list[Entry]]] | None",
                    await reader.xread(
                        streams, count=READ_COUNT, block=round(self._block_s * 1000)
                    ),
                )
        finally:
            self._reading = False
        return sum(
            self._hand_out(key, stream_order(str(streams[key])), entries)
            for key, entries in reply or []
        )

    def _hand_out(self, key: str, read_from: tuple[int, int], entries: list[Entry]) -> int:
        queued = 0
        for follower in list(self._following.get(key, ())):
            if follower.queued_until < read_from:
                continue  # joined behind this read's start: the next read starts at it
            for entry in entries:
                order = stream_order(entry[0])
                if order <= follower.queued_until:
                    continue
                try:
                    follower.queue.put_nowait(entry)
                except asyncio.QueueFull:
                    # A slow reader: it re-reads from its cursor once it drained its queue.
                    logger.debug("event stream behind, it will catch up", key=key)
                    self._leave(follower)
                    break
                follower.queued_until = order
                queued += 1
        return queued

    async def _wake_reader(self) -> None:
        """End the pending read if it lacks a follower that joined since it was sent. A read
        sent but not yet blocked in Redis cannot be unblocked: try again a few times."""
        for _ in range(UNBLOCK_ATTEMPTS):
            if self._read_generation >= self._generation or not self._reading:
                return  # the next read includes every follower
            client_id = self._client_id
            try:
                if client_id is not None and await self._unblock(client_id):
                    return
            except RedisError:
                return  # Redis is away; the read ends with the connection
            await asyncio.sleep(UNBLOCK_RETRY_S)

    async def _unblock(self, client_id: int) -> bool:
        if self._reader_node is not None:  # on a cluster: the reader's node, not any node
            return bool(await self._redis.client_unblock(client_id, target_nodes=self._reader_node))
        return bool(await self._redis.client_unblock(client_id))
