"""`--output-format github`: GitHub Actions workflow commands, one annotation per finding, then a summary line.

`::error title=nemo-migrate (NM106),file=conf/gpt.yaml,line=2,col=21,endLine=2,endColumn=25::conf/gpt.yaml:2:21: ...`
`col`/`endColumn` are left out when a finding spans lines (GitHub rejects them there). Messages escape `%`, CR and
LF; property values also escape `:` and `,`. GitHub shows only the first few annotations of a kind per step, so the
summary line (not a command) says how many there are.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from migrator.engine.diagnostics import FileResult
from migrator.output.common import TOOL, display_path, error_position, fix_note

COMMAND = {"error": "error", "warning": "warning", "info": "notice"}


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render(results: list[FileResult], *, root: Path | None = None, **_: Any) -> str:
    from migrator.output.text import summary

    lines = []
    for result in results:
        path = display_path(result.filename, root)
        if result.error is not None:
            at = error_position(result)
            where = f",line={at.row},col={at.column}" if at else ""
            lines.append(f"::error title={escape_property(f'{TOOL} (error)')},file={escape_property(path)}{where}::"
                         f"{escape_data(result.error)}")
            continue
        for d in result.diagnostics:
            props = [("title", f"{TOOL} ({d.code})"), ("file", path), ("line", str(d.location.row))]
            if d.location.row == d.end_location.row:
                props += [("col", str(d.location.column)), ("endLine", str(d.end_location.row)),
                          ("endColumn", str(d.end_location.column))]
            else:
                props.append(("endLine", str(d.end_location.row)))
            message = f"{path}:{d.location.row}:{d.location.column}: {d.code} {d.message}"
            note = fix_note(d)
            if note:
                message += f"\n  {note}"
            rendered = ",".join(f"{k}={escape_property(v)}" for k, v in props)
            lines.append(f"::{COMMAND[d.severity]} {rendered}::{escape_data(message)}")
    lines.append(summary(results).replace("\n", " "))
    return "\n".join(lines) + "\n"
