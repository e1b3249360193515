"""Verdicts on Megatron-Bridge `CheckpointConfig` fields and values against a target release, shared by the
migration (migrator.migrate.bridge_mapping) and the Bridge lint rules (NM201-NM205, Python and YAML).

No libcst, no pydantic: the YAML lint imports this module.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from migrator.engine.bridge_table import BridgeConflict, BridgeTable
from migrator.versions import BridgeTarget, Version


@dataclass
class Verdict:
    code: str  # NM201 .. NM205
    message: str
    suggestion: str | None = None  # a field name to rename to (NM201)


def default_target(bridge: BridgeTable) -> BridgeTarget:
    """The newest release the table knows, on the megatron-core it pins."""
    newest = bridge.newest
    return BridgeTarget(Version.parse(newest.version), Version.parse(newest.megatron_core))


def _py(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


EFFECTS = {
    "call": "makes CheckpointConfig(...) raise TypeError (a keyword-only dataclass)",
    "assignment": "is silently ignored: CheckpointConfig is a plain (not slotted) dataclass, so the assignment only "
                  "adds an attribute nobody reads",
    "yaml": "is skipped with only a log warning when Bridge applies YAML overrides, and makes CheckpointConfig(...) "
            "raise TypeError when a run_config.yaml is instantiated",
}


def field_verdict(bridge: BridgeTable, target: BridgeTarget, name: str, *, assignment: bool = False,
                  context: str | None = None) -> Verdict | None:
    """NM201 for a name no Bridge release has (a NeMo 2.0 name gets its Bridge name), NM205 for a field the
    target release does not have. `context` ("call", "assignment", "yaml"; `assignment` is "assignment") says what
    the name does there: a TypeError in a call, silently ignored in an attribute assignment."""
    release = str(target.bridge)
    if bridge.facts(name, release) is not None:
        return None
    effect = EFFECTS[context or ("assignment" if assignment else "call")]
    span = bridge.lifespan(name)
    if span is not None:
        first, last = span
        when = (f"from Bridge {first} on" if Version.parse(release) < Version.parse(first)
                else f"up to Bridge {last}")
        return Verdict("NM205", f"{name} exists only {when}; with megatron-bridge={release} it {effect}")
    mapped = bridge.nemo2_by_argument.get(name)
    if mapped is not None and mapped.field is not None and not mapped.invert:
        if bridge.facts(mapped.field, release) is not None:
            return Verdict("NM201", f"{name} is NeMo 2.0's MegatronStrategy name; Bridge's CheckpointConfig calls it "
                           f"{mapped.field}: as written it {effect}", mapped.field)
    if mapped is not None and mapped.field is None:
        return Verdict("NM201", f"{name} is a NeMo 2.0 MegatronStrategy argument with no Bridge field: it {effect} "
                       f"({' '.join((mapped.why or '').split())})")
    close = difflib.get_close_matches(name, bridge.field_names(release), n=1, cutoff=0.75)
    if close:
        return Verdict("NM201", f"{name} is not a CheckpointConfig field: it {effect}; did you mean {close[0]}?",
                       close[0])
    return Verdict("NM201", f"{name} is not a CheckpointConfig field of Bridge {release}: it {effect}")


def value_verdict(bridge: BridgeTable, target: BridgeTarget, name: str, value: Any) -> Verdict | None:
    """NM203 for a value the target removed (zarr), NM202 for a wrong type or a value outside the allowed set.
    Neither fails at construction (Bridge never checks a Literal at run time): they fail at save or load."""
    release = str(target.bridge)
    facts = bridge.facts(name, release)
    lifecycle = bridge.mapping.values.get(name, {}).get(value) if isinstance(value, str) else None
    if lifecycle is not None and lifecycle.removed is not None and target.reached(
            bridge=lifecycle.removed.bridge, megatron_core=lifecycle.removed.megatron_core):
        text = f"{name}={_py(value)}: {lifecycle.removed.message} (target {target.describe()})"
        if lifecycle.convert_hint:
            text += f"; {' '.join(lifecycle.convert_hint.split())}"
        return Verdict("NM203", text, lifecycle.replacement)
    if facts is None:
        return None
    if value is None:
        if not facts.nullable:
            return Verdict("NM202", f"{name}=None: Bridge {release} types it {facts.type}, not optional")
        return None
    if facts.type in ("bool", "int", "str"):
        kind = {"bool": bool, "int": int, "str": str}[facts.type]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return Verdict("NM202", f"{name}={_py(value)}: Bridge {release} types it {facts.type}")
    if facts.allowed is not None and value not in facts.allowed:
        close = difflib.get_close_matches(str(value), [str(a) for a in facts.allowed], n=1, cutoff=0.8)
        return Verdict("NM202", f"{name}={_py(value)} is not a value Bridge {release} accepts (one of "
                       f"{', '.join(_py(a) for a in facts.allowed)}); it constructs, then fails at save or load"
                       + (f"; did you mean {_py(close[0])}?" if close else ""), close[0] if close else None)
    return None


def conflicts(bridge: BridgeTable, target: BridgeTarget, values: dict[str, Any],
              known: set[str] | None = None) -> list[BridgeConflict]:
    """The conflicts of the target release that `values` (Bridge's defaults for the rest) meet. With `known`, a
    conflict is reported only if every field it reads is in `known` or may be taken at its default."""
    release = str(target.bridge)
    met = []
    for conflict in bridge.conflicts_for(release):
        ok = True
        for cond in conflict.when:
            facts = bridge.facts(cond.field, release)
            if facts is None or (known is not None and cond.field not in known):
                ok = False
                break
            if not cond.holds(values.get(cond.field, facts.default)):
                ok = False
                break
        if ok:
            met.append(conflict)
    return met
