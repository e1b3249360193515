"""`nemo-migrate rule [CODE]`: a rule's documentation (what it does, why, example, fix), or the list of rules."""
from __future__ import annotations

import click

from migrator.cli.options import fail
from migrator.output.rule_doc import render_rule


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
