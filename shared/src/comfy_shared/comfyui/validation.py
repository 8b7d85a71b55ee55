"""API-format graphs checked against ``GET /object_info`` the way ComfyUI's own
``execution.validate_prompt`` checks them, so a door in front of a fleet can refuse at once
what every node would refuse, with the same body ComfyUI's ``POST /prompt`` answers 400 with.

What ComfyUI does, and so does this module:

- every node needs a ``class_type`` that the object_info lists; else the whole graph is refused
  (``invalid_prompt``, or ``missing_node_type`` in the :attr:`Dialect.CURRENT` wording) with
  empty ``node_errors``;
- at least one output node (``"output_node": true``, among ``partial_targets`` when given),
  else ``prompt_no_outputs``;
- each output is validated through its links. Per declared input (required, then optional):
  ``required_input_missing``; a link that is not ``[node id, slot]`` (``bad_linked_input``);
  a linked output of the wrong type (``return_type_mismatch``; ``*``, the V3 match type and
  comma-separated unions overlap as ComfyUI's ``validate_node_input`` says); a widget value
  that does not convert to INT/FLOAT/STRING/BOOLEAN (``invalid_input_type``), is out of
  ``min``/``max`` (``value_smaller_than_min``, ``value_bigger_than_max``) or not among a
  combo's options, V1 ``[[...]]`` or V3 ``["COMBO", {"options": [...]}]`` alike
  (``value_not_in_list``; lists over 20 options are summarised and their config left out);
  ``{"__value__": ...}`` wraps a literal list;
- a node lists only its *own* errors; nodes that fail only because something upstream failed
  get no entry. A Python error while looking a link up (a link to a node id the graph lacks,
  an output index out of range) is blamed where ComfyUI blames it: on the linking node, as
  ``exception_during_inner_validation`` under the downstream input's name (or
  ``exception_during_validation`` on an output node itself). Messages and exception types
  are ComfyUI's; ``traceback`` is empty, since this process's frames would tell the caller
  nothing;
- a cycle of links is ``dependency_cycle`` on each node in it (ComfyUI since 2026; older ones
  overflowed the stack);
- some outputs valid: the graph is accepted with only those (``outputs``), and the failed
  branches are still in ``node_errors``; none valid: ``prompt_outputs_failed_validation``,
  whose ``details`` lists the output nodes' own errors.

What object_info cannot say, and is therefore left to the node that runs the graph:

- a node's own ``VALIDATE_INPUTS`` / ``validate_inputs``. Core ComfyUI's loaders of uploaded
  files (LoadImage, LoadImageMask, LoadAudio, LoadVideo...) check that the file exists
  instead of the combo; their combos carry an ``*_upload`` flag, so such a combo is not
  checked here (a file staged at run time is in no list yet);
- V3 dynamic inputs (autogrow, dynamic combo, dynamic slot) and loop boundaries.

Validation never changes the graph (ComfyUI writes converted values back; its node does that
again when it receives the graph). Iterative, not recursive: a chain of a thousand nodes is
fine. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

JsonDict = dict[str, Any]
ObjectInfo = Mapping[str, Mapping[str, Any]]
"""``GET /object_info``: class name -> that class's description."""
Verdict = tuple[bool, list[JsonDict]]

ANY_TYPE = "*"
MATCH_TYPE = "COMFY_MATCHTYPE_V3"
COMBO_TYPE = "COMBO"
DYNAMIC_TYPES = frozenset({"COMFY_AUTOGROW_V3", "COMFY_DYNAMICCOMBO_V3", "COMFY_DYNAMICSLOT_V3"})
LONG_COMBO = 20
"""Combos with more options than this are summarised in errors (scanned model lists)."""
_COERCE: Mapping[str, Callable[[Any], Any]] = {
    "INT": int,
    "FLOAT": float,
    "STRING": str,
    "BOOLEAN": bool,
}


class Dialect(StrEnum):
    """Wording that changed between ComfyUI versions."""

    V0_8 = "0.8"
    """``invalid_prompt`` for a missing or unknown class; combo values quoted as ``'v'``: the
    ComfyUI of the recorded captures (0.8.0, early 2026)."""
    CURRENT = "current"
    """``missing_node_type`` naming the node's title (ComfyUI PR #12194, 2026); combo values
    as ``repr()``."""


MISSING_NODE_TYPE_SINCE = (0, 13, 0)
"""The first release taken to word a missing class as ``missing_node_type`` (PR #12194 was
merged in early February 2026, after 0.12.x shipped; no older release has it)."""


def dialect_for(versions: Iterable[str | None]) -> Dialect:
    """The wording a fleet of ComfyUIs of these versions answers with: the current one only
    if every node whose version is known has it (None: not known, e.g. ComfyUI is down; a
    version that does not parse counts as old)."""
    parsed = [_version(v) for v in versions if v is not None]
    if parsed and all(v is not None and v >= MISSING_NODE_TYPE_SINCE for v in parsed):
        return Dialect.CURRENT
    return Dialect.V0_8


def _version(text: str | None) -> tuple[int, int, int] | None:
    match = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if match is None:
        return None
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


@dataclass(frozen=True, slots=True)
class ValidationResult:
    ok: bool
    error: JsonDict | None
    """``{"type", "message", "details", "extra_info"}`` when nothing can run."""
    outputs: list[str] = field(default_factory=list)
    """The output nodes that would run (all the valid ones)."""
    node_errors: JsonDict = field(default_factory=dict)
    """Node id -> ``{"errors", "dependent_outputs", "class_type"}``; filled on refusal, and
    on acceptance when some branches fail (ComfyUI answers those with 200)."""

    @property
    def body(self) -> JsonDict:
        """What ComfyUI's ``POST /prompt`` answers 400 with."""
        return {"error": self.error, "node_errors": self.node_errors}


def validate_prompt(
    prompt: Mapping[str, Any],
    object_info: ObjectInfo,
    *,
    partial_targets: Collection[str] | None = None,
    dialect: Dialect = Dialect.V0_8,
) -> ValidationResult:
    """Would a ComfyUI whose ``GET /object_info`` is ``object_info`` queue ``prompt``?"""
    outputs, refusal = _find_outputs(prompt, object_info, partial_targets, dialect)
    if refusal is not None:
        return ValidationResult(False, refusal)
    return _GraphCheck(prompt, object_info, dialect).run(outputs)


def types_compatible(received: Any, expected: Any) -> bool:
    """ComfyUI's ``validate_node_input`` (not strict): can an output of type ``received``
    feed an input of type ``expected``?"""
    if received == expected:
        return True
    if ANY_TYPE in (received, expected) or MATCH_TYPE in (received, expected):
        return True
    if isinstance(received, list) and expected == COMBO_TYPE:
        return True  # custom nodes that output an option list as their type
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    got = {part.strip() for part in received.split(",")}
    wanted = {part.strip() for part in expected.split(",")}
    return ANY_TYPE in got or ANY_TYPE in wanted or bool(got & wanted)


def full_type_name(klass: type) -> str:
    """``module.Qualname``, or the bare name of a builtin: ComfyUI's ``exception_type``."""
    module = klass.__module__
    return klass.__qualname__ if module == "builtins" else f"{module}.{klass.__qualname__}"


def _error(kind: str, message: str, details: str, extra: JsonDict | None = None) -> JsonDict:
    return {"type": kind, "message": message, "details": details, "extra_info": extra or {}}


# ---- the whole graph: classes and outputs -----------------------------------------------------


def _find_outputs(
    prompt: Mapping[str, Any],
    object_info: ObjectInfo,
    partial_targets: Collection[str] | None,
    dialect: Dialect,
) -> tuple[list[str], JsonDict | None]:
    outputs = []
    for node_id, node in prompt.items():
        if not isinstance(node, Mapping) or "class_type" not in node:
            return [], _missing_class(node_id, node, dialect)
        info = _class_info(object_info, node["class_type"])
        if info is None:
            return [], _unknown_class(node_id, node, dialect)
        if info.get("output_node") is True and (
            partial_targets is None or node_id in partial_targets
        ):
            outputs.append(node_id)
    if not outputs:
        return [], _error("prompt_no_outputs", "Prompt has no outputs", "")
    return outputs, None


def _class_info(object_info: ObjectInfo, class_type: Any) -> Mapping[str, Any] | None:
    if not isinstance(class_type, str):
        return None  # ComfyUI would fail on an unhashable name; nothing lists such a class
    info = object_info.get(class_type)
    return info if isinstance(info, Mapping) else None


def _title(node: Any) -> Any:
    meta = node.get("_meta") if isinstance(node, Mapping) else None
    return meta.get("title") if isinstance(meta, Mapping) else None


def _missing_class(node_id: str, node: Any, dialect: Dialect) -> JsonDict:
    details = f"Node ID '#{node_id}'"
    if dialect is Dialect.V0_8:
        message = "Cannot execute because a node is missing the class_type property."
        return _error("invalid_prompt", message, details)
    title = _title(node)
    message = (
        f"Node '{title or f'ID #{node_id}'}' has no class_type. The workflow may be "
        "corrupted or a custom node is missing."
    )
    extra = {"node_id": node_id, "class_type": None, "node_title": title}
    return _error("missing_node_type", message, details, extra)


def _unknown_class(node_id: str, node: Mapping[str, Any], dialect: Dialect) -> JsonDict:
    class_type = node["class_type"]
    details = f"Node ID '#{node_id}'"
    if dialect is Dialect.V0_8:
        message = f"Cannot execute because node {class_type} does not exist."
        return _error("invalid_prompt", message, details)
    title = _title(node)
    title = class_type if title is None else title
    message = f"Node '{title}' not found. The custom node may not be installed."
    extra = {"node_id": node_id, "class_type": class_type, "node_title": title}
    return _error("missing_node_type", message, details, extra)


# ---- outputs through their links --------------------------------------------------------------


class _GraphCheck:
    """ComfyUI's recursive ``validate_inputs`` as a loop over an explicit stack of
    :class:`_NodeCheck` frames; an exception in a frame is handled where ComfyUI's
    ``try`` would catch it: by the frame below (the linking node), or for an output node,
    by :meth:`_validate_output`."""

    def __init__(self, prompt: Mapping[str, Any], object_info: ObjectInfo, dialect: Dialect):
        self.prompt = prompt
        self.object_info = object_info
        self.dialect = dialect
        self.validated: dict[str, Verdict] = {}
        self.node_errors: JsonDict = {}
        self._declared: dict[str, list[_Declared]] = {}
        self._returns: dict[str, tuple[Any, ...]] = {}

    def run(self, outputs: list[str]) -> ValidationResult:
        good: list[str] = []
        refused: list[list[JsonDict]] = []
        for output in outputs:
            valid, reasons = self._validate_output(output)
            if valid:
                good.append(output)
                continue
            refused.append(reasons)
            self._record_failure(output)
        if good:
            return ValidationResult(True, None, good, self.node_errors)
        details = "\n".join(f"{e['message']}: {e['details']}" for errs in refused for e in errs)
        message = "Prompt outputs failed validation"
        error = _error("prompt_outputs_failed_validation", message, details)
        return ValidationResult(False, error, [], self.node_errors)

    def _validate_output(self, output: str) -> Verdict:
        if output in self.validated:
            return self.validated[output]
        try:
            return self._walk(output)
        except Exception as exc:  # what the output node's own checks raised
            reasons = [_exception_error(exc)]
            self.validated[output] = (False, reasons)
            return False, reasons

    def _walk(self, root: str) -> Verdict:
        # The stack of frames, keyed by node id: in order (the path from the output), and a
        # constant-time check for a cycle.
        visiting = {root: self._open(root)}
        while visiting:
            frame = _top(visiting)
            try:
                upstream = frame.advance()
            except Exception as exc:
                visiting.popitem()
                if not visiting:
                    raise
                self._blame(_top(visiting), frame.node_id, exc)
                continue
            if upstream is None:
                visiting.popitem()
                verdict = self._close(frame)
                if visiting:
                    _top(visiting).upstream_checked(verdict[0])
            else:
                self._descend(visiting, upstream)
        return self.validated[root]

    def _descend(self, visiting: dict[str, _NodeCheck], upstream: str) -> None:
        frame = _top(visiting)
        if upstream in self.validated:
            frame.upstream_checked(self.validated[upstream][0])
            return
        if upstream in visiting:
            path = list(visiting)
            self._mark_cycle([*path[path.index(upstream) :], upstream])
            frame.upstream_checked(False)
            return
        try:
            visiting[upstream] = self._open(upstream)
        except Exception as exc:
            self._blame(frame, upstream, exc)

    def _open(self, node_id: str) -> _NodeCheck:
        node = self.prompt[node_id]
        inputs = node["inputs"]  # may raise, as in ComfyUI
        return _NodeCheck(self, node_id, inputs, self.declared(node["class_type"]))

    def _close(self, frame: _NodeCheck) -> Verdict:
        # A cycle may have put an error on this node already: ComfyUI joins the two.
        was_valid, earlier = self.validated.get(frame.node_id, (True, []))
        errors = earlier + [e for e in frame.errors if e not in earlier]
        verdict = (was_valid and frame.valid and not frame.errors, errors)
        self.validated[frame.node_id] = verdict
        return verdict

    def _blame(self, frame: _NodeCheck, upstream: str, exc: Exception) -> None:
        """``upstream``'s own checks raised: ComfyUI records it on ``upstream``, in the words
        of ``frame``'s input that links to it."""
        reason = frame.upstream_raised(exc)
        self.validated[upstream] = (False, [reason])

    def _mark_cycle(self, path: list[str]) -> None:
        nodes = list(dict.fromkeys(path))
        shown = " -> ".join(f"{n} ({self.prompt[n]['class_type']})" for n in path)
        for node_id in nodes:
            extra = {"node_id": node_id, "cycle_nodes": nodes}
            reason = _error("dependency_cycle", "Dependency cycle detected", shown, extra)
            self.validated[node_id] = (False, [reason])

    def _record_failure(self, output: str) -> None:
        # As in ComfyUI: every node with errors seen so far has this output as a dependent.
        for node_id, (valid, reasons) in self.validated.items():
            if valid or not reasons:
                continue
            if node_id not in self.node_errors:
                class_type = self.prompt[node_id]["class_type"]
                entry = {"errors": reasons, "dependent_outputs": [], "class_type": class_type}
                self.node_errors[node_id] = entry
            self.node_errors[node_id]["dependent_outputs"].append(output)

    def declared(self, class_type: str) -> list[_Declared]:
        if class_type not in self._declared:
            self._declared[class_type] = _declared_inputs(self.object_info[class_type])
        return self._declared[class_type]

    def return_types(self, class_type: str) -> tuple[Any, ...]:
        if class_type not in self._returns:
            output = self.object_info[class_type].get("output") or ()
            self._returns[class_type] = tuple(output)  # RETURN_TYPES: a tuple, as in ComfyUI
        return self._returns[class_type]


def _top(visiting: dict[str, _NodeCheck]) -> _NodeCheck:
    return next(reversed(visiting.values()))


@dataclass(frozen=True, slots=True)
class _Declared:
    """One declared input, with what its checks need worked out once per class."""

    name: str
    required: bool
    input_type: Any
    extra: JsonDict
    convert: Callable[[Any], Any] | None
    dynamic: bool
    checked_by_the_node: bool

    @property
    def config(self) -> list[Any]:
        """``input_config`` of an error: the ``[type, options]`` pair of the object_info."""
        return [self.input_type, self.extra]


def _declared_inputs(info: Mapping[str, Any]) -> list[_Declared]:
    inputs = info.get("input") or {}
    required = inputs.get("required") or {}
    optional = inputs.get("optional") or {}
    declared = [_declare(name, True, spec) for name, spec in required.items()]
    declared += [_declare(n, False, s) for n, s in optional.items() if n not in required]
    return declared


def _declare(name: str, required: bool, spec: Any) -> _Declared:
    input_type, extra = spec, {}
    if isinstance(spec, list | tuple):
        input_type = spec[0] if spec else None
        extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    named = isinstance(input_type, str)
    return _Declared(
        name,
        required,
        input_type,
        extra,
        convert=_COERCE.get(input_type) if named else None,
        dynamic=named and input_type in DYNAMIC_TYPES,
        checked_by_the_node=_checked_by_the_node(extra),
    )


class _NodeCheck:
    """One node's inputs, checked in order; stops at each link whose node is yet to be
    validated (:meth:`advance` returns its id) and goes on once told how it went."""

    def __init__(
        self, owner: _GraphCheck, node_id: str, inputs: Any, declared: Sequence[_Declared]
    ) -> None:
        self.owner = owner
        self.node_id = node_id
        self.inputs = inputs
        self.declared = declared
        self.errors: list[JsonDict] = []
        self.valid = True
        self._next = 0
        self._waiting_on: tuple[_Declared, list[Any]] | None = None

    def advance(self) -> str | None:
        """Check inputs until one links to a node that must be validated first (its id), or
        the last one was checked (None). Raises what ComfyUI's checks would raise."""
        while self._next < len(self.declared):
            spec = self.declared[self._next]
            self._next += 1
            upstream = self._check(spec)
            if upstream is not None:
                return upstream
        return None

    def upstream_checked(self, valid: bool) -> None:
        self._waiting_on = None
        if not valid:
            self.valid = False

    def upstream_raised(self, exc: Exception) -> JsonDict:
        assert self._waiting_on is not None
        spec, link = self._waiting_on
        self._waiting_on = None
        self.valid = False
        return _inner_error(spec, exc, link)

    def _check(self, spec: _Declared) -> str | None:
        if spec.dynamic:
            return None  # expanded from the graph's own inputs at run time: the node checks
        if spec.name not in self.inputs:
            if spec.required:
                info = {"input_name": spec.name}
                message = "Required input is missing"
                self.errors.append(_error("required_input_missing", message, spec.name, info))
            return None
        value = self.inputs[spec.name]
        if isinstance(value, list):
            return self._check_link(spec, value)
        self._check_widget(spec, value)
        return None

    def _check_link(self, spec: _Declared, link: list[Any]) -> str | None:
        if len(link) != 2:
            message = "Bad linked input, must be a length-2 list of [node_id, slot_index]"
            info = {"input_name": spec.name, "input_config": spec.config, "received_value": link}
            self.errors.append(_error("bad_linked_input", message, spec.name, info))
            return None
        source_id = link[0]
        # These lookups raise for a node id the graph lacks or a bad slot, as in ComfyUI.
        source_class = self.owner.prompt[source_id]["class_type"]
        received = self.owner.return_types(source_class)[link[1]]
        if not types_compatible(received, spec.input_type):
            self.errors.append(_mismatch(spec, received, link))
            return None
        self._waiting_on = (spec, link)
        return str(source_id)  # a key of the graph: the lookup above found it

    def _check_widget(self, spec: _Declared, value: Any) -> None:
        if isinstance(value, dict) and "__value__" in value:
            value = value["__value__"]  # a literal list, which would otherwise read as a link
        if spec.convert is not None:
            try:
                value = spec.convert(value)
            except Exception as exc:
                self.errors.append(_conversion_error(spec, value, exc))
                return
        if spec.checked_by_the_node:
            return
        error = _range_error(spec, value) or _combo_error(spec, value, self.owner.dialect)
        if error is not None:
            self.errors.append(error)


def _checked_by_the_node(extra: JsonDict) -> bool:
    """Combos ComfyUI leaves to the node: uploaded files (the node checks they exist) and
    remote option lists (fetched by the browser)."""
    if extra.get("remote_combo"):
        return True
    return any(key.endswith("_upload") and flag for key, flag in extra.items())


def _mismatch(spec: _Declared, received: Any, link: list[Any]) -> JsonDict:
    details = f"{spec.name}, received_type({received}) mismatch input_type({spec.input_type})"
    info = {
        "input_name": spec.name,
        "input_config": spec.config,
        "received_type": received,
        "linked_node": link,
    }
    message = "Return type mismatch between linked nodes"
    return _error("return_type_mismatch", message, details, info)


def _conversion_error(spec: _Declared, value: Any, exc: Exception) -> JsonDict:
    info = {
        "input_name": spec.name,
        "input_config": spec.config,
        "received_value": value,
        "exception_message": str(exc),
    }
    message = f"Failed to convert an input value to a {spec.input_type} value"
    return _error("invalid_input_type", message, f"{spec.name}, {value}, {exc}", info)


def _range_error(spec: _Declared, value: Any) -> JsonDict | None:
    info = {"input_name": spec.name, "input_config": spec.config, "received_value": value}
    extra = spec.extra
    # Outside any try in ComfyUI: comparing a value that cannot be compared raises.
    if "min" in extra and value < extra["min"]:
        message = f"Value {value} smaller than min of {extra['min']}"
        return _error("value_smaller_than_min", message, spec.name, info)
    if "max" in extra and value > extra["max"]:
        message = f"Value {value} bigger than max of {extra['max']}"
        return _error("value_bigger_than_max", message, spec.name, info)
    return None


def _combo_error(spec: _Declared, value: Any, dialect: Dialect) -> JsonDict | None:
    if isinstance(spec.input_type, list):
        options = spec.input_type
    elif spec.input_type == COMBO_TYPE:
        options = spec.extra.get("options", [])
    else:
        return None
    if spec.extra.get("multiselect", False) and isinstance(value, list):
        wrong = [v for v in value if v not in options]
    else:
        wrong = [value] if value not in options else []
    if not wrong:
        return None
    too_long = len(options) > LONG_COMBO
    listing = f"(list of length {len(options)})" if too_long else str(options)
    shown = ", ".join(repr(v) if dialect is Dialect.CURRENT else f"'{v}'" for v in wrong)
    info = {
        "input_name": spec.name,
        "input_config": None if too_long else spec.config,
        "received_value": value,
    }
    details = f"{spec.name}: {shown} not in {listing}"
    return _error("value_not_in_list", "Value not in list", details, info)


def _exception_error(exc: Exception) -> JsonDict:
    info = {"exception_type": full_type_name(type(exc)), "traceback": []}
    return _error("exception_during_validation", "Exception when validating node", str(exc), info)


def _inner_error(spec: _Declared, exc: Exception, link: list[Any]) -> JsonDict:
    info = {
        "input_name": spec.name,
        "input_config": spec.config,
        "exception_message": str(exc),
        "exception_type": full_type_name(type(exc)),
        "traceback": [],
        "linked_node": link,
    }
    message = "Exception when validating inner node"
    return _error("exception_during_inner_validation", message, str(exc), info)
