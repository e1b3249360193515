"""`migrate-config OLD.yaml --to bridge --patch train.py` / `nemo-migrate patch --to bridge --config OLD.yaml PATHS`.

Brings Megatron-Bridge code to the fields `--to bridge --emit-python` writes for the same input
(`migrator.migrate.bridge_mapping`):

- an attribute assignment on a config's checkpoint (`cfg.checkpoint.save_interval = 100`, the way Bridge recipes are
  customised; in a module that imports from `megatron.bridge`), or on a variable bound to a `CheckpointConfig(...)`
  call, gets its literal value replaced where it differs (the last assignment of a field is the one that counts);
- a `CheckpointConfig(...)` call (found by qualified name: any import style, alias, or nested in
  `ConfigContainer(checkpoint=CheckpointConfig(...))`) gets the fields no assignment sets: a differing literal
  replaced, a missing keyword added;
- without such a call, a field nothing sets goes in as a new assignment right after the last `cfg.checkpoint.*` line,
  or after the recipe call (`cfg = llama3_8b_pretrain_config(...)`, any function under `megatron.bridge.recipes`).

Everything else stays byte for byte. A call passing `**kwargs`, or a value that is not a literal, is reported and left
as it is. The result must parse, compile and be stable under a second run, or the file is left untouched.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from migrator.engine.bridge_table import BridgeTable, same_value
from migrator.errors import MigratorError
from migrator.migrate.bridge_mapping import BridgeField, BridgeMapping
from migrator.migrate.mapping import py
from migrator.python.bridge_from_nemo2 import literal
from migrator.python.bridge_scan import scan
from migrator.python.calls import NOT_LITERAL, keyword_arg, quote_of, value_node
from migrator.python.patch import _layout, _with_comment, append_args, parse_source, verify_patched

RECIPES = "megatron.bridge.recipes."


@dataclass
class Blocked:
    row: int
    column: int
    label: str
    why: str
    wanted: str


@dataclass
class BridgeFilePatch:
    path: str
    original: bytes
    patched: bytes
    changes: list[str] = field(default_factory=list)  # "field=value" per edit
    blocked: list[Blocked] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.patched != self.original


@dataclass
class _Plan:
    call_changes: dict[int, list[tuple[BridgeField, str]]] = field(default_factory=dict)  # id(call) -> (field, kind)
    value_updates: dict[int, BridgeField] = field(default_factory=dict)  # id(Assign) -> field
    inserts: dict[int, list[cst.SimpleStatementLine]] = field(default_factory=dict)  # id(stmt) -> new statements
    changes: list[str] = field(default_factory=list)
    blocked: list[Blocked] = field(default_factory=list)


def _plan(wrapper: MetadataWrapper, filename: str, mapping: BridgeMapping, bridge: BridgeTable) -> _Plan:
    scanned = scan(wrapper, set(bridge.mapping.class_names), filename)
    positions = wrapper.resolve(PositionProvider)
    # an assignment with one target on a statement line: what the patcher edits and inserts after
    alone = [b for b in scanned.bindings if b.alone and b.stmt is not None]
    bound = {b.name for b in alone if scanned.is_config(b)}
    recipe_stmts = [(b.stmt, b.name) for b in alone
                    if not scanned.is_config(b) and any(n.startswith(RECIPES) for n in b.func_names)]
    assigns = [(a.stmt, a.node, cst.Module([]).code_for_node(a.target.value), a.target.attr.value)
               for a in scanned.attribute_assigns if a.kind == "alone" and a.stmt is not None]
    plan = _Plan()

    def where(node: cst.CSTNode) -> tuple[int, int]:
        start = positions[node].start
        return start.line, start.column + 1

    checkpoint_assigns = [(s, a, o, f) for s, a, o, f in assigns
                          if o in bound or (scanned.imports_bridge and o.endswith(".checkpoint"))]
    last_assign: dict[str, tuple[cst.SimpleStatementLine, cst.Assign]] = {}
    for stmt, assign, owner, name in checkpoint_assigns:
        last_assign[name] = (stmt, assign)
    unset: list[BridgeField] = []
    for item in mapping.fields:
        if item.name in last_assign:
            stmt, assign = last_assign[item.name]
            current = literal(assign.value)
            if current is NOT_LITERAL:
                row, column = where(assign)
                plan.blocked.append(Blocked(row, column, f"{item.name} assignment", "its value is not a literal",
                                            f"{item.name}={py(item.value)}"))
            elif not same_value(current, item.value):
                plan.value_updates[id(assign)] = item
                plan.changes.append(f"{item.name}={py(item.value)}")
        else:
            unset.append(item)
    if not unset:
        return plan
    if scanned.calls:
        for call in scanned.calls:
            keywords = {a.keyword.value: a for a in call.args if a.keyword is not None}
            wanted: list[tuple[BridgeField, str]] = []
            not_literal = []
            for item in unset:
                if item.name in keywords:
                    current = literal(keywords[item.name].value)
                    if current is NOT_LITERAL:
                        not_literal.append(item.name)
                    elif not same_value(current, item.value):
                        wanted.append((item, "update"))
                else:
                    wanted.append((item, "add"))
            row, column = where(call)
            text = ", ".join(f"{i.name}={py(i.value)}" for i, _ in wanted)
            if any(a.star == "**" for a in call.args) and wanted:
                plan.blocked.append(Blocked(row, column, "CheckpointConfig(...)",
                                            "it passes **kwargs, which may already set these fields", text))
            elif not_literal and wanted:
                plan.blocked.append(Blocked(row, column, "CheckpointConfig(...)",
                                            f"the value of {', '.join(not_literal)} is not a literal", text))
            elif wanted:
                plan.call_changes[id(call)] = wanted
                plan.changes += [f"{i.name}={py(i.value)}" for i, _ in wanted]
        return plan
    if checkpoint_assigns:
        anchor, _, owner, _ = checkpoint_assigns[-1]
    elif recipe_stmts:
        anchor, name = recipe_stmts[-1]
        owner = f"{name}.checkpoint"
    else:
        return plan
    new = []
    for item in unset:
        statement = cst.parse_statement(f"{owner}.{item.name} = {cst.Module([]).code_for_node(value_node(item.value))}\n")
        if item.comment:
            statement = statement.with_changes(trailing_whitespace=cst.TrailingWhitespace(
                whitespace=cst.SimpleWhitespace("  "), comment=cst.Comment(f"# {item.comment}")))
        new.append(statement)
        plan.changes.append(f"{item.name}={py(item.value)}")
    plan.inserts[id(anchor)] = new
    return plan


class _Apply(cst.CSTTransformer):
    def __init__(self, plan: _Plan):
        super().__init__()
        self.plan = plan
        self.originals: dict[int, Any] = {}  # id(updated statement) -> the original statement

    def leave_Assign(self, original_node: cst.Assign, updated_node: cst.Assign) -> cst.Assign:
        item = self.plan.value_updates.get(id(original_node))
        if item is None:
            return updated_node
        return updated_node.with_changes(value=value_node(item.value, quote_of(original_node.value)))

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.Call:
        wanted = self.plan.call_changes.get(id(original_node))
        if not wanted:
            return updated_node
        multiline = _layout(updated_node) is not None
        args = list(updated_node.args)
        for item, kind in wanted:
            if kind != "update":
                continue
            index = next(i for i, a in enumerate(args) if a.keyword is not None and a.keyword.value == item.name)
            arg = args[index].with_changes(value=value_node(item.value, quote_of(args[index].value)))
            args[index] = _with_comment(arg, item.comment) if multiline else arg
        call = updated_node.with_changes(args=args)
        added = [(keyword_arg(item.name, item.value), item.comment) for item, kind in wanted if kind == "add"]
        return append_args(call, added) if added else call

    def _insert(self, body: Any) -> list:
        out = []
        for statement in body:
            out.append(statement)
            out.extend(self.plan.inserts.get(id(self.originals.get(id(statement), statement)), []))
        return out

    def leave_SimpleStatementLine(self, original_node, updated_node):
        self.originals[id(updated_node)] = original_node
        return updated_node

    def leave_Module(self, original_node: cst.Module, updated_node: cst.Module) -> cst.Module:
        return updated_node.with_changes(body=self._insert(updated_node.body))

    def leave_IndentedBlock(self, original_node, updated_node):
        return updated_node.with_changes(body=self._insert(updated_node.body))


def patch_bridge_bytes(data: bytes, filename: str, mapping: BridgeMapping, bridge: BridgeTable) -> BridgeFilePatch:
    module = parse_source(data, filename)
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    plan = _plan(wrapper, filename, mapping, bridge)
    result = BridgeFilePatch(filename, data, data, plan.changes, plan.blocked)
    if not plan.changes:
        return result
    applier = _Apply(plan)
    patched = wrapper.module.visit(applier).bytes
    _verify(data, patched, filename, mapping, bridge)
    result.patched = patched
    return result


def _verify(original: bytes, patched: bytes, filename: str, mapping: BridgeMapping, bridge: BridgeTable) -> None:
    verify_patched(original, patched, filename, lambda module: bool(
        _plan(MetadataWrapper(module, unsafe_skip_copy=True), filename, mapping, bridge).changes))
