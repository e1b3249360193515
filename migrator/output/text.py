"""Human output: `path:line:col: CODE [*] severity: message`, then a summary (not for parsing; use json)."""
from __future__ import annotations

from collections import Counter
from typing import Any

from migrator.engine.diagnostics import FileResult


def render(results: list[FileResult], *, unsafe_fixes: bool = False, **_: Any) -> str:
    lines = []
    for result in results:
        for d in result.diagnostics:
            mark = " [*]" if d.fix and (d.fix.applicability == "safe" or unsafe_fixes) else ""
            lines.append(f"{d.filename}:{d.location.row}:{d.location.column}: {d.code}{mark} {d.severity}: {d.message}")
    lines.append(summary(results))
    return "\n".join(lines) + "\n"


def summary(results: list[FileResult]) -> str:
    diagnostics = [d for r in results for d in r.diagnostics]
    checked = sum(1 for r in results if r.error is None)
    if not diagnostics:
        return f"All checks passed ({checked} file{'s' * (checked != 1)} checked)."
    counts = Counter(d.severity for d in diagnostics)
    parts = ", ".join(f"{counts[s]} {s}{'s' * (counts[s] != 1 and s != 'info')}" for s in ("error", "warning", "info") if counts[s])
    text = f"Found {len(diagnostics)} finding{'s' * (len(diagnostics) != 1)} ({parts}) in {checked} file{'s' * (checked != 1)}."
    safe = sum(1 for d in diagnostics if d.fix and d.fix.applicability == "safe")
    unsafe = sum(1 for d in diagnostics if d.fix and d.fix.applicability == "unsafe")
    if safe:
        text += f"\n[*] {safe} fixable with the --fix option."
    if unsafe:
        text += f"\n{unsafe} hidden fix{'es' * (unsafe != 1)} can be enabled with the --unsafe-fixes option."
    return text
