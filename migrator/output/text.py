"""Human output: `path:line:col: CODE [*] severity: message`, then a summary (not for parsing; use json).

`color=True` (the CLI decides: a terminal, `NO_COLOR`, `FORCE_COLOR`) adds ANSI colours as ruff does; `unsafe_fixes`
counts unsafe fixes as available (`[*]`), as `--unsafe-fixes` shows them; `render_statistics` is `--statistics`.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from migrator.engine.diagnostics import Diagnostic, FileResult

BOLD, RED, YELLOW, BLUE, CYAN, RESET = "\033[1m", "\033[31m", "\033[33m", "\033[34m", "\033[36m", "\033[0m"
SEVERITY_COLOR = {"error": RED, "warning": YELLOW, "info": BLUE}


def _paint(text: str, style: str, color: bool) -> str:
    return f"{style}{text}{RESET}" if color else text


def fixable(d: Diagnostic, unsafe_fixes: bool) -> bool:
    return d.fix is not None and (d.fix.applicability == "safe" or unsafe_fixes)


def render(results: list[FileResult], *, unsafe_fixes: bool = False, color: bool = False, **_: Any) -> str:
    lines = []
    for result in results:
        for d in result.diagnostics:
            mark = " " + _paint("[*]", CYAN, color) if fixable(d, unsafe_fixes) else ""
            where = (_paint(d.filename, BOLD, color) + ":" + f"{d.location.row}:{d.location.column}:")
            lines.append(f"{where} {_paint(d.code, BOLD + RED, color)}{mark} "
                         f"{_paint(d.severity, SEVERITY_COLOR[d.severity], color)}: {d.message}")
    lines.append(summary(results, unsafe_fixes=unsafe_fixes, color=color))
    return "\n".join(lines) + "\n"


def render_statistics(results: list[FileResult], *, unsafe_fixes: bool = False, color: bool = False,
                      **_: Any) -> str:
    """`--statistics`: one row per rule, most frequent first: count, code, [*] when any of them is fixable, name."""
    diagnostics = [d for r in results for d in r.diagnostics]
    counts = Counter(d.code for d in diagnostics)
    names = {d.code: d.name for d in diagnostics}
    fixes = {d.code for d in diagnostics if fixable(d, unsafe_fixes)}
    width = max((len(str(n)) for n in counts.values()), default=1)
    lines = [f"{n:>{width}}\t{_paint(code, BOLD + RED, color)}\t{'[*]' if code in fixes else '[ ]'} {names[code]}"
             for code, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]
    lines.append(summary(results, unsafe_fixes=unsafe_fixes, color=color))
    return "\n".join(lines) + "\n"


def statistics_rows(results: list[FileResult], *, unsafe_fixes: bool = False) -> list[dict[str, Any]]:
    """`--statistics --output-format json`: ruff's shape (code, name, count, fixable)."""
    diagnostics = [d for r in results for d in r.diagnostics]
    counts = Counter(d.code for d in diagnostics)
    names = {d.code: d.name for d in diagnostics}
    fixes = {d.code for d in diagnostics if fixable(d, unsafe_fixes)}
    return [{"code": code, "name": names[code], "count": n, "fixable": code in fixes}
            for code, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def summary(results: list[FileResult], *, unsafe_fixes: bool = False, color: bool = False) -> str:
    diagnostics = [d for r in results for d in r.diagnostics]
    checked = sum(1 for r in results if r.error is None)
    unreadable = len(results) - checked
    files = f"{checked} file{'s' * (checked != 1)}"
    failed = (f"{unreadable} file{'s' * (unreadable != 1)} could not be linted (NM002 unreadable-file)."
              if unreadable else "")
    if not diagnostics:
        if unreadable:
            return f"No findings in {files} checked; {failed}"
        return _paint(f"All checks passed ({files} checked).", BOLD, color)
    counts = Counter(d.severity for d in diagnostics)
    parts = ", ".join(f"{counts[s]} {s}{'s' * (counts[s] != 1 and s != 'info')}" for s in ("error", "warning", "info") if counts[s])
    text = f"Found {len(diagnostics)} finding{'s' * (len(diagnostics) != 1)} ({parts}) in {files}."
    if failed:
        text += f"\n{failed}"
    shown = sum(1 for d in diagnostics if fixable(d, unsafe_fixes))
    hidden = sum(1 for d in diagnostics if d.fix and not fixable(d, unsafe_fixes))
    if shown:
        text += f"\n{_paint('[*]', CYAN, color)} {shown} fixable with the --fix option."
    if hidden:
        text += f"\n{hidden} hidden fix{'es' * (hidden != 1)} can be enabled with the --unsafe-fixes option."
    return text


def fixed_summary(applied: dict[str, list[Diagnostic]]) -> str:
    """`--show-fixes` after `--fix`: what was fixed, per file and rule (ruff's enumeration)."""
    total = sum(len(ds) for ds in applied.values())
    if not total:
        return "No fixes applied.\n"
    lines = [f"Fixed {total} finding{'s' * (total != 1)}:"]
    for filename, ds in applied.items():
        if not ds:
            continue
        lines.append(f"- {filename}:")
        counts = Counter((d.code, d.name) for d in ds)
        for (code, name), n in sorted(counts.items()):
            lines.append(f"    {n} × {code} ({name})")
    return "\n".join(lines) + "\n"
