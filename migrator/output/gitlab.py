"""`--output-format gitlab`: a GitLab Code Quality report (the Code Climate issue subset GitLab reads).

Each finding: `description`, `check_name` (the rule code), a `fingerprint` unique in the report and stable across
runs (see common.fingerprints), `severity` (error -> major, warning -> minor, info -> info), and `location` with a
path relative to the project root and begin/end positions. An unreadable file is a `critical` issue.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from migrator.engine.diagnostics import FileResult, Location
from migrator.output.common import display_path, error_position, fingerprints

SEVERITY = {"error": "major", "warning": "minor", "info": "info"}


def render(results: list[FileResult], *, root: Path | None = None, **_: Any) -> str:
    issues = []
    for result in results:
        path = display_path(result.filename, root)
        if result.error is not None:
            issues.append({
                "type": "issue", "check_name": "nemo-migrate-error", "description": result.error,
                "categories": ["Bug Risk"], "severity": "critical",
                "fingerprint": hashlib.md5(f"error\0{path}".encode()).hexdigest(),  # noqa: S324 - an id, not security
                "location": {"path": path, "lines": {"begin": (error_position(result) or Location(1, 1)).row}},
            })
            continue
        for d, key in fingerprints(result, path):
            issues.append({
                "type": "issue",
                "check_name": d.code,
                "description": f"{d.code} ({d.name}): {d.message}",
                "categories": ["Compatibility"],
                "severity": SEVERITY[d.severity],
                "fingerprint": hashlib.md5(key.encode()).hexdigest(),  # noqa: S324 - an id, not security
                "location": {"path": path, "positions": {
                    "begin": {"line": d.location.row, "column": d.location.column},
                    "end": {"line": d.end_location.row, "column": d.end_location.column}}},
            })
    return json.dumps(issues, indent=2, ensure_ascii=False) + "\n"
