"""Megatron-Bridge YAML: override files and `run_config.yaml`, recognised by a top-level `checkpoint:` block that
holds Bridge `CheckpointConfig` fields. This is decided before any NeMo 1.0 classification (a run_config.yaml also
has `model:`), by one small function, `bridge_kind`, that returns a kind or None.

The checks are the Bridge rules NM201-NM205 (shared verdicts with the Python lint), on the block's keys and scalar
values. Interpolations (`${...}`) and non-scalar values are left alone; keys starting with `_` (`_target_`) are
OmegaConf/Hydra machinery, not fields.
"""
from __future__ import annotations

from typing import Any

from migrator.engine.diagnostics import Diagnostic, Edit, Fix
from migrator.engine.table import Table
from migrator.yaml.document import Document, Node

BRIDGE_CHECKPOINT = "bridge-checkpoint"


def _checkpoint_block(root: Node) -> tuple[Node, Node] | None:
    if root.kind != "mapping":
        return None
    pair = root.pair("checkpoint")
    return pair if pair is not None and pair[1].kind == "mapping" else None


def bridge_kind(root: Node) -> str | None:
    """`bridge-checkpoint` when the document's top-level `checkpoint:` mapping names a Bridge CheckpointConfig field
    (of any release) or targets the class; None otherwise (the NeMo 1.0 classification then decides)."""
    pair = _checkpoint_block(root)
    if pair is None:
        return None
    keys = [k.raw for k, _ in pair[1].items if k.kind == "scalar"]
    if not keys:
        return None
    from migrator.engine.bridge_table import load_bridge_table

    bridge = load_bridge_table()
    target = pair[1].get("_target_")
    if target is not None and target.kind == "scalar" and str(target.value) in bridge.mapping.class_names:
        return BRIDGE_CHECKPOINT
    return BRIDGE_CHECKPOINT if any(bridge.lifespan(str(k)) is not None for k in keys) else None


def check_bridge(document: Document, root: Node, table: Table, options: Any) -> list[Diagnostic]:
    from migrator.engine.bridge_table import load_bridge_table
    from migrator.engine.bridge_verdicts import conflicts, default_target, field_verdict, value_verdict
    from migrator.yaml.checks import is_interpolation

    bridge = load_bridge_table()
    target = getattr(options, "bridge_target", None) or default_target(bridge)
    block_key, block = _checkpoint_block(root)
    findings: list[Diagnostic] = []

    def report(code: str, node: Node, message: str, fix: Fix | None = None) -> None:
        rule = table.rule_by_code[code]
        findings.append(Diagnostic(code=code, name=rule.name, message=message, severity=rule.severity,
                                   filename=document.filename, location=node.start, end_location=node.end, fix=fix))

    names = {str(k.raw) for k, _ in block.items if k.kind == "scalar"}
    values: dict[str, Any] = {}
    unknown: set[str] = set()
    for key, value in block.items:
        if key.kind != "scalar" or str(key.raw).startswith("_"):
            continue
        name = str(key.raw)
        verdict = field_verdict(bridge, target, name, context="yaml")
        if verdict is not None:
            fix = None
            if verdict.suggestion and verdict.suggestion not in names:
                fix = Fix("unsafe", f"Rename to {verdict.suggestion}",
                          (Edit(verdict.suggestion, key.start, key.end),))
            report(verdict.code, key, verdict.message, fix)
            continue
        if value.kind != "scalar" or is_interpolation(value):
            unknown.add(name)
            continue
        values[name] = value.value
        verdict = value_verdict(bridge, target, name, value.value)
        if verdict is not None:
            fix = None
            if verdict.suggestion and isinstance(value.value, str) and value.is_plain:
                fix = Fix("unsafe", f"Use {verdict.suggestion}", (Edit(verdict.suggestion, value.start, value.end),))
            report(verdict.code, value, verdict.message, fix)
    # an override file sets only what it changes: fields it leaves out keep whatever the recipe set, so a conflict
    # is judged on the block's own values only; a run_config.yaml holds every field, so defaults never enter
    known = set(values)
    for conflict in conflicts(bridge, target, values, known):
        report("NM204", block_key,
               f"{conflict.message} (megatron-bridge={target.bridge})")
    return findings
