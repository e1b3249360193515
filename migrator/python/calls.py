"""Finding `MegatronStrategy(...)` in Python source with LibCST, and reading its keyword values.

A call is recognised by the qualified name of what it calls (LibCST's QualifiedNameProvider), so every spelling
NeMo 2.0 code uses is found: `nl.MegatronStrategy(...)` after `from nemo import lightning as nl`,
`MegatronStrategy(...)` after `from nemo.lightning import MegatronStrategy` (or any alias),
`nemo.lightning.pytorch.strategies.MegatronStrategy(...)`, a relative import inside the NeMo package, and NeMo-Run
configurations that take the class as their first argument: `run.Config(nl.MegatronStrategy, ...)`,
`run.Partial(...)`. A local class or variable that happens to be called MegatronStrategy (a mock) is not.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider, QualifiedNameProvider

from migrator.engine.table import Table
from migrator.python.names import NOT_LITERAL, _absolute, package_of, same_value  # noqa: F401 (re-exported)
from migrator.python.names import StrategyNames

_LITERAL_NODES = (cst.Integer, cst.Float, cst.SimpleString, cst.ConcatenatedString, cst.UnaryOperation)


@dataclass
class StrategyCall:
    """One `MegatronStrategy(...)` call or NeMo-Run configuration of it."""

    node: cst.Call
    wrapper: str | None  # "nemo_run.Config" for run.Config(nl.MegatronStrategy, ...), None for a direct call
    keywords: dict[str, cst.Arg] = field(default_factory=dict)  # in source order
    double_star: cst.Arg | None = None  # a `**kwargs` argument
    expects_error: bool = False  # inside `with pytest.raises(...)`: a test that the call fails
    values: dict[str, Any] = field(default_factory=dict)  # keyword -> literal value or NOT_LITERAL

    @property
    def double_star_code(self) -> str:
        return "**" + cst.Module([]).code_for_node(self.double_star.value) if self.double_star is not None else ""

    @property
    def label(self) -> str:
        if self.wrapper is None:
            return "MegatronStrategy(...)"
        return f"{self.wrapper.split('.')[-1]}(MegatronStrategy, ...)"


class _Finder(cst.CSTVisitor):
    METADATA_DEPENDENCIES = (QualifiedNameProvider, PositionProvider)

    def __init__(self, table: Table, package: str | None):
        super().__init__()
        self.known = StrategyNames.of(table)
        self.package = package
        self.calls: list[StrategyCall] = []
        self.raises_depth = 0

    def visit_With(self, node: cst.With) -> None:
        if self.expects_error(node):
            self.raises_depth += 1

    def leave_With(self, original_node: cst.With) -> None:
        if self.expects_error(original_node):
            self.raises_depth -= 1

    def expects_error(self, node: cst.With) -> bool:
        return any(isinstance(item.item, cst.Call) and "pytest.raises" in self.names(item.item.func)
                   for item in node.items)

    def names(self, node: cst.CSTNode) -> set[str]:
        found = set()
        for qualified in self.get_metadata(QualifiedNameProvider, node, set()):
            name = _absolute(qualified.name, self.package)
            if name is not None:
                found.add(name)
        return found

    def is_strategy(self, node: cst.CSTNode) -> bool:
        return bool(self.names(node) & self.known.classes)

    def visit_Call(self, node: cst.Call) -> None:
        if self.is_strategy(node.func):
            self.calls.append(self.collect(node, None, node.args))
            return
        wrapper = self.names(node.func) & self.known.wrappers
        if wrapper and node.args and node.args[0].keyword is None and not node.args[0].star \
                and self.is_strategy(node.args[0].value):
            self.calls.append(self.collect(node, sorted(wrapper)[0], node.args[1:]))

    def collect(self, node: cst.Call, wrapper: str | None, args) -> StrategyCall:
        call = StrategyCall(node, wrapper, expects_error=self.raises_depth > 0)
        for arg in args:
            if arg.star == "**":
                call.double_star = arg
            elif arg.keyword is not None:
                call.keywords[arg.keyword.value] = arg
                call.values[arg.keyword.value] = self.literal(arg.value)
        return call

    def literal(self, expr: cst.BaseExpression) -> Any:
        """The Python value of a literal (True, 2, "zarr", -1), the lower-case member name of a StrictHandling
        enum member, or NOT_LITERAL."""
        if isinstance(expr, cst.Name):
            return {"True": True, "False": False, "None": None}.get(expr.value, NOT_LITERAL)
        if isinstance(expr, cst.Attribute):
            return self.known.enum_member(self.names(expr))
        if isinstance(expr, _LITERAL_NODES):
            if isinstance(expr, cst.UnaryOperation) and not isinstance(expr.expression, (cst.Integer, cst.Float)):
                return NOT_LITERAL
            try:
                return ast.literal_eval(cst.Module([]).code_for_node(expr).strip())
            except (ValueError, SyntaxError, MemoryError):
                return NOT_LITERAL
        return NOT_LITERAL


def find_calls(wrapper: MetadataWrapper, table: Table, filename: str) -> list[StrategyCall]:
    finder = _Finder(table, package_of(filename))
    wrapper.visit(finder)
    return finder.calls


# ================================================================================================== building nodes
NO_SPACE_EQUAL = cst.AssignEqual(whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace(""))


def value_node(value: Any, quote: str = '"') -> cst.BaseExpression:
    """The expression node for a mapped value: True/False/None, an integer, or a string in `quote` quotes."""
    if value is None or isinstance(value, bool):
        return cst.Name(repr(value))
    if isinstance(value, int):
        return cst.Integer(str(value)) if value >= 0 else cst.UnaryOperation(cst.Minus(), cst.Integer(str(-value)))
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace(quote, "\\" + quote)
        return cst.SimpleString(f"{quote}{escaped}{quote}")
    raise TypeError(f"cannot write {value!r} as a literal")  # pragma: no cover - the table has only these types


def keyword_arg(name: str, value: Any, quote: str = '"') -> cst.Arg:
    """`name=value` with no spaces around `=` (LibCST's default Arg prints `name = value`)."""
    return cst.Arg(keyword=cst.Name(name), value=value_node(value, quote), equal=NO_SPACE_EQUAL)


def quote_of(expr: cst.BaseExpression) -> str:
    if isinstance(expr, cst.SimpleString):
        body = expr.value.lstrip("rRbBuUfF")
        return body[0]
    return '"'
