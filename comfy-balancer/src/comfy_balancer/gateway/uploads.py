"""Files a user sends to ``/upload/image`` and ``/upload/mask``: kept per user, and staged to
whichever node runs a prompt that names them.

ComfyUI writes an upload into its ``input`` folder, where ``LoadImage`` finds it by name. The
gateway has no folder, and does not know at upload time which node will run the prompt
(late binding). So the bytes go to the output store (by SHA-256, like outputs and template
images: a file sent a thousand times is stored once) and the user's name for them into a
Redis index per tenant, ``(type, subfolder, name) -> sha256`` (``RedisKeys.gateway_uploads``).
Names follow ComfyUI's rule: an existing name with other bytes makes the new file
``name (1).ext`` (then ``(2)``...), unless ``overwrite``; the same bytes keep the name.

Retention: each upload is held in the store under its own holder
(``OutputCatalog``) for ``--retention-s`` from the moment it was sent (sending the same bytes
again starts the time again); the size cap (``--outputs-max-bytes``) may release the oldest
uploads first. A prompt that names an upload takes its own copy when it is accepted (the
task's input files), so an upload that expires later does not break it.

Staging: when a prompt arrives, each string input naming one of the user's uploads in one
of ComfyUI's forms (``x.png``, ``sub/x.png``, ``x.png [input]``) becomes an input file of the
task under an unguessable name, and the input is pointed at it (``intake.StagedInput``); the
node that runs the task uploads it to its ComfyUI just before submitting. A name the user
never uploaded is left as it is, for ComfyUI's validation (it may be a file every node has).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Final, cast
from uuid import uuid4

from pydantic import BaseModel
from redis.asyncio import Redis

from comfy_balancer.intake import StagedInput
from comfy_shared.clock import now_ms
from comfy_shared.errors import ComfyStackError
from comfy_shared.lua import LuaScript
from comfy_shared.models import UPLOAD_SUBFOLDER, InputFile
from comfy_shared.outputs.catalog import OutputCatalog, hold_when_free, missing_blobs
from comfy_shared.outputs.store import BlobMissing, OutputStore, StoredBlob
from comfy_shared.redis_keys import RedisKeys

FOLDERS: Final = ("input", "temp", "output")
"""ComfyUI's folder types; an upload may name any of them (``input`` unless told)."""
MAX_RENAMES: Final = 10_000
PRUNE_ABOVE: Final = 1_000
"""Entries of a tenant's index past which a new upload also drops the expired ones."""
MAX_REFERENCE_CHARS: Final = 1_024
_ANNOTATIONS: Final = {f" [{folder}]": folder for folder in FOLDERS}
_PLAIN_SUFFIX: Final = re.compile(r"\.[a-z0-9]{1,8}")

# Writes the entry unless the name is taken by other bytes that are still kept (the caller
# then tries the next name); the index lives as long as its newest upload.
_CLAIM_NAME: Final = LuaScript(
    keys=("uploads",),
    args=("field", "entry", "sha256", "overwrite", "now_ms", "ttl_s"),
    body="""
local raw = redis.call('HGET', KEY.uploads, ARG.field)
if raw and ARG.overwrite ~= '1' then
  local current = cjson.decode(raw)
  if tonumber(current.expires_ms) > tonumber(ARG.now_ms) and current.sha256 ~= ARG.sha256 then
    return 0
  end
end
redis.call('HSET', KEY.uploads, ARG.field, ARG.entry)
redis.call('EXPIRE', KEY.uploads, ARG.ttl_s)
return 1
""",
)


class InvalidUploadName(ComfyStackError):
    """A name or subfolder that would leave the user's folder, or no name at all."""


@dataclass(frozen=True, slots=True)
class UploadName:
    """Where an upload is, as ComfyUI's clients name it."""

    folder: str
    subfolder: str
    name: str

    @classmethod
    def of(cls, name: str, subfolder: str = "", folder: str = "input") -> UploadName:
        """Raises InvalidUploadName (ComfyUI: 400) for a name or subfolder that climbs out."""
        if folder not in FOLDERS:
            raise InvalidUploadName(f"no folder type {folder!r}")
        parts = [part for part in subfolder.replace("\\", "/").split("/") if part]
        if any(part in (".", "..") for part in parts) or subfolder.startswith("/"):
            raise InvalidUploadName(f"subfolder {subfolder!r} leaves the folder")
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise InvalidUploadName(f"{name!r} is no file name")
        return cls(folder, "/".join(parts), name)

    @property
    def field(self) -> str:
        """Its field in the index: ``<folder>/<subfolder>/<name>`` (no name holds a slash)."""
        return f"{self.folder}/{self.subfolder}/{self.name}"

    def renamed(self, attempt: int) -> UploadName:
        """ComfyUI's ``name (n).ext``."""
        path = PurePosixPath(self.name)
        return UploadName(self.folder, self.subfolder, f"{path.stem} ({attempt}){path.suffix}")

    def answer(self) -> dict[str, str]:
        """What ``/upload/image`` answers."""
        return {"name": self.name, "subfolder": self.subfolder, "type": self.folder}


def referenced_upload(value: str) -> UploadName | None:
    """The upload a graph value names in one of ComfyUI's forms (``x.png``, ``sub/x.png``,
    ``x.png [input]``), or None when it cannot name one."""
    if len(value) > MAX_REFERENCE_CHARS or "\n" in value:
        return None
    folder = "input"
    for suffix, annotated in _ANNOTATIONS.items():
        if value.endswith(suffix):
            value, folder = value.removesuffix(suffix), annotated
    subfolder, _, name = value.rpartition("/")
    try:
        return UploadName.of(name, subfolder, folder)
    except InvalidUploadName:
        return None


class Upload(BaseModel):
    """An index entry: the bytes a name stands for, and until when they are kept."""

    sha256: str
    size: int
    expires_ms: int


class Uploads:
    def __init__(
        self,
        *,
        redis: Redis,
        keys: RedisKeys,
        store: OutputStore,
        catalog: OutputCatalog,
        hold_s: int,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._store = store
        self._catalog = catalog
        self._hold_s = hold_s
        self._claim = _CLAIM_NAME.register(redis)

    async def save(
        self, tenant: str, wanted: UploadName, data: bytes, *, overwrite: bool
    ) -> UploadName:
        """Store ``data`` for the tenant under ``wanted`` or the first free ``name (n)``;
        returns the name used. Raises StoreUnavailable."""
        blob = await self._keep(data)
        expires_ms = now_ms() + self._hold_s * 1000
        entry = Upload(sha256=blob.digest, size=blob.size, expires_ms=expires_ms)
        index = self._keys.gateway_uploads(tenant)
        for attempt in range(MAX_RENAMES):
            name = wanted if attempt == 0 else wanted.renamed(attempt)
            if await self._claim(
                keys={"uploads": index},
                args={
                    "field": name.field,
                    "entry": entry.model_dump_json(),
                    "sha256": blob.digest,
                    "overwrite": "1" if overwrite else "0",
                    "now_ms": now_ms(),
                    "ttl_s": self._hold_s,
                },
            ):
                await self._prune(index)
                return name
        raise InvalidUploadName(f"{MAX_RENAMES} files are called like {wanted.name!r} already")

    async def find(self, tenant: str, name: UploadName) -> Upload | None:
        return (await self.find_many(tenant, [name]))[name]

    async def find_many(
        self, tenant: str, names: list[UploadName]
    ) -> dict[UploadName, Upload | None]:
        """Each name's upload, if the tenant has one that is still kept (one round trip)."""
        if not names:
            return {}
        index = self._keys.gateway_uploads(tenant)
        raws = cast("list[str | None]", await self._redis.hmget(index, [n.field for n in names]))
        now = now_ms()
        found: dict[UploadName, Upload | None] = {}
        for name, raw in zip(names, raws, strict=True):
            upload = Upload.model_validate_json(raw) if raw is not None else None
            found[name] = upload if upload is not None and upload.expires_ms > now else None
        return found

    async def read(self, upload: Upload) -> bytes | None:
        """The bytes, or None when the store no longer has them."""
        try:
            return b"".join([chunk async for chunk in self._store.read(upload.sha256)])
        except BlobMissing:
            return None

    async def staged_inputs(
        self, tenant: str, graph: Mapping[str, Any]
    ) -> tuple[list[StagedInput], dict[str, str]]:
        """The graph's inputs that name the tenant's uploads, each with its file under an
        unguessable name; and each staged value -> the value the caller wrote."""
        wanted = _upload_references(graph)
        found = await self.find_many(tenant, sorted(set(wanted.values()), key=lambda n: n.field))
        files: dict[UploadName, InputFile] = {}
        staged, originals = [], {}
        for (node_id, input_name), name in wanted.items():
            upload = found[name]
            if upload is None:
                continue
            if name not in files:
                data = await self.read(upload)
                if data is None:
                    continue
                files[name] = InputFile(_staged_name(name), data)
            staged.append(StagedInput(node_id, input_name, files[name]))
            written = graph[node_id]["inputs"][input_name]
            originals[f"{UPLOAD_SUBFOLDER}/{files[name].name}"] = written
        return staged, originals

    async def _keep(self, data: bytes) -> StoredBlob:
        blob = await self._store.put(_chunks(data))
        await hold_when_free(
            self._catalog,
            f"gateway-upload:{uuid4().hex}",
            [blob],
            finished_ms=now_ms(),
            expires_ms=now_ms() + self._hold_s * 1000,
        )
        if await missing_blobs(self._store, [blob]):
            await self._store.put(_chunks(data))
        return blob

    async def _prune(self, index: str) -> None:
        """Drop expired entries once the index is large (it lives while uploads go on)."""
        if await self._redis.hlen(index) <= PRUNE_ABOVE:
            return
        now = now_ms()
        entries = cast(dict[str, str], await self._redis.hgetall(index))
        expired = [f for f, raw in entries.items() if json.loads(raw)["expires_ms"] <= now]
        if expired:
            await self._redis.hdel(index, *expired)


def _upload_references(graph: Mapping[str, Any]) -> dict[tuple[str, str], UploadName]:
    references = {}
    for node_id, node in graph.items():
        for input_name, value in node.get("inputs", {}).items():
            if isinstance(value, str) and (name := referenced_upload(value)) is not None:
                references[(node_id, input_name)] = name
    return references


def _staged_name(name: UploadName) -> str:
    """Unguessable (other users' prompts on the same node must not find the file), with the
    upload's extension when it has a plain one (nodes pick a decoder by it)."""
    suffix = PurePosixPath(name.name).suffix.lower()
    return secrets.token_hex(16) + (suffix if _PLAIN_SUFFIX.fullmatch(suffix) else "")


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data
