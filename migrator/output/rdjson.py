"""`--output-format rdjson` / `rdjsonl`: reviewdog's Diagnostic Format (DiagnosticResult / one Diagnostic a line).

Positions are 1-based with UTF-8 byte columns and exclusive ends (converted from our code-point columns with the
linted text). Every fix, safe or unsafe, becomes a `suggestions` entry (its whole replacement: range and text), so
`reviewdog -reporter=github-pr-review` offers it as a suggestion a reviewer applies by hand; the message says
whether the fix is safe.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from migrator.engine.diagnostics import Diagnostic, FileResult, Location
from migrator.output.common import (TOOL, byte_column, display_path, error_position, fix_note, fix_span, homepage,
                                    lines_of, rule_url)

SEVERITY = {"error": "ERROR", "warning": "WARNING", "info": "INFO"}


def _position(lines: list[str], location: Location) -> dict[str, int]:
    return {"line": location.row, "column": byte_column(lines, location)}


def diagnostics(results: list[FileResult], root: Path | None, *, with_source: bool) -> list[dict[str, Any]]:
    out = []
    for result in results:
        path = display_path(result.filename, root)
        if result.error is not None:
            entry: dict[str, Any] = {"message": result.error, "location": {"path": path}, "severity": "ERROR"}
            at = error_position(result)
            if at is not None:  # the line only: the text (to count UTF-8 bytes) was not kept
                entry["location"]["range"] = {"start": {"line": at.row}}
            if with_source:
                entry["source"] = _source()
            out.append(entry)
            continue
        lines = lines_of(result)
        for d in result.diagnostics:
            out.append(_diagnostic(d, path, lines, result.source or "", with_source))
    return out


def _diagnostic(d: Diagnostic, path: str, lines: list[str], source: str, with_source: bool) -> dict[str, Any]:
    note = fix_note(d)
    entry: dict[str, Any] = {
        "message": d.message + (f"\n{note}" if note else ""),
        "location": {"path": path, "range": {"start": _position(lines, d.location),
                                             "end": _position(lines, d.end_location)}},
        "severity": SEVERITY[d.severity],
    }
    if with_source:
        entry["source"] = _source()
    entry["code"] = {"value": d.code, "url": rule_url(d.code)}
    span = fix_span(d, source)
    if span is not None:
        start, end, text = span
        entry["suggestions"] = [{"range": {"start": _position(lines, start), "end": _position(lines, end)},
                                 "text": text}]
    return entry


def _source() -> dict[str, str]:
    return {"name": TOOL, "url": homepage()}


def render(results: list[FileResult], *, root: Path | None = None, **_: Any) -> str:
    document = {"source": _source(), "diagnostics": diagnostics(results, root, with_source=False)}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def render_lines(results: list[FileResult], *, root: Path | None = None, **_: Any) -> str:
    return "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in diagnostics(results, root, with_source=True))
