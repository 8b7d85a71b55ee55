"""The Redis key schema: every key the project uses is built here, from one configurable prefix.

Key (``{p}`` = prefix)        Type    Writer          TTL / notes
---------------------------  ------  --------------  ---------------------------------------------
{p}:task:{id}                hash    task store      none while active; retention once terminal.
                                                     Fields: status, version (bumped by every
                                                     write), record (TaskRecord JSON); node
                                                     and workflow (the record's node_id and
                                                     workflow, '' for none: what a listing
                                                     filters on; absent on older tasks)
{p}:task:{id}:prompt         string  task store      as the task; the graph the node runs (a
                                                     template is expanded once, at intake)
{p}:task:{id}:inputs         hash    task store      until the task ends (deleted then); file
                                                     name -> base64 bytes, uploaded by the node
{p}:task:{id}:events         stream  task store      as the task; capped with MAXLEN ~
{p}:task:{id}:logs           list    log capture     as the task; capped with LTRIM
{p}:task:{id}:origin         string  task store      as the task; a prompt sent through the ComfyUI
                                                     gateway: its client_id, number, extra_data
                                                     (PromptOrigin JSON; absent for /api/v1 tasks)
{p}:task:{id}:frames         stream  task store      retention after each append, 5 min once the
                                     (appended by    task ended; capped with MAXLEN ~; a gateway
                                     comfy-service)  prompt's ComfyUI messages and previews, its
                                                     node's prompt id replaced by the task id
                                                     (comfy_shared.frames)
{p}:task:{id}:submit:{n}     string  task store      retention; node id that sent attempt n to
                                                     ComfyUI (SET NX: an attempt runs once)
{p}:tasks:recent             zset    task store      none; task id scored by created ms,
                                                     trimmed to the retention window
{p}:tenant:{tenant}:recent   zset    task store      none; the tenant's task ids by created ms,
                                                     trimmed to the retention window
{p}:tenant:{tenant}:unfinished  zset  task store     none; the tenant's tasks not ended yet, by
                                                     created ms (added at creation, removed by the
                                                     write that ends the task): queue_remaining
{p}:idempotency:{tenant}:{key}  string  task store   24 h; {"task_id", "fingerprint"} JSON
{p}:apikeys                  hash    key store       none; key id -> ApiKey JSON (no secret)
{p}:apikeys:secrets          hash    key store       none; sha256 of a secret -> key id
{p}:queue:usage              hash    task queue      none; "<key id>:queued|running|max_running":
                                                     each API key's tasks waiting and placed;
                                                     "group:<group>:running"; "queued_gpu_s"
{p}:key:{key}:bucket         hash    rate limiter    ~2 min; token bucket of submits
{p}:node:{node}:health       string  comfy-service   ~3 health intervals: expiry = node dead
{p}:node:{node}:speed        string  comfy-service   none; the node's measured speed, kept
                                                     across restarts however long they take
{p}:node:{node}:profile      string  comfy-service   none; what the node learned of its models and
                                                     workflow shapes (NodeProfile JSON with
                                                     ``resident`` empty, plus ``model_bytes``),
                                                     written when it changed, read at start
{p}:node:{node}:object_info  hash    comfy-service   ~3 health intervals, refreshed with the health
                                                     document, rewritten only when it changed: the
                                                     node's whole GET /object_info
                                                     (node_object_info.py): sha256 (as in the
                                                     health document's capabilities), encoding
                                                     (zlib+base64), json_bytes, data
{p}:node:{node}:prompts      hash    comfy-service   none; the prompts the node sent to its
                                                     ComfyUI and still follows: prompt id ->
                                                     {"task_id", "attempt"} JSON
{p}:nodes                    zset    comfy-service   none; node id scored by last seen ms
{p}:nodes:drained            set     balancer API    none; ids of the nodes an admin drained:
                                                     they take no new task until undrained
{p}:autoscaler:{scope}:retiring  set  autoscaler    none; ids of the nodes the autoscaler drained
                                                     to take down (it undrains only these)
{p}:queue:pending            zset    task queue      none; task id scored in run order: band rank
                                                     * 1e12 + fair tag (see task_queue)
{p}:queue:since              zset    task queue      none; pending task id scored by enqueue ms
{p}:queue:band-since         zset    task queue      none; pending task id scored by band rank
                                                     * 1e13 + enqueue ms (each band's oldest)
{p}:queue:aging              zset    task queue      none; pending batch task id by enqueue ms
{p}:queue:places             hash    task queue      none; task id -> "score|enqueue ms|key|
                                                     group|flow key|order in flow|GPU-seconds|
                                                     weight"
                                                     of a queued or placed task (it goes back to
                                                     its old place); dropped with its slot
{p}:queue:vtime              hash    task queue      none; band rank -> its virtual time
{p}:queue:flows              hash    task queue      none; "<band rank>:<flow>" -> the tag its
                                                     next task starts at
{p}:queue:flow:{n}:{flow}    zset    task queue      none; a flow's waiting task ids in their own
                                                     order (-priority * 1e12 + arrival sequence)
{p}:queue:groups             hash    balancer API    none; group -> most tasks it runs at once
{p}:queue:seq                string  task queue      none; arrival counter
{p}:gateway:numbers          string  gateway         none; the last ComfyUI prompt `number` given
{p}:gateway:uploads:{tenant} hash    gateway         the retention after the tenant's last upload;
                                                     "<type>/<subfolder>/<name>" -> {"sha256",
                                                     "size", "expires_ms"} JSON: files sent to
                                                     /upload/image (bytes in the output store,
                                                     held there until expires_ms)
{p}:gateway:live:{id}        set     gateway (relay) the task retention; ["<type>", "<subfolder>",
                                                     "<filename>"] JSON of each file a running
                                                     prompt's executed events announced (/view
                                                     fetches those from its node until stored)
{p}:costs:shapes             hash    balancer sweep  none, at most 10,000 fields; graph shape ->
                                                     "<GPU-seconds>|<runs>" learned from runs
{p}:node:{node}:dispatched   zset    task queue      none; task ids the balancer placed on the
                                                     node, scored by claim ms (its used slots)
{p}:node:{node}:failures     zset    comfy-balancer  ~10 min; recent failure times on the node
{p}:usage:tenant:{tenant}:{day}  hash  task store    ~400 days; what the tenant's tasks that ended
                                                     on that UTC day (yyyy-mm-dd) used, added by
                                                     the write of their terminal status:
                                                     "tasks:<status>", "gpu_s:total",
                                                     "gpu_s:workflow:<name or graph>",
                                                     "gpu_s:node:<node>" (HINCRBYFLOAT)
{p}:usage:key:{key}:{day}    hash    task store      ~400 days; the same day's "gpu_s:total" and
                                                     "tasks:<status>" of one API key (budgets)
{p}:usage:tenants            zset    task store      none; tenant -> the last day (yyyymmdd) it
                                                     had a task end
{p}:outputs:refs             hash    output catalog  none; sha256 of a stored output -> how many
                                                     tasks hold it (gone at 0: the blob is deleted)
{p}:outputs:sizes            hash    output catalog  none; sha256 -> bytes, while held
{p}:outputs:bytes            string  output catalog  none; bytes of every held blob, counted once
{p}:outputs:expiry           zset    output catalog  none; task id -> ms its outputs expire at
{p}:outputs:finished         zset    output catalog  none; task id -> ms it finished (the size cap
                                                     releases the oldest first)
{p}:outputs:task:{id}        list    output catalog  until released; the sha256 of each output of
                                                     the task, in order (absent: expired, 410)
{p}:outputs:task:{id}:inputs list    output catalog  until the task ends; the sha256 of each of
                                                     its input files (in expiry under "{id}:inputs",
                                                     made due by the task's end; not in finished)
{p}:outputs:deleting         hash    output catalog  none; sha256 -> ms its deletion started: a
                                                     hold waits until the blob is gone, then
                                                     stores it again
{p}:webhook:{id}             hash    task store,     7 days; a task's end to announce (see
                                     balancer        webhook_outbox): record (TaskRecord JSON),
                                                     enqueued_ms, attempts, lease, last_error...
{p}:webhooks:outbox          zset    task store,     none, at most 100,000; task id -> when its
                                     balancer        next delivery attempt is due (ms)
{p}:webhooks:dead            zset    balancer        none, at most 1,000 (oldest trimmed); task id
                                                     -> when its webhook was given up (ms)
{p}:ui:session:{sha256}      string  gateway sign-in --ui-session-s; one browser sign-in: its key's
                                                     secret SHA-256, key id, tenant (the cookie
                                                     holds the random session id, Redis only its
                                                     SHA-256)
{p}:ui:user:{tenant}:settings  hash   gateway        none; ComfyUI setting id -> JSON value
{p}:ui:user:{tenant}:files     hash   gateway        none; userdata path -> {"size", "modified",
                                                     "created", "encoding"} (ms; text or base64)
{p}:ui:user:{tenant}:contents  hash   gateway        none; userdata path -> the file's content
{p}:ui:user:{tenant}:bytes     string gateway        none; the sizes of the tenant's files, summed
{p}:metrics:fleet-lease      string  balancer        30 s, renewed at scrape; the replica id that
                                                     exports the fleet gauges on /metrics
{p}:signal:{name}            pubsub  any             wake-ups only, never the only copy of a fact

Redis Cluster (``RedisKeys(cluster=True)``, chosen by a ``redis+cluster://`` URL): a script
or MULTI may only touch keys of one hash slot, and a key's slot is the CRC16 of its hash tag
(the part between its first ``{`` and the next ``}``) if it has one. The scripts join nearly
everything: a submit writes the task's keys, its tenant's indexes and the queue; a claim
moves the queue and a node's slots; the write that ends a task expires every task key and
counts usage, outputs' expiry and the webhook outbox; a listing reads the records its index
names; the queue keeps flow keys' names in ``queue:places``; a node's health MULTI joins
``nodes``; and a process's stream hub follows every task's events and frames with ONE
blocking ``XREAD``, which a cluster only serves over keys of one slot. So these keys share
ONE slot: on a cluster every key of the table above that starts with ``{p}:`` starts with
the prefix as a hash tag, ``{comfy}:task:...`` (the names are otherwise the same). That caps
the scheduling state (queue, tasks, their events and frames, usage, outputs, webhooks, node
health) at one primary: fine for the workload (1,000 GPUs at a task per 10 s is ~100
placements a second, far below what one Redis does), and the cluster still gives failover
(replicas) and one address for everything.
The keys that no script or MULTI joins with that state have a slot of their own (their
owner in braces), so they spread over the primaries (shown for the prefix ``comfy``):

- per task: ``comfy:task:{<id>}:submit:<n>``, ``comfy:gateway:live:{<id>}``;
- per tenant: ``comfy:idempotency:{<tenant>}:<key>``, ``comfy:gateway:uploads:{<tenant>}``,
  ``comfy:ui:user:{<tenant>}:settings|files|contents|bytes`` (one slot: the userdata
  scripts join the last three);
- per API key or session: ``comfy:key:{<key>}:bucket``, ``comfy:ui:session:{<sha256>}``;
- singletons hashed by their whole name: ``comfy:costs:shapes``, ``comfy:metrics:fleet-lease``.

Keys that a script reads by a name built in Lua (the listing's task hashes, ``queue:places``'
flow sets, the outbox's ``webhook:{id}``) are built from a prefix inside the shared slot, so
they are in the script's slot by construction; ``tests/test_cluster_key_slots.py`` checks
every script and MULTI of the project against this (and fails for a script it does not run).
Pub/sub channels (``signal:*``) have no slot: a cluster delivers them from any node.

Task ids are 1-128 characters of ``[A-Za-z0-9_.-]``, the first a letter or digit
(``models.TASK_ID_PATTERN``): no id can reach into another task's keys.
Values are JSON (pydantic ``model_dump_json``), never pickle, so ``redis-cli`` shows readable data.

A task ``{id}`` is 1 to 128 characters from ``[A-Za-z0-9_.-]``, starting with a letter or digit
(``comfy_shared.models.TASK_ID_PATTERN``, checked by both APIs before any key is built). It
never holds ``:``, the separator, so one task's id cannot name another task's keys: an id
``X:events`` would otherwise be the event stream of task ``X``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

DEFAULT_PREFIX = "comfy"


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Key builders. ``cluster``: name the keys for a Redis Cluster (hash tags, see the
    module docstring); off, the names carry no braces, as they always did."""

    prefix: str = DEFAULT_PREFIX
    cluster: bool = False

    @property
    def root(self) -> str:
        """What every key of the shared slot starts with: ``{prefix}`` on a cluster."""
        return f"{{{self.prefix}}}" if self.cluster else self.prefix

    def _tag(self, owner: str) -> str:
        """``owner`` as the hash tag of a key of its own slot (on a cluster)."""
        return f"{{{owner}}}" if self.cluster else owner

    def task(self, task_id: str) -> str:
        return f"{self.root}:task:{task_id}"

    def task_prompt(self, task_id: str) -> str:
        return f"{self.root}:task:{task_id}:prompt"

    def task_inputs(self, task_id: str) -> str:
        return f"{self.root}:task:{task_id}:inputs"

    def task_events(self, task_id: str) -> str:
        return f"{self.root}:task:{task_id}:events"

    def task_logs(self, task_id: str) -> str:
        return f"{self.root}:task:{task_id}:logs"

    def task_origin(self, task_id: str) -> str:
        return f"{self.root}:task:{task_id}:origin"

    def task_frames(self, task_id: str) -> str:
        return f"{self.root}:task:{task_id}:frames"

    def prompt_numbers(self) -> str:
        return f"{self.root}:gateway:numbers"

    def task_submission(self, task_id: str, attempt: int) -> str:
        return f"{self.prefix}:task:{self._tag(task_id)}:submit:{attempt}"

    def recent_tasks(self) -> str:
        return f"{self.root}:tasks:recent"

    def node_health(self, node_id: str) -> str:
        return f"{self.root}:node:{node_id}:health"

    def node_speed(self, node_id: str) -> str:
        return f"{self.root}:node:{node_id}:speed"

    def node_profile(self, node_id: str) -> str:
        return f"{self.root}:node:{node_id}:profile"

    def node_object_info(self, node_id: str) -> str:
        return f"{self.root}:node:{node_id}:object_info"

    def node_prompts(self, node_id: str) -> str:
        return f"{self.root}:node:{node_id}:prompts"

    def nodes(self) -> str:
        return f"{self.root}:nodes"

    def drained_nodes(self) -> str:
        return f"{self.root}:nodes:drained"

    def autoscaler_retiring(self, scope: str) -> str:
        return f"{self.root}:autoscaler:{scope}:retiring"

    def pending_queue(self) -> str:
        return f"{self.root}:queue:pending"

    def queue_since(self) -> str:
        return f"{self.root}:queue:since"

    def queue_band_since(self) -> str:
        return f"{self.root}:queue:band-since"

    def queue_places(self) -> str:
        return f"{self.root}:queue:places"

    def queue_aging(self) -> str:
        """Batch tasks by enqueue time: those that waited long enough are served first."""
        return f"{self.root}:queue:aging"

    def queue_vtime(self) -> str:
        """Band -> virtual time: the fair tag of the last task placed from that band."""
        return f"{self.root}:queue:vtime"

    def queue_flows(self) -> str:
        """Flow (band and tenant) -> the fair tag where its next task starts."""
        return f"{self.root}:queue:flows"

    def queue_flow(self, band_rank: int, flow: str) -> str:  # flow: a tenant name, or "*"
        """One flow's waiting tasks in their own order (priority, then arrival)."""
        return f"{self.root}:queue:flow:{band_rank}:{flow}"

    def costs_by_shape(self) -> str:
        """Graph shape -> what its runs took, in reference GPU-seconds."""
        return f"{self.prefix}:costs:shapes"

    def queue_groups(self) -> str:
        """Group of tenants -> the most tasks its keys may run at once."""
        return f"{self.root}:queue:groups"

    def queue_seq(self) -> str:
        return f"{self.root}:queue:seq"

    def node_dispatched(self, node_id: str) -> str:
        return f"{self.root}:node:{node_id}:dispatched"

    def node_failures(self, node_id: str) -> str:
        return f"{self.root}:node:{node_id}:failures"

    def idempotency(self, tenant: str, key: str) -> str:
        return f"{self.prefix}:idempotency:{self._tag(tenant)}:{key}"

    def tenant_recent(self, tenant: str) -> str:
        return f"{self.root}:tenant:{tenant}:recent"

    def tenant_unfinished(self, tenant: str) -> str:
        return f"{self.root}:tenant:{tenant}:unfinished"

    def gateway_uploads(self, tenant: str) -> str:
        return f"{self.prefix}:gateway:uploads:{self._tag(tenant)}"

    def gateway_live(self, task_id: str) -> str:
        return f"{self.prefix}:gateway:live:{self._tag(task_id)}"

    def api_keys(self) -> str:
        return f"{self.root}:apikeys"

    def api_key_secrets(self) -> str:
        return f"{self.root}:apikeys:secrets"

    def queue_usage(self) -> str:
        return f"{self.root}:queue:usage"

    def key_bucket(self, key_id: str) -> str:
        return f"{self.prefix}:key:{self._tag(key_id)}:bucket"

    def usage_tenant(self, tenant: str, day: date) -> str:
        return f"{self.root}:usage:tenant:{tenant}:{day.isoformat()}"

    def usage_key(self, key_id: str, day: date) -> str:
        return f"{self.root}:usage:key:{key_id}:{day.isoformat()}"

    def usage_tenants(self) -> str:
        return f"{self.root}:usage:tenants"

    def outputs_refs(self) -> str:
        return f"{self.root}:outputs:refs"

    def outputs_sizes(self) -> str:
        return f"{self.root}:outputs:sizes"

    def outputs_bytes(self) -> str:
        return f"{self.root}:outputs:bytes"

    def outputs_expiry(self) -> str:
        return f"{self.root}:outputs:expiry"

    def outputs_finished(self) -> str:
        return f"{self.root}:outputs:finished"

    def outputs_of_task(self, task_id: str) -> str:
        return f"{self.root}:outputs:task:{task_id}"

    def outputs_deleting(self) -> str:
        return f"{self.root}:outputs:deleting"

    def webhook(self, task_id: str) -> str:
        return f"{self.webhook_prefix()}{task_id}"

    def webhook_prefix(self) -> str:
        """What :meth:`webhook` puts before a task id (Lua scripts build the key from it)."""
        return f"{self.root}:webhook:"

    def webhook_outbox(self) -> str:
        return f"{self.root}:webhooks:outbox"

    def webhook_dead(self) -> str:
        return f"{self.root}:webhooks:dead"

    def ui_session(self, session_sha256: str) -> str:
        return f"{self.prefix}:ui:session:{self._tag(session_sha256)}"

    def ui_settings(self, tenant: str) -> str:
        return f"{self.prefix}:ui:user:{self._tag(tenant)}:settings"

    def ui_files(self, tenant: str) -> str:
        return f"{self.prefix}:ui:user:{self._tag(tenant)}:files"

    def ui_contents(self, tenant: str) -> str:
        return f"{self.prefix}:ui:user:{self._tag(tenant)}:contents"

    def ui_bytes(self, tenant: str) -> str:
        return f"{self.prefix}:ui:user:{self._tag(tenant)}:bytes"

    def metrics_lease(self) -> str:
        """Held by the one balancer replica that exports the fleet-wide gauges (a string with
        a TTL, renewed at each of its scrapes)."""
        return f"{self.prefix}:metrics:fleet-lease"

    def signal(self, name: str) -> str:
        return f"{self.root}:signal:{name}"
