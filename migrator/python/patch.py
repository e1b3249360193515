"""`migrate-config OLD.yaml --patch train.py` / `nemo-migrate patch --config OLD.yaml PATHS`.

Every `MegatronStrategy(...)` call and NeMo-Run configuration of it (`migrator.python.calls`) gets the keyword
arguments `--emit-python` writes for the same YAML (`migrator.migrate.mapping`): a missing keyword is added, a
literal that differs is replaced, a wrong name NeMo's docs print (`ckpt_load_on_device`) is renamed. Everything else
stays byte for byte: comments, argument order, trailing commas, indentation, line breaks, line endings, encoding.

A call that passes `**kwargs` (it may already set a keyword, and adding it would raise "got multiple values"), or
whose value for a keyword the YAML sets is not a literal, is reported and left as it is.

The two LibCST traps when adding keyword arguments (lint-conventions section 2) are handled in `append_args`:
`cst.Arg` prints `name = value` unless given an explicit `AssignEqual`, and in a multi-line call the newline before
`)` belongs to the last argument's comma (or to `whitespace_after_arg` when there is no trailing comma), so it is
moved to the new last argument and the old last argument gets the separator the call already uses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from migrator.engine.suppression import rows
from migrator.engine.table import Table
from migrator.errors import MigratorError
from migrator.migrate.mapping import Mapping, MappedArgument, py
from migrator.python.calls import NOT_LITERAL, StrategyCall, find_calls, keyword_arg, quote_of, same_value, value_node
from migrator.python.lint import syntax_check, too_deep


@dataclass
class Change:
    argument: str
    value: Any
    kind: Literal["add", "update", "rename"]
    comment: str | None = None
    old_keyword: str | None = None  # update/rename: the keyword as written
    old_value: Any = None


@dataclass
class CallPlan:
    call: StrategyCall
    row: int
    column: int  # 1-based
    changes: list[Change] = field(default_factory=list)
    blocked: str | None = None  # why the call cannot be edited
    indent: str = ""  # the indentation of the line the call starts on

    @property
    def wanted(self) -> str:
        return ", ".join(f"{c.argument}={py(c.value)}" for c in self.changes)


def plan_call(call: StrategyCall, mapping: Mapping, table: Table, row: int, column: int) -> CallPlan:
    plan = CallPlan(call, row, column)
    wrong_names = {w.name: w.use for w in table.strategy.wrong_names}
    cannot: list[str] = []
    for argument in mapping.arguments:
        change = _change_for(call, argument, wrong_names)
        if change is None:
            continue
        if change == "not-literal":
            cannot.append(argument.name)
            plan.changes.append(Change(argument.name, argument.value, "update", argument.comment))
            continue
        plan.changes.append(change)
    if call.double_star is not None:
        plan.blocked = f"passes {call.double_star_code}, which may already set these keywords"
    elif cannot:
        plan.blocked = f"the value of {', '.join(cannot)} is not a literal the tool can judge"
    return plan


def _change_for(call: StrategyCall, argument: MappedArgument, wrong_names: dict[str, str]):
    name = argument.name
    if name in call.keywords:
        current = call.values[name]
        if current is NOT_LITERAL:
            return "not-literal"
        if same_value(current, argument.value):
            return None
        return Change(name, argument.value, "update", argument.comment, name, current)
    wrong = next((w for w, use in wrong_names.items() if use == name and w in call.keywords), None)
    if wrong is not None:
        current = call.values[wrong]
        if current is NOT_LITERAL:
            return "not-literal"
        return Change(name, argument.value, "rename", argument.comment, wrong, current)
    return Change(name, argument.value, "add", argument.comment)


# ================================================================================================ editing a Call
def _is_multiline(ws: Any) -> bool:
    return isinstance(ws, cst.ParenthesizedWhitespace)


def _layout(call: cst.Call) -> cst.ParenthesizedWhitespace | None:
    """The whitespace that starts a new argument line in this call (its `indent` flag and `last_line` tell where the
    next argument begins), or None for a call written on one line."""
    for arg in reversed(call.args[:-1]):
        if isinstance(arg.comma, cst.Comma) and _is_multiline(arg.comma.whitespace_after):
            return arg.comma.whitespace_after
    if _is_multiline(call.whitespace_before_args) and call.args:
        return call.whitespace_before_args
    return None


def _trailing(comment: str | None) -> cst.TrailingWhitespace:
    if not comment:
        return cst.TrailingWhitespace()
    return cst.TrailingWhitespace(whitespace=cst.SimpleWhitespace("  "), comment=cst.Comment(f"# {comment}"))


def _with_comment(arg: cst.Arg, comment: str | None) -> cst.Arg:
    """Put our reason after an argument that sits on its own line and has no comment yet."""
    if not comment:
        return arg
    if isinstance(arg.comma, cst.Comma) and _is_multiline(arg.comma.whitespace_after):
        ws = arg.comma.whitespace_after
        if ws.first_line.comment is None:
            return arg.with_changes(comma=arg.comma.with_changes(
                whitespace_after=ws.with_changes(first_line=_trailing(comment))))
    elif not isinstance(arg.comma, cst.Comma) and _is_multiline(arg.whitespace_after_arg):
        ws = arg.whitespace_after_arg
        if ws.first_line.comment is None:
            return arg.with_changes(whitespace_after_arg=ws.with_changes(first_line=_trailing(comment)))
    return arg


def append_args(call: cst.Call, new: list[tuple[cst.Arg, str | None]], line_indent: str = "") -> cst.Call:
    """`call` with the `new` arguments appended, each with its comment where the call is laid out one argument
    per line. An empty call `X()` gets one argument per line, like `--emit-python` writes it."""
    args = list(call.args)
    layout = _layout(call)
    if not args:
        def line(indent: str, comment: str | None = None) -> cst.ParenthesizedWhitespace:
            return cst.ParenthesizedWhitespace(first_line=_trailing(comment), empty_lines=[], indent=False,
                                               last_line=cst.SimpleWhitespace(indent))
        inner = line_indent + "    "
        exploded = [arg.with_changes(comma=cst.Comma(whitespace_after=line(
            line_indent if i == len(new) - 1 else inner, comment))) for i, (arg, comment) in enumerate(new)]
        return call.with_changes(args=exploded, whitespace_before_args=line(inner))

    def separator(comment: str | None = None) -> cst.BaseParenthesizableWhitespace:
        if layout is None:
            return cst.SimpleWhitespace(" ")
        return layout.with_changes(first_line=_trailing(comment), empty_lines=[])

    last = args[-1]
    trailing_comma = isinstance(last.comma, cst.Comma)
    tail = last.comma.whitespace_after if trailing_comma else last.whitespace_after_arg
    # the old last argument keeps its own comment and the comment lines after it; the new last one ends the call
    if _is_multiline(tail):
        between = (layout or tail).with_changes(first_line=tail.first_line, empty_lines=tail.empty_lines)
    else:
        between = separator()
    old_comma = last.comma if trailing_comma else cst.Comma()
    args[-1] = last.with_changes(comma=old_comma.with_changes(whitespace_after=between),
                                 whitespace_after_arg=cst.SimpleWhitespace("") if not trailing_comma
                                 else last.whitespace_after_arg)
    for index, (arg, comment) in enumerate(new):
        if index < len(new) - 1:
            args.append(arg.with_changes(comma=cst.Comma(whitespace_after=separator(comment))))
            continue
        end = tail
        if _is_multiline(tail):
            end = tail.with_changes(first_line=_trailing(comment if layout is not None else None), empty_lines=[])
        if trailing_comma:
            args.append(arg.with_changes(comma=cst.Comma(whitespace_after=end)))
        else:
            args.append(arg.with_changes(whitespace_after_arg=end))
    return call.with_changes(args=args)


def apply_plan(call: cst.Call, plan: CallPlan) -> cst.Call:
    multiline = _layout(call) is not None
    args = list(call.args)
    for change in plan.changes:
        if change.kind == "add":
            continue
        index = next(i for i, a in enumerate(args) if a.keyword is not None and a.keyword.value == change.old_keyword)
        arg = args[index]
        updated = arg.with_changes(keyword=cst.Name(change.argument))
        if change.kind == "update" or not same_value(change.old_value, change.value):
            updated = updated.with_changes(value=value_node(change.value, quote_of(arg.value)))
        args[index] = _with_comment(updated, change.comment) if multiline else updated
    call = call.with_changes(args=args)
    added = [(keyword_arg(c.argument, c.value), c.comment) for c in plan.changes if c.kind == "add"]
    if added:
        call = append_args(call, added, plan.indent)
    return call


class _Apply(cst.CSTTransformer):
    def __init__(self, plans: dict[int, CallPlan]):
        super().__init__()
        self.plans = plans

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.Call:
        plan = self.plans.get(id(original_node))
        if plan is None or plan.blocked or not plan.changes:
            return updated_node
        return apply_plan(updated_node, plan)  # built on updated_node: keeps changes made inside its arguments


# ================================================================================================ a whole file
@dataclass
class FilePatch:
    path: str
    original: bytes
    patched: bytes
    plans: list[CallPlan]

    @property
    def changed(self) -> bool:
        return self.patched != self.original

    @property
    def edited(self) -> list[CallPlan]:
        return [p for p in self.plans if p.changes and not p.blocked]

    @property
    def blocked(self) -> list[CallPlan]:
        return [p for p in self.plans if p.blocked and p.changes]


def parse_source(data: bytes | str, filename: str) -> cst.Module:
    try:
        return cst.parse_module(data)
    except cst.ParserSyntaxError as exc:
        raise MigratorError(f"{filename}:{exc.raw_line}:{exc.raw_column + 1}: Python syntax error: "
                            f"{exc.message}") from None
    except (UnicodeDecodeError, LookupError, SyntaxError) as exc:
        raise MigratorError(f"{filename}: cannot decode: {exc}") from None
    except (RecursionError, MemoryError):
        raise too_deep(filename) from None


def plan_module(module: cst.Module, filename: str, mapping: Mapping, table: Table
                ) -> tuple[MetadataWrapper, list[CallPlan]]:
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)  # a freshly parsed tree: no shared nodes
    positions = wrapper.resolve(PositionProvider)
    lines = rows(wrapper.module.code)  # LibCST's rows: a form feed stays in its row
    plans = []
    for call in find_calls(wrapper, table, filename):
        start = positions[call.node].start
        plan = plan_call(call, mapping, table, start.line, start.column + 1)
        line = lines[start.line - 1] if start.line <= len(lines) else ""
        plan.indent = line[: len(line) - len(line.lstrip(" \t"))]
        plans.append(plan)
    return wrapper, plans


def patch_bytes(data: bytes, filename: str, mapping: Mapping, table: Table) -> FilePatch:
    """Patch one file's bytes in memory. Raises MigratorError (the file stays untouched) if it does not parse, or if
    the result would not parse, compile or be stable under a second run."""
    try:
        return _patch_bytes(data, filename, mapping, table)
    except (RecursionError, MemoryError):
        raise too_deep(filename) from None


def _patch_bytes(data: bytes, filename: str, mapping: Mapping, table: Table) -> FilePatch:
    syntax_check(data, filename)
    module = parse_source(data, filename)
    wrapper, plans = plan_module(module, filename, mapping, table)
    if not any(p.changes and not p.blocked for p in plans):
        return FilePatch(filename, data, data, plans)
    new_module = wrapper.visit(_Apply({id(p.call.node): p for p in plans}))
    patched = new_module.bytes
    _verify(data, patched, filename, mapping, table)
    return FilePatch(filename, data, patched, plans)


def _compiles(data: bytes, filename: str) -> bool:
    try:
        compile(data, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def verify_patched(original: bytes, patched: bytes, filename: str, changes_again: Callable[[cst.Module], bool]) -> None:
    """Every patch result, whatever its destination, must parse, compile where the original did, and be stable:
    `changes_again(module)` re-plans the patched module and says whether a second run would change more."""
    try:
        module = cst.parse_module(patched)
    except cst.ParserSyntaxError as exc:  # pragma: no cover - a bug guard
        raise MigratorError(f"{filename}: the patched code would not parse ({exc.message}); file left untouched") \
            from None
    # compile() judges with this interpreter's grammar: only meaningful if the original compiles here too
    if _compiles(original, filename) and not _compiles(patched, filename):  # pragma: no cover - a bug guard
        raise MigratorError(f"{filename}: the patched code would not compile; file left untouched")
    if changes_again(module):  # pragma: no cover - a bug guard
        raise MigratorError(f"{filename}: patching is not stable (a second run would change more); file left "
                            "untouched")


def _verify(original: bytes, patched: bytes, filename: str, mapping: Mapping, table: Table) -> None:
    def changes_again(module: cst.Module) -> bool:
        _, again = plan_module(module, filename, mapping, table)
        return any(p.changes and not p.blocked for p in again)

    verify_patched(original, patched, filename, changes_again)
