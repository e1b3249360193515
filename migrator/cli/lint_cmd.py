"""`nemo-migrate lint PATH...`: YAML configs (and Python scripts) against the rule table."""
from __future__ import annotations

import gc
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
@click.option("--fix", is_flag=True, help="Apply safe fixes in place (text-span edits); with - write the fixed text "
              "to stdout.")
@click.option("--unsafe-fixes", is_flag=True, help="Show unsafe fixes as available ([*]); with --fix or --diff also "
              "apply them (they change what NeMo does).")
@click.option("--show-fixes", is_flag=True, help="With --fix: list what was fixed, per file and rule.")
@click.option("--statistics", is_flag=True, help="Print one line per rule (count, code, fixable, name) instead of "
              "each finding.")
@click.option("--stdin-filename", metavar="PATH", help="With - as the path: the name the text read from stdin is "
              "reported (and its language and per-file ignores chosen) under.")
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
def lint(paths, target_spec, source_spec, select, ignore, output_format, fail_on, fix, unsafe_fixes, show_fixes,
         statistics, stdin_filename, diff, exit_zero, exit_non_zero_on_fix, diff_base, changed_lines_from,
         project_root, force_exclude, isolated, config_path):
    """Lint NeMo 1.0 YAML configs and NeMo 2.0 Python code (files or folders, *.yaml/*.yml/*.py) for checkpoint
    settings.

    Exit codes: 0 no finding at or above --fail-on, 1 findings (or, with --diff, a change), 2 usage error or
    unreadable input.

    Folders are walked as ruff walks them: .gitignore respected, hidden folders and virtual environments (a folder
    with pyvenv.cfg) skipped; a file named here is always linted. `-` reads stdin (name it with --stdin-filename).

    Settings come from nemo-migrator.toml or [tool.nemo-migrator] in pyproject.toml (the nearest one up from the
    current directory); options given here override them.
    """
    from migrator.engine import project as proj
    from migrator.engine.runner import LintOptions, fix_file, lint_paths
    from migrator.migrate.files import write_bytes_atomically
    from migrator.engine.selection import Selection
    from migrator.engine.table import load_table
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
        changed_rows = proj.changed_rows(diff_base, changed_lines_from, fixing=fix or diff)
        if "-" in paths and len(paths) > 1:
            raise MigratorError("- (stdin) cannot be combined with other paths")
        if stdin_filename and "-" not in paths:
            raise MigratorError("--stdin-filename names the text read from stdin: pass - as the path")
    except MigratorError as exc:
        fail(str(exc))
    if paths == ("-",):
        _lint_stdin(stdin_filename, table, options, proj.exclusion(project), force_exclude, fix=fix,
                    unsafe_fixes=unsafe_fixes, diff=diff, output_format=output_format, fail_on=fail_on,
                    exit_zero=exit_zero, statistics=statistics, project_root=project_root)
    # what is loaded by now (modules, the rule table) lives as long as the process: out of the collector's way, so
    # its collections scan only what linting the files allocates
    gc.freeze()
    results = lint_paths(paths, table, options, proj.exclusion(project), force_exclude)
    partners = proj.consistency_partners([r.filename for r in results if r.error is None], options)
    if partners:  # scripts paired with a config in `paths`: linted (consistency rules), never fixed
        results += lint_paths(partners, table, options)
    for result in results:
        if result.error:
            click.echo(f"nemo-migrate: error: {result.error}", err=True)

    changed = 0
    applied: dict[str, list] = {}
    if fix or diff:
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
                try:
                    write_bytes_atomically(Path(result.filename), fixed.fixed.encode("utf-8"))
                except (OSError, MigratorError) as exc:
                    result.error = f"{result.filename}: cannot write the fixes: {getattr(exc, 'strerror', None) or exc}"
                    click.echo(f"nemo-migrate: error: {result.error}", err=True)
                    continue
                results[index] = fixed.result
                applied[result.filename] = fixed.applied
                click.echo(f"Fixed {len(fixed.applied)} finding{'s' * (len(fixed.applied) != 1)} in "
                           f"{result.filename}", err=True)
        if diff:
            raise SystemExit(2 if any(r.error for r in results) else int(changed > 0))

    if changed_rows is not None:
        from migrator.engine.changed_lines import keep_changed

        results = keep_changed(results, *changed_rows)
    root = Path(project_root) if project_root else None
    _render(results, output_format, statistics=statistics, root=root, unsafe_fixes=unsafe_fixes, fail_on=fail_on)
    if show_fixes and fix and output_format == "text":
        from migrator.output.text import fixed_summary

        sys.stdout.write(fixed_summary(applied))
    if any(r.error for r in results):
        raise SystemExit(2)
    threshold = SEVERITY_RANK[fail_on]
    failing = any(SEVERITY_RANK[d.severity] >= threshold for r in results for d in r.diagnostics)
    if exit_non_zero_on_fix and changed:
        raise SystemExit(1)
    raise SystemExit(1 if failing and not exit_zero else 0)




def use_color() -> bool:
    """ANSI colours on a terminal; NO_COLOR (non-empty) turns them off, FORCE_COLOR (non-empty) on even when piped;
    NO_COLOR wins (as CPython decides)."""
    import os

    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


def _render(results, output_format: str, *, statistics: bool, **options) -> None:
    from migrator.output import renderer

    if statistics:
        from migrator.output import text

        if output_format == "json":
            import json

            sys.stdout.write(json.dumps(text.statistics_rows(results, unsafe_fixes=options["unsafe_fixes"]),
                                        indent=2) + "\n")
        else:
            sys.stdout.write(text.render_statistics(results, unsafe_fixes=options["unsafe_fixes"], color=use_color()))
        return
    sys.stdout.write(renderer(output_format)(results, color=output_format == "text" and use_color(), **options))


def _lint_stdin(stdin_filename, table, options, excluded, force_exclude, *, fix, unsafe_fixes, diff, output_format,
                fail_on, exit_zero, statistics, project_root) -> None:
    """`lint -`: the text on stdin, reported under --stdin-filename (default `-`, read as YAML). With --fix the
    fixed text goes to stdout and the remaining findings to stderr (what editors call, as ruff does); with --diff
    the diff goes to stdout. Never writes a file."""
    from migrator.engine.runner import FileResult, check_text, fix_file, language_for

    name = stdin_filename or "-"
    data = sys.stdin.buffer.read()
    if force_exclude and stdin_filename and excluded is not None and excluded(stdin_filename):
        if fix:
            sys.stdout.buffer.write(data)  # an excluded file comes back unchanged
        raise SystemExit(0)
    result = FileResult(filename=name)
    file_options = options.for_file(name)
    try:
        if b"\0" in data[:8192]:
            raise MigratorError(f"{name}: binary file, not text")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MigratorError(f"{name}: not UTF-8 (byte {exc.start}: {data[exc.start]:#04x})") from None
        result.source = text
        result.diagnostics, _ = check_text(text, name, table, file_options, language_for(name))
    except MigratorError as exc:
        result.error = str(exc)
        click.echo(f"nemo-migrate: error: {result.error}", err=True)
        if fix:
            sys.stdout.buffer.write(data)  # the editor's buffer stays as it was
        raise SystemExit(2)
    if fix or diff:
        fixed = fix_file(result, table, options, unsafe=unsafe_fixes)
        if diff:
            if fixed.fixed != fixed.original:
                sys.stdout.write(unified_diff(fixed.original, fixed.fixed, name))
            raise SystemExit(int(fixed.fixed != fixed.original))
        sys.stdout.write(fixed.fixed)
        result = fixed.result
        stream = sys.stderr
    else:
        stream = sys.stdout
    root = Path(project_root) if project_root else None
    saved, sys.stdout = sys.stdout, stream
    try:
        _render([result], output_format, statistics=statistics, root=root, unsafe_fixes=unsafe_fixes, fail_on=fail_on)
    finally:
        sys.stdout = saved
    threshold = SEVERITY_RANK[fail_on]
    failing = any(SEVERITY_RANK[d.severity] >= threshold for d in result.diagnostics)
    raise SystemExit(1 if failing and not exit_zero else 0)
