"""Finding Megatron-Bridge checkpoint settings with Python's own `ast` (no LibCST): `CheckpointConfig(...)` calls,
found by qualified name as LibCST's QualifiedNameProvider resolves them (`migrator.python.ast_calls.Resolver`), and
attribute assignments (`cfg.checkpoint.save_interval = 100`, `ckpt.save = ...` on a variable bound to a
CheckpointConfig call).

What it returns (`BridgeCode`) is what the Bridge lint judges; `migrator.python.bridge_scan.found_with_libcst`
builds the same from LibCST nodes for the files this module declines (`ast_calls.Unsupported`).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

from migrator.python.ast_calls import Piece, Resolver, _Scope, _Source, bind, literal
from migrator.python.names import package_of

BRIDGE_PACKAGE = "megatron.bridge"  # a module importing from it is Bridge code: its `x.checkpoint.y = ...` count


@dataclass
class BridgeKeyword:
    name: Piece
    value: Piece
    literal: Any  # the value, or NOT_LITERAL


@dataclass
class BridgeCall:
    func: Piece  # what is called (NM204 points at it)
    keywords: dict[str, BridgeKeyword]  # in source order
    star: bool  # `*args` or `**kwargs`: any field may be set


@dataclass
class BridgeAssignment:
    """`OWNER.FIELD = VALUE` (or `OWNER.FIELD: T = VALUE`)."""

    owner_attribute: str | None  # "checkpoint" for `cfg.checkpoint.FIELD`: the attribute OWNER ends with
    owner_name: str | None  # "ckpt" for `ckpt.FIELD`: OWNER as a plain name
    field: Piece
    value: Piece
    literal: Any


@dataclass
class BridgeCode:
    calls: list[BridgeCall] = field(default_factory=list)  # in source order, an outer call before the ones inside
    assignments: list[BridgeAssignment] = field(default_factory=list)
    bound: set[str] = field(default_factory=set)  # names a CheckpointConfig call is assigned to
    imports_bridge: bool = False


class _Finder(Resolver):
    def __init__(self, classes: set[str], package: str | None, source: _Source, scopes: dict[int, _Scope]):
        super().__init__(package, scopes)
        self.classes = classes
        self.source = source
        self.found = BridgeCode()
        self.call_order: list[tuple[tuple[int, int, int, int], BridgeCall]] = []

    def is_config(self, node: ast.AST, scope: _Scope) -> bool:
        return bool(self.names(node, scope) & self.classes)

    def enter(self, node: ast.AST, scope: _Scope) -> None:
        if isinstance(node, ast.ImportFrom):
            if node.module is not None and node.module.startswith(BRIDGE_PACKAGE):
                self.found.imports_bridge = True
        elif isinstance(node, ast.Import):
            if any(alias.name.startswith(BRIDGE_PACKAGE) for alias in node.names):
                self.found.imports_bridge = True
        elif isinstance(node, ast.Call):
            if self.is_config(node.func, scope):
                order = (node.lineno, node.col_offset, -node.end_lineno, -node.end_col_offset)
                self.call_order.append((order, self.call(node)))
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and isinstance(node.value, ast.Call) \
                        and self.is_config(node.value.func, scope):
                    self.found.bound.add(target.id)
                if isinstance(target, ast.Attribute):
                    self.assignment(target, node.value)
        elif isinstance(node, ast.AnnAssign):
            if isinstance(node.target, ast.Attribute) and node.value is not None:
                self.assignment(node.target, node.value)

    def call(self, node: ast.Call) -> BridgeCall:
        keywords: dict[str, BridgeKeyword] = {}
        for keyword in node.keywords:
            if keyword.arg is not None:
                keywords[keyword.arg] = BridgeKeyword(self.source.keyword_piece(keyword),
                                                      self.source.value_piece(keyword), literal(keyword.value))
        star = any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords)
        return BridgeCall(self.source.expression_piece(node.func), keywords, star)

    def assignment(self, target: ast.Attribute, value: ast.expr) -> None:
        owner = target.value
        self.found.assignments.append(BridgeAssignment(
            owner.attr if isinstance(owner, ast.Attribute) else None,
            owner.id if isinstance(owner, ast.Name) else None,
            self.source.attribute_piece(target), self.source.expression_piece(value), literal(value)))


def find_bridge_code(tree: ast.Module, text: str, classes: set[str], filename: str) -> BridgeCode:
    """The Bridge calls and assignments of a parsed module (text without its BOM); raises Unsupported where
    LibCST must decide."""
    source, module, binder = bind(tree, text, {name.rsplit(".", 1)[-1] for name in classes})
    finder = _Finder(classes, package_of(filename), source, binder.scopes)
    finder.walk(tree, module)
    # LibCST visits a call before the calls inside it, children in source order: by start, the outer one first
    finder.found.calls = [call for _, call in sorted(finder.call_order, key=lambda item: item[0])]
    return finder.found
