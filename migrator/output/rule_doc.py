"""A lint rule's documentation as text (Markdown): what it does, why, example, fix, fix safety.

One renderer for `nemo-migrate rule CODE`, SARIF's rule help and the generated pages under docs/rules/.
"""
from __future__ import annotations

import textwrap

from migrator.engine.table import LintRule


def render_rule(r: LintRule) -> str:
    def para(text: str) -> str:
        return textwrap.fill(" ".join(text.split()), width=100)

    parts = [
        f"# {r.name} ({r.code})",
        f"Severity: {r.severity}. Applies to: {', '.join(r.languages)}."
        + (f" Depends on the {r.depends_on}." if r.depends_on else ""),
        "## What it does\n" + para(r.what),
        "## Why is this bad?\n" + para(r.why),
        "## Example\n" + textwrap.indent(r.example.rstrip("\n"), "    "),
        "## Fix\n" + para(r.fix),
    ]
    if r.fix_safety:
        parts.append("## Fix safety\n" + para(r.fix_safety))
    return "\n\n".join(parts)
