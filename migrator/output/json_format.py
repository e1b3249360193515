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
    return json.dumps([diagnostic_dict(d) for r in results for d in r.diagnostics], indent=2, ensure_ascii=False) + "\n"
