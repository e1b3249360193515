"""`nemo-migrate lint PATH...`: YAML configs (and Python scripts) against the rule table."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from migrator.cli.options import fail, resolve_lint_targets, resolve_source, target_options, unified_diff
from migrator.engine.diagnostics import SEVERITY_RANK
from migrator.errors import MigratorError
from migrator.output import RENDERERS


@click.command()
@click.argument("paths", nargs=-1, required=True)
@target_options
@click.option("--select", multiple=True, metavar="CODES", help="Only these rules: codes, prefixes (NM1) or names.")
@click.option("--ignore", multiple=True, metavar="CODES", help="Skip these rules: codes, prefixes or names.")
@click.option("--output-format", type=click.Choice(sorted(RENDERERS)), default="text", show_default=True)
@click.option("--fail-on", type=click.Choice(["error", "warning", "info"]), default=None,
              help="Exit 1 when a finding of at least this severity remains. Default: warning.")
@click.option("--fix", is_flag=True, help="Apply safe fixes in place (YAML as text-span edits).")
@click.option("--unsafe-fixes", is_flag=True, help="Also apply unsafe fixes (they change what NeMo does).")
@click.option("--diff", is_flag=True, help="Print the fixes as a unified diff and write nothing; exit 1 if any.")
@click.option("--exit-zero", is_flag=True, help="Exit 0 even when findings remain (still 2 on bad input).")
@click.option("--exit-non-zero-on-fix", is_flag=True, help="Exit 1 when --fix changed a file.")
@click.option("--diff-only", "diff_base", metavar="BASE",
              help="Report only findings on lines the change since BASE adds (git diff from the merge base of "
                   "BASE and HEAD to the working tree, as a pull request shows it).")
@click.option("--changed-lines-from", metavar="DIFF",
              help="Report only findings on lines a unified diff adds (a file, or - for stdin).")
@click.option("--project-root", type=click.Path(file_okay=False), default=None,
              help="github/gitlab/rdjson/sarif/junit paths are relative to this folder. Default: the current one.")
@click.option("--force-exclude", is_flag=True,
              help="Apply the project configuration's exclude to paths named on the command line too (pre-commit).")
@click.option("--isolated", is_flag=True, help="Ignore nemo-migrator.toml and [tool.nemo-migrator] in pyproject.toml.")
@click.option("--config", "config_path", metavar="OLD.yaml", help="Python files: also report MegatronStrategy keywords "
              "that disagree with this NeMo 1.0 YAML (NM120).")
def lint(paths, target_spec, source_spec, select, ignore, output_format, fail_on, fix, unsafe_fixes, diff,
         exit_zero, exit_non_zero_on_fix, diff_base, changed_lines_from, project_root, force_exclude, isolated,
         config_path):
    """Lint NeMo 1.0 YAML configs and NeMo 2.0 Python code (files or folders, *.yaml/*.yml/*.py) for checkpoint
    settings.

    Exit codes: 0 no finding at or above --fail-on, 1 findings (or, with --diff, a change), 2 usage error or
    unreadable input.

    Settings come from nemo-migrator.toml or [tool.nemo-migrator] in pyproject.toml (the nearest one up from the
    current directory); options given here override them.
    """
    from migrator.engine import project as proj
    from migrator.engine.runner import LintOptions, fix_file, lint_paths
    from migrator.migrate.files import write_bytes_atomically
    from migrator.engine.selection import Selection
    from migrator.engine.table import load_table
    from migrator.output import renderer

    try:
        table = load_table()
        project = proj.load_project_config(isolated=isolated)
        for warning in project.warnings:
            click.echo(f"nemo-migrate: warning: {warning}", err=True)
        rules = [(r.code, r.name) for r in table.lint_rules]
        proj.check_selectors(project, rules)
        unknown = Selection.parse(select, ignore).unknown_selectors(rules)
        if unknown:
            raise MigratorError(f"--select/--ignore: no rule matches {', '.join(unknown)} (see `nemo-migrate rule`)")
        target, bridge_target = resolve_lint_targets(proj.override(project.target, target_spec))
        options = LintOptions(
            target=target, bridge_target=bridge_target,
            source=resolve_source(proj.override(project.source, source_spec)),
            selection=proj.selection(project, select, ignore),
            per_file_ignores=project.per_file_ignores, pairs=project.pairs, root=project.root,
            config_path=Path(config_path) if config_path else None)
        if config_path:
            from migrator.migrate.mapping import config_mapping

            config_mapping(str(options.config_path), table, options.target, options.source)  # bad: a usage error
        fail_on = fail_on or project.fail_on or "warning"
        changed_rows = proj.changed_rows(diff_base, changed_lines_from, fixing=fix or unsafe_fixes or diff)
    except MigratorError as exc:
        fail(str(exc))
    results = lint_paths(paths, table, options, proj.exclusion(project), force_exclude)
    partners = proj.consistency_partners([r.filename for r in results if r.error is None], options)
    if partners:  # scripts paired with a config in `paths`: linted (consistency rules), never fixed
        results += lint_paths(partners, table, options)
    for result in results:
        if result.error:
            click.echo(f"nemo-migrate: error: {result.error}", err=True)

    changed = 0
    if fix or unsafe_fixes or diff:
        for index, result in enumerate(results):
            if result.error or result.filename in partners or not any(d.fix for d in result.diagnostics):
                continue
            fixed = fix_file(result, table, options, unsafe=unsafe_fixes)
            if fixed.fixed == fixed.original:
                continue
            changed += 1
            if diff:
                sys.stdout.write(unified_diff(fixed.original, fixed.fixed, result.filename))
            else:
                write_bytes_atomically(Path(result.filename), fixed.fixed.encode("utf-8"))
                results[index] = fixed.result
                click.echo(f"Fixed {len(fixed.applied)} finding{'s' * (len(fixed.applied) != 1)} in "
                           f"{result.filename}", err=True)
        if diff:
            raise SystemExit(2 if any(r.error for r in results) else int(changed > 0))

    if changed_rows is not None:
        from migrator.engine.changed_lines import keep_changed

        results = keep_changed(results, *changed_rows)
    root = Path(project_root) if project_root else None
    sys.stdout.write(renderer(output_format)(results, root=root, unsafe_fixes=unsafe_fixes))
    if any(r.error for r in results):
        raise SystemExit(2)
    threshold = SEVERITY_RANK[fail_on]
    failing = any(SEVERITY_RANK[d.severity] >= threshold for r in results for d in r.diagnostics)
    if exit_non_zero_on_fix and changed:
        raise SystemExit(1)
    raise SystemExit(1 if failing and not exit_zero else 0)


