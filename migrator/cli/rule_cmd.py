"""`nemo-migrate rule [CODE]`: a rule's documentation (what it does, why, example, fix), or the list of rules."""
from __future__ import annotations

import textwrap

import click

from migrator.cli.options import fail


@click.command()
@click.argument("code", required=False)
def rule(code):
    """Show a rule's documentation (by code or name), or list every rule."""
    from migrator.engine.table import load_table

    table = load_table()
    if not code:
        for r in sorted(table.lint_rules, key=lambda r: r.code):
            click.echo(f"{r.code}  {r.name:<30} {r.severity:<8} {r.summary}")
        return
    match = next((r for r in table.lint_rules if code.upper() == r.code or code == r.name), None)
    if match is None:
        fail(f"unknown rule {code!r} (run `nemo-migrate rule` for the list)")
    click.echo(render_rule(match))


def render_rule(r) -> str:
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
