"""NeMo 2.0 Python in, Megatron-Bridge out: `migrate-config train.py --to bridge`.

Reads the literal keyword arguments of the script's `MegatronStrategy(...)` call (found by qualified name, like the
NeMo 2.0 lint, including `run.Config(nl.MegatronStrategy, ...)`) and of `ModelCheckpoint(...)` / `AutoResume(...)`
where present, and maps them with rules/bridge.yaml's `nemo2` table. A NeMo 2.0 default that Bridge changes
(ckpt_async_save True -> async_save False, ckpt_parallel_load True -> fully_parallel_load False, the torch_dist writer
count) is written explicitly when the script relied on it. A value that is not a literal is reported, never guessed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider, QualifiedNameProvider

from migrator.engine.bridge_table import BridgeTable, Nemo2Mapping, same_value
from migrator.engine.diagnostics import Location
from migrator.engine.table import Table
from migrator.errors import MigratorError
from migrator.migrate.bridge_mapping import BridgeMapping, _Builder, convert_value
from migrator.migrate.mapping import py
from migrator.python.calls import NOT_LITERAL, _absolute, find_calls, package_of
from migrator.versions import BridgeTarget, Source

BOM = "\ufeff"


def load_nemo2_mapping(path: str | Path, table: Table, bridge: BridgeTable, target: BridgeTarget, *,
                       force: bool = False) -> BridgeMapping:
    from migrator.engine.runner import read_text

    display = str(path)
    return map_python(read_text(Path(path), display), display, table, bridge, target, force=force)


class _ClassCalls(cst.CSTVisitor):
    """Calls of the NeMo 2.0 callback classes (ModelCheckpoint, AutoResume) by qualified name."""

    METADATA_DEPENDENCIES = (QualifiedNameProvider,)

    def __init__(self, classes: dict[str, list[str]], package: str | None):
        super().__init__()
        self.by_name = {qualified: short for short, names in classes.items() for qualified in names}
        self.package = package
        self.calls: list[tuple[str, cst.Call]] = []

    def visit_Call(self, node: cst.Call) -> None:
        for qualified in self.get_metadata(QualifiedNameProvider, node.func, set()):
            name = _absolute(qualified.name, self.package)
            if name in self.by_name:
                self.calls.append((self.by_name[name], node))
                return


def literal(expr: cst.BaseExpression) -> Any:
    """True/False/None, a number or a string literal (with a unary minus); else NOT_LITERAL."""
    import ast

    if isinstance(expr, cst.Name):
        return {"True": True, "False": False, "None": None}.get(expr.value, NOT_LITERAL)
    if isinstance(expr, (cst.Integer, cst.Float, cst.SimpleString, cst.ConcatenatedString)) or (
            isinstance(expr, cst.UnaryOperation) and isinstance(expr.expression, (cst.Integer, cst.Float))):
        try:
            return ast.literal_eval(cst.Module([]).code_for_node(expr).strip())
        except (ValueError, SyntaxError, MemoryError):
            return NOT_LITERAL
    return NOT_LITERAL


def map_python(text: str, filename: str, table: Table, bridge: BridgeTable, target: BridgeTarget, *,
               force: bool = False) -> BridgeMapping:
    shift = 1 if text.startswith(BOM) else 0
    try:
        module = cst.parse_module(text.removeprefix(BOM))
    except cst.ParserSyntaxError as exc:
        raise MigratorError(f"{filename}:{exc.raw_line}:{exc.raw_column + 1}: not valid Python: "
                            f"{str(exc.message).splitlines()[0]}") from None
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    strategies = find_calls(wrapper, table, filename)
    others = _ClassCalls(bridge.mapping.nemo2_classes, package_of(filename))
    wrapper.visit(others)
    if len(strategies) > 1:
        raise MigratorError(f"{filename}: holds {len(strategies)} MegatronStrategy(...) calls; migrate one script "
                            "(one strategy) at a time")
    if not strategies and not others.calls:
        raise MigratorError(f"{filename}: no MegatronStrategy(...), ModelCheckpoint(...) or AutoResume(...) call "
                            "to migrate")
    positions = wrapper.resolve(PositionProvider)

    def loc(node: cst.CSTNode) -> Location:
        start = positions[node].start
        return Location(start.line, start.column + 1 + (shift if start.line == 1 else 0))

    mapping = BridgeMapping(filename, target, Source(), force, "nemo2-python")
    builder = _Builder(mapping, bridge)
    strategy = strategies[0] if strategies else None
    given: dict[str, tuple[Any, Location]] = {}
    if strategy is not None:
        for name, arg in strategy.keywords.items():
            given[name] = (strategy.values[name], loc(arg))
        if strategy.double_star is not None:
            builder.say("warning", f"{strategy.double_star_code}: keywords passed through ** are not read; migrate "
                        "them by hand", location=loc(strategy.double_star))
    for short, call in others.calls:
        for arg in call.args:
            if arg.keyword is not None:
                given[f"{short}.{arg.keyword.value}"] = (literal(arg.value), loc(arg))
    for entry in bridge.mapping.nemo2:
        if entry.argument in given:
            value, where = given[entry.argument]
            _present(builder, table, entry, value, where)
        elif strategy is not None and "." not in entry.argument:
            _absent(builder, table, entry)
    known = {e.argument for e in bridge.mapping.nemo2}
    for name, (value, where) in given.items():
        if "." not in name and name.startswith("ckpt_") and name not in known:
            builder.say("warning", f"{name}: not a MegatronStrategy argument NeMo 2.0 reads (it went into **kwargs); "
                        "not carried", location=where, setting=name)
    builder.finish()
    return mapping


def _present(builder: _Builder, table: Table, entry: Nemo2Mapping, value: Any, where: Location) -> None:
    name = entry.argument
    if value is NOT_LITERAL:
        builder.say("warning", f"{name}: not a literal value, so it is not carried; set "
                    f"{entry.field or 'the Bridge equivalent'} by hand", location=where, setting=name)
        builder.omit(name, entry.field, None, "not a literal value", where)
        return
    if entry.field is None:
        builder.omit(name, None, value, " ".join(entry.why.split()), where)
        return
    if builder.facts(entry.field) is None:
        builder.omit(name, entry.field, value, builder.missing_field(entry.field)
                     + (f" ({' '.join(entry.why.split())})" if entry.why else ""), where)
        return
    if entry.field == "dist_ckpt_strictness" and isinstance(value, bool):
        builder.say("warning", f"{name}={value}: NeMo 2.0's boolean strictness (True = assume_ok_unexpected, False "
                    "= a non-strict load that drops missing keys) has no exact Bridge value; set dist_ckpt_strictness "
                    "by hand", location=where, setting=name)
        builder.omit(name, entry.field, value, "a boolean strictness", where)
        return
    bridge_value = convert_value(entry, value)
    comment_parts: list[str] = []
    problem = builder.value_problem(entry.field, bridge_value)
    if problem is not None:
        code, text = problem
        if builder.m.force:
            builder.say("warning", f"{name}: {text} (carried anyway: --force)", code=code, location=where,
                        setting=name)
            comment_parts.append("--force")
        else:
            builder.say("error", f"{name}: {text}; change it in the script, or pass --force to carry it anyway",
                        code=code, location=where, setting=name)
            builder.omit(name, entry.field, value, "refused (see the error)", where)
            return
    if entry.invert:
        comment_parts.insert(0, f"inverted {name.rsplit('.', 1)[-1]}={py(value)}")
    elif value is None and entry.null_means is not None:
        comment_parts.insert(0, f"NeMo's None means {py(entry.null_means)}")
    builder.add(entry.field, bridge_value, name, "python", "; ".join(comment_parts) or None, where)


def _absent(builder: _Builder, table: Table, entry: Nemo2Mapping) -> None:
    argument = table.argument_by_name.get(entry.argument)
    if entry.field is None or argument is None or builder.facts(entry.field) is None:
        return
    value = convert_value(entry, argument.default)
    facts = builder.facts(entry.field)
    if same_value(value, facts.default):
        return
    builder.add(entry.field, value, entry.argument, "nemo2-default",
                f"NeMo 2.0's {entry.argument} default, which the script relied on; Bridge defaults to "
                f"{py(facts.default)}")
