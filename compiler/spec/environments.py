"""Loaded YAML -> validated ``RolloutSpec`` objects, one per environment, with located errors."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from compiler.spec import model, names
from compiler.diagnostics import Diagnostic, SpecError, by_environment
from compiler.spec.load import Document, Loc


@dataclass(frozen=True)
class Variant:
    """One compilable unit: a spec, or one environment of a spec."""

    environment: str | None
    spec: model.RolloutSpec
    doc: Document


def _describe(value: Any) -> str:
    """A value as the spec wrote it: YAML spellings for booleans and null."""
    if value is None or isinstance(value, bool):
        return {True: "true", False: "false", None: "null"}[value]
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _allowed_fields(cls: type[model.Model]) -> list[str]:
    return sorted((f.alias or name) for name, f in cls.model_fields.items())


def _model_at(loc: Loc) -> type[model.Model] | None:
    """The model class that validates the mapping at ``loc`` (for 'allowed fields' hints)."""
    current: Any = model.RolloutSpec
    skip_key = False
    for part in loc:
        if skip_key:
            skip_key = False
            continue
        if isinstance(part, str) and part.startswith("<"):
            current = model.STRATEGY_TAGS.get(part, current)  # a discriminator tag, not a key of the data
            continue
        if current is None:
            return None
        fields = current.model_fields
        field = next((f for n, f in fields.items() if part in (n, f.alias)), None)
        if field is None:
            return None
        skip_key = _is_container(field.annotation)
        current = _unwrap(field.annotation)
    return current if isinstance(current, type) and issubclass(current, model.Model) else None


def _walk_types(annotation: Any) -> list[Any]:
    import typing

    out, todo = [], [annotation]
    while todo:
        item = todo.pop()
        out.append(item)
        if typing.get_origin(item) in (typing.Annotated,):
            todo.append(typing.get_args(item)[0])
        elif typing.get_origin(item) in (typing.Union, __import__("types").UnionType):
            todo.extend(typing.get_args(item))
    return out


def _is_container(annotation: Any) -> bool:
    import typing

    return any(typing.get_origin(t) in (list, dict) for t in _walk_types(annotation))


def _unwrap(annotation: Any) -> Any:
    """The single model class inside an annotation (through Optional, Annotated, list, dict)."""
    import typing

    found: list[type] = []
    todo = [annotation]
    while todo:
        item = todo.pop()
        if isinstance(item, type) and issubclass(item, model.Model):
            found.append(item)
        else:
            todo.extend(typing.get_args(item))
    return found[0] if len(set(found)) == 1 else None


_GATES = ("ErrorRateGate", "LatencyGate", "RatioGate", "CustomGate")
_STAGES = ("Stage", "Step", "PresetStrategy", "BlueGreen", "BlueGreenStrategy")
_TIMING = "the generated Alertmanager routes group alerts by rollout, stage and gate and time each severity " \
          "themselves (docs/observability.md)"
#: Fields of the tools a spec often replaces (Argo Rollouts, Flagger, flagd, Alertmanager), per model -> what to
#: write instead. A nearby field name would mislead (`enabled` is not `engaged`).
_FOREIGN: dict[tuple[str, str], str] = {
    ("Flag", "enabled"): "a flag is on for the share of users in `rollout` (100%: everyone, 0%: no one) and the "
                         "targeting keys in `allow`; `engaged` pulls a kill switch",
    ("Flag", "variants"): "flags are on or off: `rollout` gives the share of users that get them on",
    ("Flag", "defaultVariant"): "flags are on or off: `rollout: 0%` keeps one off for everyone but `allow`",
    ("Flag", "state"): "`rollout: 0%` turns a flag off for everyone but `allow`; a kill switch (`kill_switch: true`, "
                       "`engaged: true`) forces flags off",
    ("Flag", "targeting"): "`allow` lists targeting keys that always get the flag; `rollout` gives the share of "
                           "the others",
    ("ErrorRateGate", "min"): "error_rate is the share of failed requests: a success rate of at least 99% is "
                              "`max: 1%`",
    ("LatencyGate", "min"): "a latency gate takes `max`, the longest a request may take",
    **{(model, "threshold"): "a gate's `for` is how long a breach must last before it acts (the failed checks "
                             "in a row, times their interval)" for model in _GATES + _STAGES},
    **{(model, "interval"): "a stage's `hold` is how long it runs; a gate's `window` is the range its rate is "
                            "measured over" for model in _GATES + _STAGES},
    **{(model, word): "a stage's share of traffic is its `weight`; list the weights as stages, or as a "
                      "strategy's `custom` steps" for model in _STAGES for word in ("setWeight", "maxWeight",
                                                                                   "stepWeight")},
    **{(model, "pause"): "a stage runs for its `hold`; `approve: manual` waits for a person (`rollout approve`)"
       for model in _STAGES},
    **{(model, "analysis"): "a stage's (or the strategy's) checks are its `gates`" for model in _STAGES},
    **{(model, word): _TIMING for model in ("Alerting", "Routes", "Receiver")
       for word in ("group_by", "group_wait", "group_interval", "repeat_interval")},
}


def _message(error: ErrorDetails, doc: Document) -> tuple[Loc, str, bool]:
    """A pydantic error -> (data location, message, point at the key rather than the value)."""
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        field = loc[-1]
        parent = loc[:-1]
        cls = _model_at(parent)
        hint = ""
        if cls is not None:
            allowed = _allowed_fields(cls)
            known = _FOREIGN.get((cls.__name__, str(field)))
            close = difflib.get_close_matches(str(field), allowed, n=1)
            if known is not None:
                hint = f": {known}"
            else:
                hint = f"; did you mean '{close[0]}'?" if close else f"; allowed: {', '.join(allowed)}"
        return loc, f"unknown field '{field}'{hint}", True
    if kind == "missing":
        return loc, f"missing required field '{loc[-1]}'", True
    if kind in ("too_long", "too_short") and isinstance(error.get("ctx"), dict):
        ctx = error["ctx"]
        bound = ctx.get("max_length") if kind == "too_long" else ctx.get("min_length")
        size = len(error["input"]) if hasattr(error.get("input"), "__len__") else ctx.get("actual_length")
        field = _dotted(loc, doc.data) or "the spec"
        return loc, f"{field}: {size} entries, {'at most' if kind == 'too_long' else 'at least'} {bound}", False
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        cls = _model_at(loc)
        fields = f" of {', '.join(_allowed_fields(cls))}" if cls is not None else ""
        field = _dotted(loc, doc.data)
        where = f"{field}: " if field else ""
        return loc, f"{where}expected a mapping{fields} (got {_describe(error.get('input'))})", False
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    message = message[:1].lower() + message[1:]
    if kind in ("literal_error", "enum"):
        message = f"{_describe(error.get('input'))} is not allowed: {message}"
    elif kind.endswith("_type") or kind.endswith("_parsing"):
        message = f"{message} (got {_describe(error.get('input'))})"
    field = _dotted(loc, doc.data)
    if field:
        message = f"{field}: {message}"
    return loc, message, False


def _dotted(loc: Loc, data: Any) -> str:
    """The part of ``loc`` that exists in the data, as ``stages[1].weight``."""
    out = ""
    node = data
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            out += ("." if out else "") + part
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out += f"[{part}]"
            node = node[part]
    return out


def validate_data(doc: Document, data: dict[str, Any]) -> model.RolloutSpec:
    try:
        return model.RolloutSpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    diagnostics: dict[tuple[int, int, str], Diagnostic] = {}
    for error in errors:
        loc, message, at_key = _message(error, doc)
        if error.get("input", "") is None and doc.swallowed_by_comment(loc):
            message += ": in YAML a `#` after `: ` starts a comment, so the value is empty; quote it (\"#...\")"
        diagnostic = doc.error(loc, message, "schema", prefer_key=at_key)
        diagnostics.setdefault((diagnostic.line, diagnostic.col, diagnostic.message), diagnostic)
    for diagnostic in _rules_despite(doc, data, errors):
        diagnostics.setdefault((diagnostic.line, diagnostic.col, diagnostic.message), diagnostic)
    raise SpecError(diagnostics.values())


#: Stand-ins for required sections that failed the schema, so that the rules of the other sections still run.
_STAND_INS: dict[str, Any] = {
    "apiVersion": model.API_VERSION,
    "kind": "Rollout",
    "metadata": {"name": "stand-in", "namespace": "stand-in", "owner": "stand-in"},
    "service": {"host": "stand-in.invalid", "port": 80, "stable": {"version": "a", "backend": "stand-in-a"},
                "canary": {"version": "b", "backend": "stand-in-b"}},
    "traffic": {"targets": []},
    "current": "stand-in",
}


def _rules_despite(doc: Document, data: dict[str, Any], errors: list[ErrorDetails]) -> list[Diagnostic]:
    """The semantic problems of the sections that passed the schema: every problem is reported at once."""
    from compiler.spec import rules

    fields = {(f.alias or name): name for name, f in model.RolloutSpec.model_fields.items()}
    if not errors or any(not error["loc"] for error in errors):
        return []  # the document as a whole is wrong
    failed = {str(error["loc"][0]) for error in errors}
    if not failed <= set(fields):
        return []
    repaired = dict(data)
    for key in failed:
        if key in _STAND_INS:
            repaired[key] = _STAND_INS[key]
        else:
            repaired.pop(key, None)
    try:
        spec = model.RolloutSpec.model_validate(repaired)
    except ValidationError:
        return []
    return rules.check(spec, doc, frozenset(fields[key] for key in failed))


# --------------------------------------------------------------------------- environments


class _Merger:
    """Deep merge of an environment's overrides over the base spec, keeping source positions."""

    def __init__(self, doc: Document, env: str):
        self.doc = doc
        self.src_prefix: Loc = ("environments", env)
        self.keys = {k: v for k, v in doc.keys.items() if not k or k[0] != "environments"}
        self.values = {k: v for k, v in doc.values.items() if not k or k[0] != "environments"}

    def _position(self, out: Loc, src: Loc) -> None:
        full = self.src_prefix + src
        if full in self.doc.keys:
            self.keys[out] = self.doc.keys[full]
        if full in self.doc.values:
            self.values[out] = self.doc.values[full]

    def take(self, value: Any, out: Loc, src: Loc) -> Any:
        self._position(out, src)
        if isinstance(value, dict):
            return {k: self.take(v, out + (k,), src + (k,)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.take(v, out + (i,), src + (i,)) for i, v in enumerate(value)]
        return value

    def merge(self, base: Any, over: Any, out: Loc, src: Loc) -> Any:
        if isinstance(base, dict) and isinstance(over, dict):
            self._position(out, src)
            result = dict(base)
            for key, value in over.items():
                if value is None:
                    result.pop(key, None)  # `key: null` in an environment removes the key
                elif key in base:
                    result[key] = self.merge(base[key], value, out + (key,), src + (key,))
                else:
                    result[key] = self.take(value, out + (key,), src + (key,))
            return result
        if _named_list(base) and _named_list(over):
            self._position(out, src)
            merged = list(base)
            index = {item["name"]: i for i, item in enumerate(base)}
            for j, item in enumerate(over):
                if item["name"] in index:
                    i = index[item["name"]]
                    merged[i] = self.merge(base[i], item, out + (i,), src + (j,))
                else:
                    merged.append(self.take(item, out + (len(merged),), src + (j,)))
            return merged
        return self.take(over, out, src)


def _named_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in value)
    )


def expand(doc: Document) -> list[Variant]:
    """Validate a document: one variant, or one per environment."""
    data = doc.data
    environments = data.get("environments")
    if environments is None:
        return [Variant(None, validate_data(doc, data), doc)]
    base = {k: v for k, v in data.items() if k != "environments"}
    if not isinstance(environments, dict) or not environments:
        raise SpecError(
            [doc.error(("environments",), "environments is a mapping of environment name to overrides", "schema")]
        )
    # Validate the shape of the environments map itself (names, mappings) through the model.
    problems: list[tuple[Diagnostic, str | None]] = []
    variants: list[Variant] = []
    for env, overrides in environments.items():
        if not isinstance(overrides, dict):
            problems.append(
                (doc.error(("environments", env), f"environment '{env}' must be a mapping of overrides", "schema"),
                 None)
            )
            continue
        if "environments" in overrides:
            problems.append((doc.error(("environments", env, "environments"), "environments cannot nest", "schema"),
                             None))
            continue
        merger = _Merger(doc, env)
        merged = merger.merge(base, overrides, (), ())
        env_doc = Document(path=doc.path, data=merged, sha256=doc.sha256, keys=merger.keys, values=merger.values,
                           text=doc.text)
        try:
            names.check_dns1123_label(env, "environment name")
        except ValueError as exc:
            problems.append((doc.error(("environments", env), str(exc), "schema"), None))
            continue
        try:
            variants.append(Variant(env, validate_data(env_doc, merged), env_doc))
        except SpecError as exc:
            problems.extend((d, env) for d in exc.diagnostics)
    if problems:
        raise SpecError(by_environment(problems))
    return variants

