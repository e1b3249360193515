"""Lint Megatron-Bridge code: `CheckpointConfig(...)` calls (found by qualified name, any import style or alias,
also nested in `ConfigContainer(checkpoint=CheckpointConfig(...))`) and attribute assignments on a config's
checkpoint (`cfg.checkpoint.save_interval = 100`, the way Bridge recipes are customised, or on a variable bound to a
CheckpointConfig call).

Rules (rules/lint/NM20x-*.yaml): NM201 unknown field (a TypeError in a call; silently ignored in an assignment;
NeMo 2.0 names get their Bridge name), NM202 wrong type / value outside the allowed set, NM203 a value the target
removed (zarr), NM204 a combination finalize()/validate() raise on, NM205 a field the target release lacks.
Assignments are judged only in a module that imports from `megatron.bridge`.
"""
from __future__ import annotations

import functools
from typing import Any

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider, QualifiedNameProvider

from migrator.engine.bridge_table import load_bridge_table
from migrator.engine.bridge_verdicts import Verdict, conflicts, default_target, field_verdict, value_verdict
from migrator.engine.diagnostics import Diagnostic, Edit, Fix, Location
from migrator.engine.table import Table
from migrator.python.bridge_from_nemo2 import literal
from migrator.python.calls import NOT_LITERAL, _absolute, package_of
from migrator.versions import BridgeTarget


class _Collector(cst.CSTVisitor):
    METADATA_DEPENDENCIES = (QualifiedNameProvider,)

    def __init__(self, classes: set[str], package: str | None):
        super().__init__()
        self.classes = classes
        self.package = package
        self.calls: list[cst.Call] = []
        self.bound: dict[str, cst.Call] = {}  # variable name -> the CheckpointConfig call assigned to it
        self.assignments: list[tuple[cst.Attribute, cst.BaseExpression]] = []  # (target attribute, value)
        self.imports_bridge = False

    def is_config(self, node: cst.CSTNode) -> bool:
        return any(_absolute(q.name, self.package) in self.classes
                   for q in self.get_metadata(QualifiedNameProvider, node, set()))

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if node.module is not None and cst.Module([]).code_for_node(node.module).startswith("megatron.bridge"):
            self.imports_bridge = True

    def visit_Import(self, node: cst.Import) -> None:
        if any(cst.Module([]).code_for_node(a.name).startswith("megatron.bridge") for a in node.names):
            self.imports_bridge = True

    def visit_Call(self, node: cst.Call) -> None:
        if self.is_config(node.func):
            self.calls.append(node)

    def visit_Assign(self, node: cst.Assign) -> None:
        for target in node.targets:
            if isinstance(target.target, cst.Name) and isinstance(node.value, cst.Call) \
                    and self.is_config(node.value.func):
                self.bound[target.target.value] = node.value
            if isinstance(target.target, cst.Attribute):
                self.assignments.append((target.target, node.value))

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if isinstance(node.target, cst.Attribute) and node.value is not None:
            self.assignments.append((node.target, node.value))


class BridgeChecker:
    def __init__(self, module: cst.Module, filename: str, table: Table, target: BridgeTarget | None, shift: int):
        self.bridge = load_bridge_table()
        self.target = target or default_target(self.bridge)
        self.release = str(self.target.bridge)
        self.wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
        self.module = self.wrapper.module
        self.filename = filename
        self.table = table
        self.shift = shift
        self.findings: list[Diagnostic] = []

    @functools.cached_property
    def positions(self):
        return self.wrapper.resolve(PositionProvider)

    def loc(self, position) -> Location:
        return Location(position.line, position.column + 1 + (self.shift if position.line == 1 else 0))

    def report(self, verdict: Verdict | tuple[str, str], node: cst.CSTNode, fix: Fix | None = None) -> None:
        code, message = (verdict.code, verdict.message) if isinstance(verdict, Verdict) else verdict
        rule = self.table.rule_by_code[code]
        where = self.positions[node]
        self.findings.append(Diagnostic(code=code, name=rule.name, message=message, severity=rule.severity,
                                        filename=self.filename, location=self.loc(where.start),
                                        end_location=self.loc(where.end), fix=fix))

    def rename(self, node: cst.CSTNode, new: str) -> Fix:
        where = self.positions[node]
        return Fix("unsafe", f"Rename to {new}", (Edit(new, self.loc(where.start), self.loc(where.end)),))

    def replace_value(self, node: cst.CSTNode, value: str) -> Fix:
        where = self.positions[node]
        quote = '"'
        if isinstance(node, cst.SimpleString):
            quote = node.value.lstrip("rRbBuUfF")[0]
        return Fix("unsafe", f"Use {value}", (Edit(f"{quote}{value}{quote}", self.loc(where.start),
                                                   self.loc(where.end)),))

    def run(self) -> list[Diagnostic]:
        collector = _Collector(set(self.bridge.mapping.class_names), package_of(self.filename))
        self.wrapper.visit(collector)
        assigned_fields: set[str] = set()
        judged_assignments: list[tuple[cst.Attribute, cst.BaseExpression]] = []
        for target, value in collector.assignments:
            owner = target.value
            on_checkpoint = isinstance(owner, cst.Attribute) and owner.attr.value == "checkpoint"
            on_bound = isinstance(owner, cst.Name) and owner.value in collector.bound
            if on_bound or (on_checkpoint and collector.imports_bridge):
                assigned_fields.add(target.attr.value)
                judged_assignments.append((target, value))
        for call in collector.calls:
            self.call(call, assigned_fields)
        for target, value in judged_assignments:
            self.field(target.attr, target.attr.value, value, assignment=True, siblings=set())
        return self.findings

    def call(self, call: cst.Call, assigned_fields: set[str]) -> None:
        keywords = {a.keyword.value: a for a in call.args if a.keyword is not None}
        values: dict[str, Any] = {}
        for name, arg in keywords.items():
            value = literal(arg.value)
            if self.field(arg.keyword, name, arg.value, assignment=False, siblings=set(keywords)):
                values[name] = value
        if any(a.star for a in call.args):
            return  # **kwargs may set anything
        literal_values = {k: v for k, v in values.items() if v is not NOT_LITERAL}
        # a field assigned elsewhere in the file may change before finalize(): only judge what is known
        unknown = assigned_fields | {k for k, v in values.items() if v is NOT_LITERAL}
        known = set(self.bridge.field_names(self.release)) - unknown
        for conflict in conflicts(self.bridge, self.target, literal_values, known):
            self.report(("NM204", f"{conflict.message} (megatron-bridge={self.release})"), call.func)

    def field(self, name_node: cst.CSTNode, name: str, value_node: cst.BaseExpression, *, assignment: bool,
              siblings: set[str]) -> bool:
        """Judge one field name and its literal value; True when the field exists in the target."""
        verdict = field_verdict(self.bridge, self.target, name, assignment=assignment)
        if verdict is not None:
            fix = None
            if verdict.suggestion and verdict.suggestion not in siblings:
                fix = self.rename(name_node, verdict.suggestion)
            self.report(verdict, name_node, fix)
            return False
        value = literal(value_node)
        if value is NOT_LITERAL:
            return True
        verdict = value_verdict(self.bridge, self.target, name, value)
        if verdict is not None:
            fix = None
            if verdict.suggestion and isinstance(value_node, cst.SimpleString):
                fix = self.replace_value(value_node, verdict.suggestion)
            self.report(verdict, value_node, fix)
        return True


def check_module(module: cst.Module, filename: str, table: Table, options: Any, shift: int) -> list[Diagnostic]:
    return BridgeChecker(module, filename, table, getattr(options, "bridge_target", None), shift).run()
