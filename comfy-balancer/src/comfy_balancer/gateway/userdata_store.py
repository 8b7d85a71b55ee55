"""Each tenant's ComfyUI settings and userdata files (saved workflows, templates, ``user.css``),
kept in Redis: they survive a balancer restart and show the same in every browser of the user.

A ComfyUI server keeps these as files under ``user/<user>/``; here a tenant's files are two
hashes (path -> metadata, path -> content) and a byte count, and its settings one hash
(setting id -> JSON value). Directories are not stored: a path's folders exist while a file
lies under them. Sizes and counts are bounded per tenant (``UserdataLimits``), checked by
the Lua script that writes.

Paths are checked before any key is touched (:func:`user_path`): relative, ``/``-separated,
no empty, ``.`` or ``..`` part, no backslash or control character. A path that would leave
the user's folder on a file system is refused, not normalised.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from pydantic import BaseModel
from redis.asyncio import Redis

from comfy_shared.clock import now_ms
from comfy_shared.errors import ComfyStackError
from comfy_shared.lua import LuaScript
from comfy_shared.redis_keys import RedisKeys

MAX_PATH_CHARS: Final = 512
SETTINGS_MAX_BYTES: Final = 2 * 1024 * 1024
"""A tenant's settings, all values as JSON together (the frontend's own are a few KB)."""
SETTINGS_MAX_IDS: Final = 4096
MAX_SETTING_ID_CHARS: Final = 256


class UserdataError(ComfyStackError):
    """A refused userdata or settings request; ``status`` is ComfyUI's answer to it."""

    status = 400


class InvalidUserPath(UserdataError):
    status = 403  # what ComfyUI answers for a path outside the user's folder


class UserFileMissing(UserdataError):
    status = 404


class UserFileExists(UserdataError):
    status = 409

    def __init__(self, path: str) -> None:
        super().__init__("File already exists")
        self.path = path


class UserFileTooLarge(UserdataError):
    status = 413


class UserStorageFull(UserdataError):
    status = 507  # Insufficient Storage: the tenant's quota, not the request, is the limit


class InvalidSettings(UserdataError):
    status = 400


class SettingsTooLarge(UserdataError):
    status = 413


@dataclass(frozen=True, slots=True)
class UserdataLimits:
    max_file_bytes: int
    max_bytes: int
    max_files: int


class FileMeta(BaseModel):
    """What a file's entry in the metadata hash holds (times in ms since the epoch)."""

    size: int
    modified: int
    created: int
    encoding: Literal["utf-8", "base64"] = "utf-8"


@dataclass(frozen=True, slots=True)
class UserFile:
    path: str
    meta: FileMeta

    def info(self, relative_to: str = "") -> dict[str, Any]:
        """ComfyUI's ``full_info`` entry: ``{path, size, modified, created}``."""
        meta = self.meta
        return {
            "path": self.path[len(relative_to) :],
            "size": meta.size,
            "modified": meta.modified,
            "created": meta.created,
        }


def user_path(raw: str) -> str:
    """``raw`` as a stored path; raises InvalidUserPath for anything that could name a file
    outside the user's folder, or that a file system would refuse."""
    if not raw or len(raw) > MAX_PATH_CHARS:
        raise InvalidUserPath(f"a path of 1 to {MAX_PATH_CHARS} characters is needed")
    if "\\" in raw or any(ord(char) < 0x20 or ord(char) == 0x7F for char in raw):
        raise InvalidUserPath("a path may not hold a backslash or a control character")
    if any(part in ("", ".", "..") for part in raw.split("/")):
        raise InvalidUserPath("a path is relative, with no empty, '.' or '..' part")
    return raw


def user_directory(raw: str) -> str:
    """A directory to list: a path as :func:`user_path`, a trailing ``/`` allowed."""
    return user_path(raw.rstrip("/") or raw)


def encode_content(content: bytes) -> tuple[str, Literal["utf-8", "base64"]]:
    """Text stays readable in Redis (redis-cli, and no third more memory); other bytes are
    stored as base64, since every client of this Redis decodes replies as UTF-8."""
    try:
        return content.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(content).decode("ascii"), "base64"


def decode_content(stored: str, encoding: str) -> bytes:
    return base64.b64decode(stored) if encoding == "base64" else stored.encode("utf-8")


_WRITE: Final = LuaScript(
    keys=("files", "contents", "bytes"),
    args=("path", "content", "size", "encoding", "now", "overwrite", "max_files", "max_bytes"),
    body="""
local old = redis.call('HGET', KEY.files, ARG.path)
local old_size, created = 0, ARG.now
if old then
  if ARG.overwrite == '0' then return {'exists'} end
  local meta = cjson.decode(old)
  old_size = meta.size
  created = string.format('%d', meta.created)
elseif redis.call('HLEN', KEY.files) >= tonumber(ARG.max_files) then
  return {'too_many'}
end
local used = tonumber(redis.call('GET', KEY.bytes) or '0') - old_size
if used + tonumber(ARG.size) > tonumber(ARG.max_bytes) then return {'full', used} end
local meta = '{"size":' .. ARG.size .. ',"modified":' .. ARG.now .. ',"created":' .. created
  .. ',"encoding":"' .. ARG.encoding .. '"}'
redis.call('HSET', KEY.files, ARG.path, meta)
redis.call('HSET', KEY.contents, ARG.path, ARG.content)
redis.call('INCRBY', KEY.bytes, tonumber(ARG.size) - old_size)
return {'ok', meta}
""",
)
"""One write: the limits are checked against what is stored at that moment, so two writes
at once cannot both pass a limit only one of them fits under."""

_DELETE: Final = LuaScript(
    keys=("files", "contents", "bytes"),
    args=("path",),
    body="""
local old = redis.call('HGET', KEY.files, ARG.path)
if not old then return 0 end
redis.call('HDEL', KEY.files, ARG.path)
redis.call('HDEL', KEY.contents, ARG.path)
redis.call('DECRBY', KEY.bytes, cjson.decode(old).size)
return 1
""",
)

_MOVE: Final = LuaScript(
    keys=("files", "contents", "bytes"),
    args=("source", "dest", "overwrite"),
    body="""
local moved = redis.call('HGET', KEY.files, ARG.source)
if not moved then return {'missing'} end
if ARG.source == ARG.dest then return {'ok', moved} end
local replaced = redis.call('HGET', KEY.files, ARG.dest)
if replaced then
  if ARG.overwrite == '0' then return {'exists'} end
  redis.call('DECRBY', KEY.bytes, cjson.decode(replaced).size)
end
redis.call('HSET', KEY.files, ARG.dest, moved)
redis.call('HSET', KEY.contents, ARG.dest, redis.call('HGET', KEY.contents, ARG.source) or '')
redis.call('HDEL', KEY.files, ARG.source)
redis.call('HDEL', KEY.contents, ARG.source)
return {'ok', moved}
""",
)

_MERGE_SETTINGS: Final = LuaScript(
    keys=("settings",),
    args=("values", "max_ids", "max_bytes"),
    body="""
local new = cjson.decode(ARG.values)
local sizes = {}
local current = redis.call('HGETALL', KEY.settings)
for i = 1, #current, 2 do sizes[current[i]] = #current[i] + #current[i + 1] end
for id, value in pairs(new) do sizes[id] = #id + #value end
local count, total = 0, 0
for _, size in pairs(sizes) do count = count + 1; total = total + size end
if count > tonumber(ARG.max_ids) then return 'too_many' end
if total > tonumber(ARG.max_bytes) then return 'too_large' end
for id, value in pairs(new) do redis.call('HSET', KEY.settings, id, value) end
return 'ok'
""",
)
"""Each value arrives as its JSON text, inside one JSON object: Lua never re-encodes a value
(cjson would turn 0.1 into 0.10000000000000001 and [] into {})."""


class UserFiles:
    """One tenant's userdata files."""

    def __init__(self, redis: Redis, keys: RedisKeys, tenant: str, limits: UserdataLimits) -> None:
        self._redis = redis
        self._limits = limits
        self._keys = {
            "files": keys.ui_files(tenant),
            "contents": keys.ui_contents(tenant),
            "bytes": keys.ui_bytes(tenant),
        }
        self._write = _WRITE.register(redis)
        self._delete = _DELETE.register(redis)
        self._move = _MOVE.register(redis)

    async def listing(self, directory: str, *, recurse: bool) -> list[UserFile]:
        """The files under ``directory`` (all depths with ``recurse``), by path; a folder
        nothing lies under lists empty."""
        prefix = f"{directory}/"
        raw = cast(dict[str, str], await self._redis.hgetall(self._keys["files"]))
        found = [
            UserFile(path, FileMeta.model_validate_json(meta))
            for path, meta in raw.items()
            if path.startswith(prefix) and (recurse or "/" not in path[len(prefix) :])
        ]
        return sorted(found, key=lambda file: file.path)

    async def read(self, path: str) -> tuple[UserFile, bytes]:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hget(self._keys["files"], path)
            pipe.hget(self._keys["contents"], path)
            meta_raw, stored = await pipe.execute()
        if meta_raw is None or stored is None:
            raise UserFileMissing(f"no file {path!r}")
        meta = FileMeta.model_validate_json(meta_raw)
        return UserFile(path, meta), decode_content(stored, meta.encoding)

    async def write(self, path: str, content: bytes, *, overwrite: bool) -> UserFile:
        """Store ``content`` at ``path`` (a new file, or over an old one if ``overwrite``);
        the path's first creation time is kept."""
        limits = self._limits
        if len(content) > limits.max_file_bytes:
            raise UserFileTooLarge(f"a userdata file may hold {limits.max_file_bytes} bytes")
        stored, encoding = encode_content(content)
        answer = await self._write(
            keys=self._keys,
            args={
                "path": path,
                "content": stored,
                "size": len(content),
                "encoding": encoding,
                "now": now_ms(),
                "overwrite": int(overwrite),
                "max_files": limits.max_files,
                "max_bytes": limits.max_bytes,
            },
        )
        match answer:
            case ["ok", meta]:
                return UserFile(path, FileMeta.model_validate_json(meta))
            case ["exists"]:
                raise UserFileExists(path)
            case ["too_many"]:
                raise UserStorageFull(f"a user may keep {limits.max_files} userdata files")
            case ["full", used]:
                raise UserStorageFull(
                    f"a user may keep {limits.max_bytes} bytes of userdata files; {used} are taken"
                )
        raise AssertionError(f"unexpected answer from the write script: {answer!r}")

    async def delete(self, path: str) -> None:
        if not await self._delete(keys=self._keys, args={"path": path}):
            raise UserFileMissing(f"no file {path!r}")

    async def move(self, source: str, dest: str, *, overwrite: bool) -> UserFile:
        """Rename ``source`` to ``dest``; its times and content go with it."""
        answer = await self._move(
            keys=self._keys, args={"source": source, "dest": dest, "overwrite": int(overwrite)}
        )
        match answer:
            case ["ok", meta]:
                return UserFile(dest, FileMeta.model_validate_json(meta))
            case ["exists"]:
                raise UserFileExists(dest)
            case ["missing"]:
                raise UserFileMissing(f"no file {source!r}")
        raise AssertionError(f"unexpected answer from the move script: {answer!r}")


class UserSettings:
    """One tenant's ComfyUI settings: setting id -> any JSON value."""

    def __init__(self, redis: Redis, keys: RedisKeys, tenant: str) -> None:
        self._redis = redis
        self._key = keys.ui_settings(tenant)
        self._merge = _MERGE_SETTINGS.register(redis)

    async def all(self) -> dict[str, Any]:
        raw = cast(dict[str, str], await self._redis.hgetall(self._key))
        return {setting_id: json.loads(value) for setting_id, value in raw.items()}

    async def get(self, setting_id: str) -> Any:
        raw = await self._redis.hget(self._key, setting_id)
        return json.loads(raw) if raw is not None else None

    async def merge(self, values: Mapping[str, Any]) -> None:
        """Set every id of ``values`` (the others keep theirs), within the bounds."""
        encoded = {_setting_id(key): json.dumps(value) for key, value in values.items()}
        if not encoded:
            return
        answer = await self._merge(
            keys={"settings": self._key},
            args={
                "values": json.dumps(encoded),
                "max_ids": SETTINGS_MAX_IDS,
                "max_bytes": SETTINGS_MAX_BYTES,
            },
        )
        if answer == "too_many":
            raise SettingsTooLarge(f"a user may keep {SETTINGS_MAX_IDS} settings")
        if answer == "too_large":
            raise SettingsTooLarge(f"a user's settings may take {SETTINGS_MAX_BYTES} bytes")


def _setting_id(setting_id: str) -> str:
    if not setting_id or len(setting_id) > MAX_SETTING_ID_CHARS:
        raise InvalidSettings(f"a setting id has 1 to {MAX_SETTING_ID_CHARS} characters")
    return setting_id
