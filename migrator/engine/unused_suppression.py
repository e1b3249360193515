"""NM001 unused-suppression: a suppression comment that silences nothing (ruff's RUF100).

Language-agnostic: it reads the `Suppressions` a file's scan produced (each remembers the codes it silenced) and
the file's text, and its fix is a text edit (remove the comment, or only the codes it does not need).

A code is judged only when the verdict is certain: the rule it names ran on this file (the selection, including
per-file ignores, enabled it) and produced no finding there. A code the selection turned off, another tool's code
in a shared `# noqa`, a blanket `# noqa` and a comment that names NM001 itself are never reported.
"""
from __future__ import annotations

import re
from collections.abc import Callable

from migrator.engine.diagnostics import Diagnostic, Edit, Fix, Location
from migrator.engine.selection import Selection
from migrator.engine.suppression import Suppression, Suppressions
from migrator.engine.table import Table

CODE = "NM001"
NAME = "unused-suppression"
OUR_CODE = re.compile(r"^NM\d{3}$")
LANGUAGE_NAMES = {"yaml": "YAML", "python": "Python"}


def unused_suppressions(suppressions: Suppressions, text: str, filename: str, table: Table, selection: Selection,
                        language: str) -> list[Diagnostic]:
    rule = table.rule_by_code.get(CODE)
    if rule is None or not selection.enabled(CODE, NAME) or not suppressions.items:
        return []
    by_name = {r.name: r for r in table.lint_rules}
    lines = suppressions.lines  # the rows Suppressions.scan numbered
    findings = []
    for item in suppressions.items:
        if item.codes is None:
            if item.kind == "noqa" or item.used:
                continue  # a blanket `# noqa` belongs to every tool on the line
            others = [r for r in table.lint_rules if language in r.languages and r.code != CODE]
            if not all(selection.enabled(r.code, r.name) for r in others):
                continue  # some rule did not run: it might have fired here
            unused = [("", "no finding on this line or the next")]
        else:
            if CODE in item.codes or NAME in item.codes:
                continue  # kept on purpose
            unused = []
            for entry in item.code_list:
                listed = table.rule_by_code.get(entry) or by_name.get(entry)
                if listed is None:
                    if item.kind == "noqa" and not OUR_CODE.match(entry):
                        continue  # another linter's code (`# noqa: E501, NM110`)
                    if selection.enabled(entry, entry):
                        unused.append((entry, f"{entry} is not a nemo-migrate rule"))
                elif language not in listed.languages:
                    unused.append((entry, f"{listed.code} does not check {LANGUAGE_NAMES.get(language, language)} files"))
                elif selection.enabled(listed.code, listed.name) and listed.code not in item.used:
                    unused.append((entry, f"no {listed.code} finding on this line or the next"))
            if not unused:
                continue
        findings.append(_finding(item, unused, lines, text, filename, rule.severity))
    # an NM001 finding can itself be silenced by another comment that names NM001 (not by a blanket one)
    return suppressions.filter(findings, blanket=False)


def can_matter(table: Table, findings: list[Diagnostic]) -> Callable[[Suppression], bool]:
    """Which suppression candidates can change a file's result (`Suppressions.scan(relevant=...)`): a
    `# nemo-migrate: ignore` always; a `# noqa` that names one of our rules (code or name) or an NM code, since it
    silences that rule's findings and NM001 judges it; a blanket `# noqa` only where a finding sits on its line or the
    next (NM001 never reports one). Another tool's `# noqa: E501` silences nothing here and is never reported, so
    where it is a real comment (Python's tokenizer) need not be asked."""
    ours = set(table.rule_by_code) | {r.name for r in table.lint_rules}
    rows = {d.location.row for d in findings}

    def relevant(item: Suppression) -> bool:
        if item.kind != "noqa":
            return True
        if item.codes is None:
            return item.row in rows or item.row + 1 in rows
        return any(c in ours or OUR_CODE.match(c) for c in item.code_list)

    return relevant


def _finding(item: Suppression, unused: list[tuple[str, str]], lines: list[str], text: str, filename: str,
             severity: str) -> Diagnostic:
    line = lines[item.row - 1]
    start = item.column - 1  # index of the '#'
    code_end = (item.codes_span[1] - 1) if item.codes_span else item.end_column - 1
    comment_end = item.end_column - 1 if item.kind == "ignore" else code_end
    entries = [e for e, _ in unused if e]
    kept = [c for c in item.code_list if c not in entries]
    if item.codes is None:
        message = "unused blanket suppression: no finding on this line or the next"
    else:
        message = "unused suppression: " + "; ".join(why for _, why in unused)
    if kept and item.codes_span:
        written = line[item.codes_span[0] - 1:item.codes_span[1] - 1]
        separator = ", " if ", " in written else ","
        edit = Edit(separator.join(kept), Location(item.row, item.codes_span[0]), Location(item.row, item.codes_span[1]))
        fix = Fix("safe", f"Remove {', '.join(entries)} from the suppression", (edit,))
    else:
        fix = Fix("safe", "Remove the unused suppression comment", (_removal(item.row, start, code_end, lines, text),))
    return Diagnostic(code=CODE, name=NAME, message=message, severity=severity, filename=filename,  # type: ignore[arg-type]
                      location=Location(item.row, item.column), end_location=Location(item.row, comment_end + 1),
                      fix=fix)


def _removal(row: int, start: int, code_end: int, lines: list[str], text: str) -> Edit:
    """Delete the comment: the whole line when it stands alone, else from the code before it to the line's end
    (a reason written after it goes too), keeping a further `# ...` comment that follows it."""
    line = lines[row - 1]
    later = line.find("#", code_end)
    before = line[:start]
    if before.strip() == "" and later == -1:
        if row < len(lines) or text.endswith(("\n", "\r")):
            return Edit("", Location(row, 1), Location(row + 1, 1))
        if row > 1:  # the last line, without a line break: take the break before it
            return Edit("", Location(row - 1, len(lines[row - 2]) + 1), Location(row, len(line) + 1))
        return Edit("", Location(row, 1), Location(row, len(line) + 1))
    if later != -1:
        return Edit("", Location(row, start + 1), Location(row, later + 1))
    return Edit("", Location(row, len(before.rstrip()) + 1), Location(row, len(line) + 1))
