"""A stand-in for the Python lint (issue 3's migrator.python.lint) that reports which config a script is judged
against, so the project `pairs` wiring can be tested before the real Python lint exists."""
from __future__ import annotations

from typing import Any

from migrator.engine.diagnostics import Diagnostic, Edit, Fix, Location


def check_text(text: str, filename: str, table: Any, options: Any) -> list[Diagnostic]:
    end = Location(1, len(text.split("\n")[0]) + 1)
    if text.startswith("# rewritten"):
        return []
    return [Diagnostic(code="NM120", name="fake-consistency", message=f"config_path={options.config_path}",
                       severity="error", filename=filename, location=Location(1, 1), end_location=end,
                       fix=Fix("safe", "rewrite", (Edit("# rewritten\n", Location(1, 1), Location(1, 1)),)))]


def parses(text: str, filename: str) -> bool:
    return True
