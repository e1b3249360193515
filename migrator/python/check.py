"""The Python language's entry point for the lint engine: NeMo 2.0 code (`migrator.python.lint`, MegatronStrategy
keywords) and Megatron-Bridge code (`migrator.python.bridge_lint`, CheckpointConfig calls and cfg.checkpoint.<field>
assignments), each run only on files that name what it judges."""
from __future__ import annotations

from typing import Any

from migrator.engine.diagnostics import Diagnostic
from migrator.engine.table import Table
from migrator.errors import MigratorError
from migrator.python import lint as nemo2_lint

BOM = "\ufeff"
parses = nemo2_lint.parses
comment_starts = nemo2_lint.comment_starts


def check_text(text: str, filename: str, table: Table, options: Any) -> list[Diagnostic]:
    findings = nemo2_lint.check_text(text, filename, table, options)
    from migrator.python.names import needs_bridge_check  # without LibCST: most files stop here

    body = text.removeprefix(BOM)
    if not needs_bridge_check(body):
        return findings
    import libcst as cst

    from migrator.python.bridge_lint import check_module

    shift = 1 if text.startswith(BOM) else 0
    try:
        module = cst.parse_module(body)
    except cst.ParserSyntaxError as exc:
        raise MigratorError(f"{filename}:{exc.raw_line}:{exc.raw_column + 1 + (exc.raw_line == 1) * shift}: "
                            f"Python syntax error: {exc.message}") from None
    return findings + check_module(module, filename, table, options, shift)
