"""Megatron-Bridge YAML: override files and `run_config.yaml`, recognised by a top-level `checkpoint:` block that
holds Bridge `CheckpointConfig` fields (`migrator.yaml.kinds.classify`, kind "bridge", decided before any NeMo 1.0
classification: a run_config.yaml also has `model:`).

The checks are the Bridge rules NM201-NM205 (shared verdicts with the Python lint), on the block's keys and scalar
values. Interpolations (`${...}`) and non-scalar values are left alone; keys starting with `_` (`_target_`) are
OmegaConf/Hydra machinery, not fields.
"""
from __future__ import annotations

from typing import Any

from migrator.engine.diagnostics import Diagnostic, Edit, Fix
from migrator.engine.table import Table
from migrator.versions import BridgeTarget
from migrator.yaml.document import Document, Node
from migrator.yaml.kinds import Config


def check_bridge(document: Document, config: Config, table: Table, target: BridgeTarget | None) -> list[Diagnostic]:
    """The NM2xx findings on a "bridge" config's `checkpoint:` block, at `target` (None: the newest release)."""
    from migrator.engine.bridge_table import load_bridge_table
    from migrator.engine.bridge_verdicts import conflicts, default_target, field_verdict, value_verdict
    from migrator.yaml.checks import is_interpolation

    bridge = load_bridge_table()
    target = target or default_target(bridge)
    block_key, block = config.checkpoint
    findings: list[Diagnostic] = []

    def report(code: str, node: Node, message: str, fix: Fix | None = None) -> None:
        rule = table.rule_by_code[code]
        findings.append(Diagnostic(code=code, name=rule.name, message=message, severity=rule.severity,
                                   filename=document.filename, location=node.start, end_location=node.end, fix=fix))

    names = {str(k.raw) for k, _ in block.items if k.kind == "scalar"}
    values: dict[str, Any] = {}
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
            continue  # not known statically: no conflict is judged on it (it is not in `values`)
        values[name] = value.value
        verdict = value_verdict(bridge, target, name, value.value)
        if verdict is not None:
            fix = None
            if verdict.suggestion and isinstance(value.value, str) and value.is_plain:
                fix = Fix("unsafe", f"Use {verdict.suggestion}", (Edit(verdict.suggestion, value.start, value.end),))
            report(verdict.code, value, verdict.message, fix)
    # an override file sets only what it changes: fields it leaves out keep whatever the recipe set, so a conflict
    # is judged on the block's own values only; a run_config.yaml holds every field, so defaults never enter
    for conflict in conflicts(bridge, target, values, set(values)):
        report("NM204", block_key, f"{conflict.message} (megatron-bridge={target.bridge})")
    return findings
