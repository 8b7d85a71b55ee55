"""Lua scripts that address their keys and arguments by name.

Redis hands a script ``KEYS[1..n]`` and ``ARGV[1..m]``; code that pastes one script into
another and counts positions breaks silently when either changes. Here a script declares the
names it uses, its body reads them as ``KEY.task`` and ``ARG.record``, scripts compose with
:meth:`LuaScript.then` (names shared by both are one key), and a call passes mappings: a
missing or unknown name raises before anything reaches Redis.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


@dataclass(frozen=True, slots=True)
class LuaScript:
    keys: tuple[str, ...]
    args: tuple[str, ...]
    body: str

    def then(self, other: LuaScript) -> LuaScript:
        """This script's body, then ``other``'s, over the union of their names."""
        return LuaScript(
            keys=_union(self.keys, other.keys),
            args=_union(self.args, other.args),
            body=f"{self.body.rstrip()}\n{other.body.lstrip()}",
        )

    @property
    def source(self) -> str:
        return "\n".join(
            (
                _bind("KEY", "KEYS", self.keys),
                _bind("ARG", "ARGV", self.args),
                self.body,
            )
        )

    def register(self, redis: Redis) -> BoundScript:
        return BoundScript(self, redis.register_script(self.source))


class BoundScript:
    """A script registered on a client (sent by SHA, loaded once)."""

    def __init__(self, script: LuaScript, registered: AsyncScript) -> None:
        self._script = script
        self._registered = registered

    async def __call__(
        self,
        *,
        keys: Mapping[str, str],
        args: Mapping[str, str | int | float],
        client: Redis | None = None,
    ) -> Any:
        """``client``: run it there instead of on the client it was registered with (one of
        its own connection, say)."""
        return await self._registered(
            keys=_in_order("key", self._script.keys, keys),
            args=_in_order("argument", self._script.args, args),
            client=client,
        )


def _union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return first + tuple(name for name in second if name not in first)


def _bind(table: str, source: str, names: tuple[str, ...]) -> str:
    fields = ", ".join(f"{name} = {source}[{index}]" for index, name in enumerate(names, 1))
    return f"local {table} = {{{fields}}}"


def _in_order(what: str, names: tuple[str, ...], given: Mapping[str, Any]) -> list[Any]:
    if set(given) != set(names):
        missing, unknown = set(names) - set(given), set(given) - set(names)
        raise ValueError(f"script {what}s: missing {sorted(missing)}, unknown {sorted(unknown)}")
    return [given[name] for name in names]
