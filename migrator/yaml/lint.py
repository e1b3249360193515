"""The YAML language entry points of the lint engine."""
from __future__ import annotations

from typing import Any

from migrator.engine.diagnostics import Diagnostic
from migrator.engine.table import Table
from migrator.errors import MigratorError
from migrator.yaml.checks import check_document
from migrator.yaml.document import parse


def check_text(text: str, filename: str, table: Table, options: Any) -> list[Diagnostic]:
    return check_document(parse(text, filename), table, options.target, options.source)


def parses(text: str, filename: str) -> bool:
    try:
        parse(text, filename)
    except MigratorError:
        return False
    return True
