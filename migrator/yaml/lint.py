"""The YAML language entry points of the lint engine."""
from __future__ import annotations

import functools
from typing import Any

from migrator.engine.diagnostics import Diagnostic
from migrator.engine.fixes import line_offsets
from migrator.engine.suppression import rows as split_rows
from migrator.engine.table import Table
from migrator.errors import MigratorError
from migrator.yaml.checks import check_document
from migrator.yaml.document import Document, Node, parse


@functools.lru_cache(maxsize=2)
def _parsed(text: str, filename: str) -> Document:
    """One parse per text: the checks and the comment scan read the same tree (nothing mutates it)."""
    return parse(text, filename)


def check_text(text: str, filename: str, table: Table, options: Any) -> list[Diagnostic]:
    return check_document(_parsed(text, filename), table, options.target, options.source,
                          getattr(options, "bridge_target", None))


def parses(text: str, filename: str) -> bool:
    try:
        parse(text, filename)
    except MigratorError:
        return False
    return True


def comment_starts(text: str, filename: str, wanted: set[int]) -> dict[int, int] | None:
    """Where a comment starts on each wanted row: the first `#` at the start of the line or after a blank that is
    not inside a quoted or block scalar (a plain scalar cannot hold ` #`)."""
    try:
        document = _parsed(text, filename)  # the tree check_text already built
    except MigratorError:
        return None
    spans: list[tuple[int, int]] = []

    def collect(node: Node) -> None:
        if node.kind == "scalar":
            if node.style is not None:
                spans.append((node.start_index, node.end_index))
            return
        for key, value in node.items:
            collect(key)
            collect(value)
        for child in node.children:
            collect(child)

    for root in document.roots:
        collect(root)
    offsets = line_offsets(text)
    lines = split_rows(text)
    starts: dict[int, int] = {}
    for row in wanted:
        line = lines[row - 1]
        column = line.find("#")
        while column != -1:
            at = offsets[row] + column
            if (column == 0 or line[column - 1] in " \t") and not any(a <= at < b for a, b in spans):
                starts[row] = column + 1
                break
            column = line.find("#", column + 1)
    return starts
