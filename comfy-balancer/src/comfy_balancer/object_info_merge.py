"""One object_info for a fleet, from each node's: what a ComfyUI client sees of the cluster.

- ``union`` (default): every class some node has; a combo lists every option some node offers
  (model files above all). A graph valid against the union may still need two nodes (a class
  from one, a model file from another): the balancer then refuses it as no node can run it
  whole (``intake``'s capability check).
- ``intersection``: the classes every node has, with the combo options every node offers; a
  graph valid against it runs anywhere (a homogeneous fleet loses nothing).

A class that differs between nodes (another version of its pack) is described as the first
node (by id) has it, its combos merged as above. Classes that are the same everywhere are
shared, not copied: treat the result as read-only. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal

MergeMode = Literal["union", "intersection"]
ObjectInfo = Mapping[str, Any]
_SECTIONS = ("required", "optional")


def merge_object_info(infos: Sequence[ObjectInfo], mode: MergeMode) -> dict[str, Any]:
    """The fleet's object_info from the nodes' (in node id order)."""
    if not infos:
        return {}
    names = _class_names(infos, mode)
    return {name: _merge_class([i[name] for i in infos if name in i], mode) for name in names}


def _class_names(infos: Sequence[ObjectInfo], mode: MergeMode) -> list[str]:
    if mode == "union":
        return list(dict.fromkeys(name for info in infos for name in info))
    return [name for name in infos[0] if all(name in info for info in infos[1:])]


def _merge_class(descriptions: list[Any], mode: MergeMode) -> Any:
    first = descriptions[0]
    others = [d for d in descriptions[1:] if d is not first and d != first]
    inputs = first.get("input") if isinstance(first, Mapping) else None
    if not others or not isinstance(inputs, Mapping):
        return first
    merged = dict(inputs)
    for section in _SECTIONS:
        specs = inputs.get(section)
        if isinstance(specs, Mapping):
            theirs = [_section(other, section) for other in others]
            merged[section] = {
                name: _merge_spec(spec, [t.get(name) for t in theirs], mode)
                for name, spec in specs.items()
            }
    return {**first, "input": merged}


def _section(description: Any, section: str) -> Mapping[str, Any]:
    inputs = description.get("input") if isinstance(description, Mapping) else None
    specs = inputs.get(section) if isinstance(inputs, Mapping) else None
    return specs if isinstance(specs, Mapping) else {}


def _merge_spec(spec: Any, others: list[Any], mode: MergeMode) -> Any:
    options = combo_options(spec)
    if options is None:
        return spec
    for other in others:
        theirs = combo_options(other)
        if theirs is not None:  # not a combo there (another version of the class): kept as is
            options = _union(options, theirs) if mode == "union" else _common(options, theirs)
    return _with_options(spec, options)


def combo_options(spec: Any) -> list[Any] | None:
    """The options of a V1 ``[[...], {...}]`` or V3 ``["COMBO", {"options": [...]}]`` input,
    as given (not made strings), or None for any other input."""
    if not isinstance(spec, list) or not spec:
        return None
    if isinstance(spec[0], list):
        return spec[0]
    extra = spec[1] if len(spec) > 1 else None
    if spec[0] == "COMBO" and isinstance(extra, Mapping) and isinstance(extra.get("options"), list):
        return list(extra["options"])
    return None


def _with_options(spec: list[Any], options: list[Any]) -> list[Any]:
    if isinstance(spec[0], list):
        return [options, *spec[1:]]
    return [spec[0], {**spec[1], "options": options}, *spec[2:]]


def _union(ours: list[Any], theirs: list[Any]) -> list[Any]:
    seen = {_key(option) for option in ours}
    return ours + [option for option in theirs if _key(option) not in seen]


def _common(ours: list[Any], theirs: list[Any]) -> list[Any]:
    kept = {_key(option) for option in theirs}
    return [option for option in ours if _key(option) in kept]


def _key(option: Any) -> Hashable:
    # Options are strings or numbers; anything else is compared by its JSON.
    return option if isinstance(option, str | int | float | bool) else json.dumps(option)
