"""`--output-format json`: a list of findings in ruff's JSON shape (a stable contract: other tools parse it)."""
from __future__ import annotations

import json
from typing import Any

from migrator.engine.diagnostics import Diagnostic, FileResult, Location


def _loc(location: Location) -> dict[str, int]:
    return {"row": location.row, "column": location.column}


def diagnostic_dict(d: Diagnostic) -> dict[str, Any]:
    fix = None
    if d.fix is not None:
        fix = {
            "applicability": d.fix.applicability,
            "message": d.fix.message,
            "edits": [{"content": e.content, "location": _loc(e.location), "end_location": _loc(e.end_location)}
                      for e in d.fix.edits],
        }
    return {
        "code": d.code,
        "name": d.name,
        "message": d.message,
        "severity": d.severity,
        "filename": d.filename,
        "location": _loc(d.location),
        "end_location": _loc(d.end_location),
        "fix": fix,
    }


def render(results: list[FileResult], **_: Any) -> str:
    """Findings in file order; a file that could not be linted is one NM002 (unreadable-file) error entry."""
    from migrator.output.common import unreadable_diagnostic

    entries = []
    for r in results:
        if r.error is not None:
            entries.append(diagnostic_dict(unreadable_diagnostic(r)))
        entries.extend(diagnostic_dict(d) for d in r.diagnostics)
    return json.dumps(entries, indent=2, ensure_ascii=False) + "\n"
