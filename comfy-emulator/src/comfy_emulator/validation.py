"""Prompt validation with the semantics of ComfyUI's `execution.validate_prompt`.

The order of checks, the error objects and where errors are attributed all follow ComfyUI:

- every node needs a known `class_type` (else `invalid_prompt`, or `missing_node_type` naming
  the node's `_meta.title` in ComfyUI since 2026-02, with empty `node_errors`);
- at least one output node must be targeted (else `prompt_no_outputs`);
- each output is validated recursively through its links. A node lists only its *own* errors;
  nodes that fail only because something upstream failed get no entry. An exception while
  validating a linked node (e.g. a link to a node id that does not exist) is reported as
  `exception_during_inner_validation` *on the linked node*, under the downstream input's name;
- widget values are coerced with int()/float()/str()/bool() and the coerced values are written
  back into the prompt (that is what gets queued);
- inputs named in a node's `custom_validated` skip the min/max/combo checks and go through the
  node's `validate_inputs` instead (LoadImage checks that the file exists);
- if some outputs validate, the prompt is accepted with only those outputs and the failed
  branches still listed in `node_errors`.

Unexpected Python errors (a missing `inputs` key, a bad slot index) are caught exactly where
ComfyUI catches them, so their `exception_type`/`traceback` reports look the same.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from comfy_emulator.nodes.base import Node, NodeEnv, NodeRegistry

JsonDict = dict[str, Any]
Verdict = tuple[bool, list[JsonDict], str]
_COERCE: dict[str, Callable[[Any], Any]] = {
    "INT": int,
    "FLOAT": float,
    "STRING": str,
    "BOOLEAN": bool,
}


@dataclass
class ValidationResult:
    ok: bool
    error: JsonDict | None
    outputs: list[str] = field(default_factory=list)
    node_errors: JsonDict = field(default_factory=dict)


def full_type_name(klass: type) -> str:
    """`module.Qualname`, or the bare name for builtins (ComfyUI's exception_type format)."""
    module = klass.__module__
    return klass.__qualname__ if module == "builtins" else f"{module}.{klass.__qualname__}"


def _error(kind: str, message: str, details: str, extra: JsonDict | None = None) -> JsonDict:
    return {"type": kind, "message": message, "details": details, "extra_info": extra or {}}


def validate_prompt(
    registry: NodeRegistry,
    env: NodeEnv,
    prompt: JsonDict,
    partial_targets: Any = None,
    log: Callable[[str], None] = lambda _: None,
    *,
    missing_node_type: bool = False,
) -> ValidationResult:
    """Validate an API-format prompt; coerced widget values are written back into it.
    ``missing_node_type``: word a missing or unknown class as ComfyUI does since 2026-02."""
    missing = _missing_node_type if missing_node_type else _invalid_prompt
    outputs, early_error = _find_outputs(registry, prompt, partial_targets, missing)
    if early_error is not None:
        return ValidationResult(False, early_error)
    return _PromptValidator(registry, env, prompt, log).run(outputs)


MissingClass = Callable[[str, Any], JsonDict]
"""(node id, node) -> the error for a node without a class_type or with an unknown one."""


def _invalid_prompt(node_id: str, node: Any) -> JsonDict:
    if not isinstance(node, dict) or "class_type" not in node:
        message = "Cannot execute because a node is missing the class_type property."
    else:
        message = f"Cannot execute because node {node['class_type']} does not exist."
    return _error("invalid_prompt", message, f"Node ID '#{node_id}'")


def _missing_node_type(node_id: str, node: Any) -> JsonDict:
    meta = node.get("_meta") if isinstance(node, dict) else None
    title = meta.get("title") if isinstance(meta, dict) else None
    if not isinstance(node, dict) or "class_type" not in node:
        class_type = None
        message = (
            f"Node '{title or f'ID #{node_id}'}' has no class_type. The workflow may be "
            "corrupted or a custom node is missing."
        )
    else:
        class_type = node["class_type"]
        title = class_type if title is None else title
        message = f"Node '{title}' not found. The custom node may not be installed."
    extra = {"node_id": node_id, "class_type": class_type, "node_title": title}
    return _error("missing_node_type", message, f"Node ID '#{node_id}'", extra)


def _find_outputs(
    registry: NodeRegistry, prompt: JsonDict, partial_targets: Any, missing: MissingClass
) -> tuple[list[str], JsonDict | None]:
    outputs = []
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return [], missing(node_id, node)
        cls = registry.get(node["class_type"])
        if cls is None:
            return [], missing(node_id, node)
        if cls.output_node and (partial_targets is None or node_id in partial_targets):
            outputs.append(node_id)
    if not outputs:
        return [], _error("prompt_no_outputs", "Prompt has no outputs", "")
    return outputs, None


class _PromptValidator:
    def __init__(
        self, registry: NodeRegistry, env: NodeEnv, prompt: JsonDict, log: Callable[[str], None]
    ) -> None:
        self.registry = registry
        self.env = env
        self.prompt = prompt
        self.log = log
        self.validated: dict[str, Verdict] = {}
        self.node_errors: JsonDict = {}

    def run(self, outputs: list[str]) -> ValidationResult:
        good: list[str] = []
        failures: list[tuple[str, list[JsonDict]]] = []
        for output in outputs:
            valid, reasons = self._validate_output(output)
            if valid:
                good.append(output)
            else:
                failures.append((output, reasons))
                self._record_failure(output, reasons)
        if good:
            return ValidationResult(True, None, good, self.node_errors)
        details = "\n".join(f"{e['message']}: {e['details']}" for _, errs in failures for e in errs)
        error = _error(
            "prompt_outputs_failed_validation", "Prompt outputs failed validation", details
        )
        return ValidationResult(False, error, [], self.node_errors)

    def _validate_output(self, output: str) -> tuple[bool, list[JsonDict]]:
        try:
            valid, reasons, _ = self.validate_node(output)
            return valid, reasons
        except Exception as exc:
            reasons = [_exception_error(exc)]
            self.validated[output] = (False, reasons, output)
            return False, reasons

    def _record_failure(self, output: str, reasons: list[JsonDict]) -> None:
        self.log(f"Failed to validate prompt for output {output}:")
        if reasons:
            self.log("* (prompt):")
            for reason in reasons:
                self.log(f"  - {reason['message']}: {reason['details']}")
        # Like ComfyUI, every invalid node seen so far gets this output as a dependent.
        for node_id, (valid, node_reasons, _) in self.validated.items():
            if valid or not node_reasons:
                continue
            if node_id not in self.node_errors:
                self._add_node_error(node_id, node_reasons)
            self.node_errors[node_id]["dependent_outputs"].append(output)
        self.log("Output will be ignored")

    def _add_node_error(self, node_id: str, reasons: list[JsonDict]) -> None:
        class_type = self.prompt[node_id]["class_type"]
        entry = {"errors": reasons, "dependent_outputs": [], "class_type": class_type}
        self.node_errors[node_id] = entry
        self.log(f"* {class_type} {node_id}:")
        for reason in reasons:
            self.log(f"  - {reason['message']}: {reason['details']}")

    def validate_node(self, node_id: str) -> Verdict:
        if node_id in self.validated:
            return self.validated[node_id]
        node = self.prompt[node_id]
        inputs: JsonDict = node["inputs"]
        cls = self._class_of(node_id)
        declared = cls.input_types(self.env)
        checker = _NodeChecker(self, cls, declared, inputs)
        errors, valid = checker.check()
        verdict: Verdict = (False, errors, node_id) if errors or not valid else (True, [], node_id)
        self.validated[node_id] = verdict
        return verdict

    def _class_of(self, node_id: str) -> type[Node]:
        class_type = self.prompt[node_id]["class_type"]
        cls = self.registry.get(class_type)
        if cls is None:
            raise KeyError(class_type)
        return cls


class _NodeChecker:
    """validate_inputs for one node: each declared input, then custom validation."""

    def __init__(
        self, owner: _PromptValidator, cls: type[Node], declared: JsonDict, inputs: JsonDict
    ) -> None:
        self.owner = owner
        self.cls = cls
        self.declared = declared
        self.inputs = inputs
        self.errors: list[JsonDict] = []
        self.valid = True

    def check(self) -> tuple[list[JsonDict], bool]:
        for category in ("required", "optional"):
            for name, spec in self.declared.get(category, {}).items():
                self._check_input(name, category, spec)
        self._custom_validation()
        return self.errors, self.valid

    def _check_input(self, name: str, category: str, spec: Any) -> None:
        input_type, extra = _split_spec(spec)
        if name not in self.inputs:
            if category == "required":
                extra_info = {"input_name": name}
                self.errors.append(
                    _error("required_input_missing", "Required input is missing", name, extra_info)
                )
            return
        value = self.inputs[name]
        config = [input_type, extra]
        if isinstance(value, list):
            self._check_link(name, value, input_type, config)
        else:
            self._check_widget(name, value, input_type, extra, config)

    def _check_link(self, name: str, link: list[Any], input_type: Any, config: list[Any]) -> None:
        if len(link) != 2:
            message = "Bad linked input, must be a length-2 list of [node_id, slot_index]"
            info = {"input_name": name, "input_config": config, "received_value": link}
            self.errors.append(_error("bad_linked_input", message, name, info))
            return
        source_id = link[0]
        # These lookups raise for a missing node / bad slot; the caller reports the exception.
        source_class = self.owner.prompt[source_id]["class_type"]
        source = self.owner.registry.get(source_class)
        received = (source.return_types if source is not None else ())[link[1]]
        if not types_compatible(received, input_type):
            self._mismatch(name, link, received, input_type, config)
            return
        try:
            upstream_valid = self.owner.validate_node(source_id)[0]
        except Exception as exc:
            self.valid = False
            reason = _inner_error(name, config, exc, link)
            self.owner.validated[source_id] = (False, [reason], source_id)
            return
        if not upstream_valid:
            self.valid = False

    def _mismatch(
        self, name: str, link: list[Any], received: str, input_type: Any, config: list[Any]
    ) -> None:
        details = f"{name}, received_type({received}) mismatch input_type({input_type})"
        info = {
            "input_name": name,
            "input_config": config,
            "received_type": received,
            "linked_node": link,
        }
        message = "Return type mismatch between linked nodes"
        self.errors.append(_error("return_type_mismatch", message, details, info))

    def _check_widget(
        self, name: str, value: Any, input_type: Any, extra: JsonDict, config: list[Any]
    ) -> None:
        try:
            value = self._coerce(name, value, input_type)
        except Exception as exc:
            message = f"Failed to convert an input value to a {input_type} value"
            info = {
                "input_name": name,
                "input_config": config,
                "received_value": value,
                "exception_message": str(exc),
            }
            self.errors.append(
                _error("invalid_input_type", message, f"{name}, {value}, {exc}", info)
            )
            return
        if name in self.cls.custom_validated:
            return
        error = _range_error(name, value, extra, config) or _combo_error(
            name, value, input_type, extra, config
        )
        if error is not None:
            self.errors.append(error)

    def _coerce(self, name: str, value: Any, input_type: Any) -> Any:
        # {"__value__": [...]} wraps a literal list, which would otherwise read as a link.
        if isinstance(value, dict) and "__value__" in value:
            value = value["__value__"]
            self.inputs[name] = value
        convert = _COERCE.get(input_type) if isinstance(input_type, str) else None
        if convert is not None:
            value = convert(value)
            self.inputs[name] = value
        return value

    def _custom_validation(self) -> None:
        names = [n for n in self.cls.custom_validated if n in self.inputs]
        if not names:
            return
        values = {n: self.inputs[n] for n in names}
        verdict = self.cls.validate_inputs(self.owner.env, values)
        if verdict is True:
            return
        for name in names:
            details = name if verdict is False else f"{name} - {verdict}"
            message = "Custom validation failed for node"
            self.errors.append(
                _error("custom_validation_failed", message, details, {"input_name": name})
            )


def _split_spec(spec: Any) -> tuple[Any, JsonDict]:
    if isinstance(spec, list | tuple):
        extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        return spec[0], extra
    return spec, {}


def types_compatible(received: Any, expected: Any) -> bool:
    """ComfyUI's validate_node_input (non-strict): equal, "*", or overlapping "A,B" unions."""
    if received == expected:
        return True
    if received == "*" or expected == "*":
        return True
    if isinstance(received, list) and expected == "COMBO":
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    return "*" in got or "*" in want or bool(got & want)


def _range_error(name: str, value: Any, extra: JsonDict, config: list[Any]) -> JsonDict | None:
    info = {"input_name": name, "input_config": config, "received_value": value}
    if "min" in extra and value < extra["min"]:
        message = f"Value {value} smaller than min of {extra['min']}"
        return _error("value_smaller_than_min", message, name, info)
    if "max" in extra and value > extra["max"]:
        message = f"Value {value} bigger than max of {extra['max']}"
        return _error("value_bigger_than_max", message, name, info)
    return None


def _combo_error(
    name: str, value: Any, input_type: Any, extra: JsonDict, config: list[Any]
) -> JsonDict | None:
    if isinstance(input_type, list):
        options = input_type
    elif input_type == "COMBO":
        options = extra.get("options", [])
    else:
        return None
    if value in options:
        return None
    # Long lists (e.g. scanned model names) are summarised and their config left out.
    too_long = len(options) > 20
    listing = f"(list of length {len(options)})" if too_long else str(options)
    info = {
        "input_name": name,
        "input_config": None if too_long else config,
        "received_value": value,
    }
    return _error(
        "value_not_in_list", "Value not in list", f"{name}: '{value}' not in {listing}", info
    )


def _exception_error(exc: Exception) -> JsonDict:
    info = {
        "exception_type": full_type_name(type(exc)),
        "traceback": traceback.format_tb(exc.__traceback__),
    }
    return _error("exception_during_validation", "Exception when validating node", str(exc), info)


def _inner_error(name: str, config: list[Any], exc: Exception, link: list[Any]) -> JsonDict:
    info = {
        "input_name": name,
        "input_config": config,
        "exception_message": str(exc),
        "exception_type": full_type_name(type(exc)),
        "traceback": traceback.format_tb(exc.__traceback__),
        "linked_node": link,
    }
    message = "Exception when validating inner node"
    return _error("exception_during_inner_validation", message, str(exc), info)
