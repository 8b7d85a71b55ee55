"""Listing recent tasks with filters, a page at a time, inside Redis (``TaskStore.list_recent``).

A listing walks an index of recent tasks (``RedisKeys.recent_tasks``, or one tenant's
``RedisKeys.tenant_recent``), newest first, and keeps the tasks whose hash fields match: their
``status``, ``node`` and ``workflow`` fields (which the task store writes beside the record),
not their records, so a filter that matches few tasks reads little. Only the page's records
are read. All of it is one script, so one round trip, whatever the filter:

- a time window costs nothing to skip to: the index is scored by creation ms, so the first and
  last candidates are found by ``ZCOUNT`` (O(log n));
- the work is bounded: at most ``budget`` candidates are examined per call; when the budget
  runs out first, the page is partial and ``next`` says where to go on;
- the position is the last examined candidate (its creation ms and id), not an offset: tasks
  created meanwhile sort before it, so the next page neither repeats nor skips a task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from comfy_shared.lua import LuaScript
from comfy_shared.models import TaskRecord
from comfy_shared.task_state import TaskStatus

DEFAULT_BUDGET: Final = 5_000
"""Candidates one call examines at most: a few milliseconds of Redis time (see
BENCHMARKS.md), so a listing never holds Redis up for long, whatever the filter."""


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """What a listed task must match; an unset criterion matches every task."""

    statuses: frozenset[TaskStatus] = field(default_factory=frozenset)
    """Any of these (empty: any status)."""
    node_id: str | None = None
    """The node it was last placed on."""
    workflow: str | None = None
    """The template it was made from."""
    since_ms: int | None = None
    """Created at or after (ms since the epoch)."""
    until_ms: int | None = None
    """Created before (ms since the epoch)."""


@dataclass(frozen=True, slots=True)
class ListPosition:
    """Where a listing stopped: the last task it examined (matching or not)."""

    created_ms: int
    task_id: str


@dataclass(frozen=True, slots=True)
class TaskListing:
    records: list[TaskRecord]
    """The matching tasks, newest first."""
    next: ListPosition | None
    """Where the next page begins; None: no task is left to examine."""
    examined: int


LIST_TASKS: Final = LuaScript(
    keys=("index",),
    args=(
        "task_prefix",
        "after_ms",
        "after_id",
        "skip",
        "since_ms",
        "until_ms",
        "statuses",
        "node",
        "workflow",
        "limit",
        "budget",
    ),
    body="""
local function sorts_after(a, b)  -- byte order, as the index sorts (Lua's > is the locale's)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end

local function rank_after(score, id)
  -- The position's task is normally still in the index (only trimming, which removes every
  -- older task too, or the deletion of a never accepted task takes it out): start behind it.
  local rank = redis.call('ZREVRANK', KEY.index, id)
  if rank and tonumber(redis.call('ZSCORE', KEY.index, id)) == tonumber(score) then
    return rank + 1
  end
  rank = redis.call('ZCOUNT', KEY.index, '(' .. score, '+inf')
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEY.index, score, score)) do
    if sorts_after(member, id) then rank = rank + 1 end  -- same ms: members descending
  end
  return rank
end

local function text(value)  -- a field of a decoded record: JSON null is cjson.null
  if type(value) == 'string' then return value end
  return ''
end

local RECORD_FIELD = {node = 'node_id', workflow = 'workflow'}
local function from_record(key, field)  -- a task stored before the store kept the field
  local record = redis.call('HGET', key, 'record')
  if not record then return nil end
  return text(cjson.decode(record)[RECORD_FIELD[field]])
end

-- Only the fields a filter names are read: each read costs, over thousands of candidates.
local wanted, fields, tests = {}, {}, {}
local function check(field, test) fields[#fields + 1], tests[#tests + 1] = field, test end
for status in string.gmatch(ARG.statuses, '[^,]+') do wanted[status] = true end
if ARG.statuses ~= '' then check('status', function(value) return wanted[value] end) end
if ARG.node ~= '' then check('node', function(value) return value == ARG.node end) end
if ARG.workflow ~= '' then check('workflow', function(value) return value == ARG.workflow end) end

local function matches(key)
  if #fields == 0 then return true end
  local values = redis.call('HMGET', key, unpack(fields))
  for i, test in ipairs(tests) do
    local value = values[i]
    if not value and fields[i] ~= 'status' then value = from_record(key, fields[i]) end
    if not value or not test(value) then return false end  -- not value: the task is gone
  end
  return true
end

local first = tonumber(ARG.skip)
if ARG.until_ms ~= '' then
  first = math.max(first, redis.call('ZCOUNT', KEY.index, ARG.until_ms, '+inf'))
end
if ARG.after_id ~= '' then first = math.max(first, rank_after(ARG.after_ms, ARG.after_id)) end
local last = redis.call('ZCARD', KEY.index) - 1
if ARG.since_ms ~= '' then last = redis.call('ZCOUNT', KEY.index, ARG.since_ms, '+inf') - 1 end
local stop = math.min(last, first + tonumber(ARG.budget) - 1)
if stop < first then return {'', '', 0} end

-- In chunks: a page of a common filter needs a few candidates, not the whole budget.
local found, limit, examined, at = {}, tonumber(ARG.limit), 0, first
local last_id, last_score = '', ''
while at <= stop and #found < limit do
  local chunk = math.min(stop, at + math.max(limit, 100) * 2 - 1)
  local listed = redis.call('ZREVRANGE', KEY.index, at, chunk, 'WITHSCORES')
  for i = 1, #listed, 2 do
    examined = examined + 1
    last_id, last_score = listed[i], listed[i + 1]
    local key = ARG.task_prefix .. last_id
    -- no record: expired or forgotten, still indexed
    local record = matches(key) and redis.call('HGET', key, 'record')
    if record then
      found[#found + 1] = record
      if #found == limit then break end
    end
  end
  at = chunk + 1
end
local reply = {'', '', examined}
if first + examined - 1 < last then reply[1], reply[2] = last_score, last_id end
for _, record in ipairs(found) do reply[#reply + 1] = record end
return reply
""",
)
"""One page of a listing. Reply: the next position's ms and id ('' when the window is
exhausted), how many candidates were examined, then the matching records."""


def list_arguments(
    task_prefix: str,
    filters: TaskFilter,
    after: ListPosition | int | None,
    limit: int,
    budget: int,
) -> dict[str, str | int]:
    """The arguments of :data:`LIST_TASKS`; ``after`` an int: an offset into the index (the
    cursors of earlier versions)."""
    position = after if isinstance(after, ListPosition) else None
    return {
        "task_prefix": task_prefix,
        "after_ms": position.created_ms if position else "",
        "after_id": position.task_id if position else "",
        "skip": after if isinstance(after, int) else 0,
        "since_ms": "" if filters.since_ms is None else filters.since_ms,
        "until_ms": "" if filters.until_ms is None else filters.until_ms,
        "statuses": ",".join(sorted(filters.statuses)),
        "node": filters.node_id or "",
        "workflow": filters.workflow or "",
        "limit": limit,
        "budget": budget,
    }


def listing_of(reply: list[str | int]) -> TaskListing:
    next_ms, next_id, examined, *records = reply
    return TaskListing(
        records=[TaskRecord.model_validate_json(str(raw)) for raw in records],
        next=ListPosition(int(float(next_ms)), str(next_id)) if next_id else None,
        examined=int(examined),
    )
