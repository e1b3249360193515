"""One LibCST pass over Megatron-Bridge code, shared by the patcher (`bridge_patch`, which edits the nodes) and the
lint's fallback for the files `ast_calls` declines (`found_with_libcst`): `CheckpointConfig(...)` calls by qualified
name, `NAME = f(...)` assignments with the qualified names of `f`, attribute assignments, and whether the module
imports from `megatron.bridge`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import libcst as cst
from libcst.helpers import get_full_name_for_node
from libcst.metadata import MetadataWrapper, PositionProvider, QualifiedNameProvider

from migrator.python.ast_calls import Piece
from migrator.python.bridge_ast import BRIDGE_PACKAGE, BridgeAssignment, BridgeCall, BridgeCode, BridgeKeyword
from migrator.python.bridge_from_nemo2 import literal
from migrator.python.names import _absolute, package_of


@dataclass
class NameBinding:
    """`NAME = f(...)`: the statement, the name, the call and the qualified names of `f`."""

    stmt: cst.SimpleStatementLine | None  # the statement line it stands on (None: not yet seen one)
    name: str
    call: cst.Call
    func_names: set[str]
    alone: bool  # the assignment's only target (not `a = b = f(...)`)


@dataclass
class AttributeAssign:
    """`OWNER.FIELD = VALUE`, also as one of several targets or annotated (`OWNER.FIELD: T = VALUE`)."""

    stmt: cst.SimpleStatementLine | None
    node: cst.Assign | cst.AnnAssign
    target: cst.Attribute
    kind: Literal["alone", "chained", "annotated"]

    @property
    def value(self) -> cst.BaseExpression:
        return self.node.value


class BridgeScan(cst.CSTVisitor):
    METADATA_DEPENDENCIES = (QualifiedNameProvider,)

    def __init__(self, classes: set[str], package: str | None):
        super().__init__()
        self.classes = classes
        self.package = package
        self.calls: list[cst.Call] = []  # CheckpointConfig(...) calls, an outer one before those inside it
        self.bindings: list[NameBinding] = []
        self.attribute_assigns: list[AttributeAssign] = []
        self.imports_bridge = False
        self.stmt: cst.SimpleStatementLine | None = None

    def names(self, node: cst.CSTNode) -> set[str]:
        return {n for q in self.get_metadata(QualifiedNameProvider, node, set())
                if (n := _absolute(q.name, self.package)) is not None}

    def is_config(self, binding: NameBinding) -> bool:
        return bool(binding.func_names & self.classes)

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if node.module is not None and (get_full_name_for_node(node.module) or "").startswith(BRIDGE_PACKAGE):
            self.imports_bridge = True

    def visit_Import(self, node: cst.Import) -> None:
        if any((get_full_name_for_node(a.name) or "").startswith(BRIDGE_PACKAGE) for a in node.names):
            self.imports_bridge = True

    def visit_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> None:
        self.stmt = node

    def visit_Call(self, node: cst.Call) -> None:
        if self.names(node.func) & self.classes:
            self.calls.append(node)

    def visit_Assign(self, node: cst.Assign) -> None:
        alone = len(node.targets) == 1
        for target in node.targets:
            if isinstance(target.target, cst.Name) and isinstance(node.value, cst.Call):
                self.bindings.append(NameBinding(self.stmt, target.target.value, node.value,
                                                 self.names(node.value.func), alone))
            if isinstance(target.target, cst.Attribute):
                self.attribute_assigns.append(AttributeAssign(self.stmt, node, target.target,
                                                              "alone" if alone else "chained"))

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if isinstance(node.target, cst.Attribute) and node.value is not None:
            self.attribute_assigns.append(AttributeAssign(self.stmt, node, node.target, "annotated"))


def scan(wrapper: MetadataWrapper, classes: set[str], filename: str) -> BridgeScan:
    found = BridgeScan(classes, package_of(filename))
    wrapper.visit(found)
    return found


def found_with_libcst(module: cst.Module, classes: set[str], filename: str) -> BridgeCode:
    """What `bridge_ast.find_bridge_code` returns, from LibCST's analysis (the reference for the files it
    declines)."""
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    scanned = scan(wrapper, classes, filename)
    positions = wrapper.resolve(PositionProvider)

    def piece(node: cst.CSTNode, text: str = "") -> Piece:
        where = positions[node]
        simple = isinstance(node, cst.SimpleString)
        return Piece((where.start.line, where.start.column), (where.end.line, where.end.column), text,
                     simple_string=simple, quote=node.value.lstrip("rRbBuUfF")[0] if simple else '"')

    code = BridgeCode(bound={b.name for b in scanned.bindings if scanned.is_config(b)},
                      imports_bridge=scanned.imports_bridge)
    for call in scanned.calls:
        keywords = {a.keyword.value: BridgeKeyword(piece(a.keyword, a.keyword.value), piece(a.value),
                                                   literal(a.value))
                    for a in call.args if a.keyword is not None}
        code.calls.append(BridgeCall(piece(call.func), keywords, any(a.star for a in call.args)))
    for assign in scanned.attribute_assigns:
        owner = assign.target.value
        code.assignments.append(BridgeAssignment(
            owner.attr.value if isinstance(owner, cst.Attribute) else None,
            owner.value if isinstance(owner, cst.Name) else None,
            piece(assign.target.attr, assign.target.attr.value), piece(assign.value), literal(assign.value)))
    return code
