"""The Python language's entry point for the lint engine: NeMo 2.0 code (`migrator.python.lint`, MegatronStrategy
keywords) and Megatron-Bridge code (`migrator.python.bridge_lint`, CheckpointConfig calls and cfg.checkpoint.<field>
assignments), each run only on files that name what it judges; both find code with Python's `ast`."""
from __future__ import annotations

from typing import Any

from migrator.engine.diagnostics import Diagnostic
from migrator.engine.table import Table
from migrator.python import lint as nemo2_lint

BOM = "\ufeff"
parses = nemo2_lint.parses
comment_starts = nemo2_lint.comment_starts


def check_text(text: str, filename: str, table: Table, options: Any) -> list[Diagnostic]:
    findings = nemo2_lint.check_text(text, filename, table, options)
    from migrator.python.names import needs_bridge_check  # most files stop here

    if not needs_bridge_check(text.removeprefix(BOM)):
        return findings
    from migrator.python.bridge_lint import check_text as check_bridge

    return findings + check_bridge(text, filename, table, options)
