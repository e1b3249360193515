"""`migrate-config OLD.yaml --emit-python`: the NeMo 2.0 snippet, built from LibCST nodes (never by pasting strings).

    # NeMo 2.0 checkpoint settings migrated from megatron_gpt_config.yaml by migrate-config
    # (target nemo=2.5, megatron-core=0.16)
    from nemo import lightning as nl

    # note (NM110, line 184): ...
    strategy = nl.MegatronStrategy(
        save_ckpt_format="torch_dist",
        ckpt_parallel_load=False,  # NeMo 2.0 defaults to True
        ...
    )

    # trainer = nl.Trainer(strategy=strategy, ...)

The result is re-parsed and compiled before it is returned.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import libcst as cst

from migrator.errors import MigratorError
from migrator.migrate.mapping import Mapping, MappedArgument, Message, py
from migrator.python.calls import keyword_arg

INDENT = "    "
WIDTH = 110
LABEL = {"error": "error", "warning": "warning", "info": "note"}


def comment_lines(text: str, *, first: str = "# ", rest: str = "#   ") -> list[cst.EmptyLine]:
    lines = textwrap.wrap(" ".join(text.split()), width=WIDTH - len(first), break_on_hyphens=False,
                          break_long_words=False) or [""]
    return [cst.EmptyLine(indent=False, comment=cst.Comment((first if i == 0 else rest) + line))
            for i, line in enumerate(lines)]


def message_lines(message: Message) -> list[cst.EmptyLine]:
    where = ", ".join(p for p in (message.code, f"line {message.location.row}" if message.location else None) if p)
    return comment_lines(f"{LABEL[message.severity]}{f' ({where})' if where else ''}: {message.text}")


def trailing(comment: str | None) -> cst.TrailingWhitespace:
    if not comment:
        return cst.TrailingWhitespace()
    return cst.TrailingWhitespace(whitespace=cst.SimpleWhitespace("  "), comment=cst.Comment(f"# {comment}"))


def newline_then(indent: str, comment: str | None = None) -> cst.ParenthesizedWhitespace:
    """Whitespace that ends a line (with an optional comment) and indents the next one."""
    return cst.ParenthesizedWhitespace(first_line=trailing(comment), empty_lines=[], indent=True,
                                       last_line=cst.SimpleWhitespace(indent))


def keyword_call(func: cst.BaseExpression, arguments: list[Any]) -> cst.Call:
    """`func(name=value,  # comment` one keyword a line) from items with `name`, `value` and `comment`: the layout of
    every emitted call (NeMo 2.0's MegatronStrategy, Bridge's CheckpointConfig)."""
    if not arguments:
        return cst.Call(func=func)
    args = []
    for index, argument in enumerate(arguments):
        last = index == len(arguments) - 1
        arg = keyword_arg(argument.name, argument.value)
        args.append(arg.with_changes(comma=cst.Comma(whitespace_after=newline_then("" if last else INDENT,
                                                                                   argument.comment))))
    return cst.Call(func=func, args=args, whitespace_before_args=newline_then(INDENT))


def strategy_call(arguments: list[MappedArgument]) -> cst.Call:
    return keyword_call(cst.Attribute(value=cst.Name("nl"), attr=cst.Name("MegatronStrategy")), arguments)


def build_module(mapping: Mapping) -> cst.Module:
    name = Path(mapping.filename).name
    header = comment_lines(f"NeMo 2.0 checkpoint settings migrated from {name} by migrate-config "
                           f"(target {mapping.target.describe()}"
                           + (f", source nemo={mapping.source.nemo}" if mapping.source.nemo else "") + ").")
    notes: list[cst.EmptyLine] = [cst.EmptyLine()]
    for message in mapping.messages:
        notes.extend(message_lines(message))
    explained = {m.setting for m in mapping.messages}
    for omitted in mapping.omitted:
        if omitted.setting in explained:
            continue
        notes.extend(comment_lines(f"not carried: {omitted.setting}: {py(omitted.value)} -> {omitted.argument}: "
                                   f"{omitted.reason}"))
    import_nl = cst.SimpleStatementLine(body=[cst.ImportFrom(
        module=cst.Name("nemo"),
        names=[cst.ImportAlias(name=cst.Name("lightning"), asname=cst.AsName(name=cst.Name("nl")))],
    )])
    assign = cst.SimpleStatementLine(
        body=[cst.Assign(targets=[cst.AssignTarget(cst.Name("strategy"))], value=strategy_call(mapping.arguments))],
        leading_lines=notes,
    )
    footer = [cst.EmptyLine(), *comment_lines("trainer = nl.Trainer(strategy=strategy, ...)")]
    return cst.Module(body=[import_nl, assign], header=header, footer=footer)


def emit(mapping: Mapping) -> str:
    """The snippet's source code. Raises MigratorError if the mapping was refused (the caller says why)."""
    if mapping.refused:
        raise MigratorError(f"{mapping.filename}: refusing to emit code: "
                            + "; ".join(m.text for m in mapping.errors))
    code = build_module(mapping).code
    check_code(code, "<migrate-config>")
    return code


def check_code(code: str, filename: str) -> None:
    """Re-parse with LibCST and compile with CPython: the code we write must be valid Python."""
    try:
        cst.parse_module(code)
        compile(code, filename, "exec", dont_inherit=True)
    except (cst.ParserSyntaxError, SyntaxError, ValueError) as exc:  # pragma: no cover - a bug guard
        raise MigratorError(f"{filename}: generated code does not parse: {str(exc).splitlines()[0]}") from None
