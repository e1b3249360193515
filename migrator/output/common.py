"""What the review-bot renderers share: display paths, UTF-8 byte columns, rule URLs, stable fingerprints."""
from __future__ import annotations

import functools
import hashlib
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from migrator.engine.diagnostics import Diagnostic, FileResult, Location

TOOL = "nemo-migrate"
FALLBACK_HOMEPAGE = "https://github.com/nemo-migrator/nemo-migrator"


def display_path(filename: str, root: Path | None) -> str:
    """`filename` relative to the project root ('/'-separated) when it lies below it, else as given."""
    absolute = Path(filename) if Path(filename).is_absolute() else Path.cwd() / filename
    base = (root or Path.cwd()).absolute()
    try:
        return Path(os.path.normpath(absolute)).relative_to(os.path.normpath(base)).as_posix()
    except ValueError:
        return Path(filename).as_posix()


@functools.lru_cache(maxsize=None)
def project_urls() -> dict[str, str]:
    """[project.urls] from the installed package's metadata (Homepage, Documentation, ...)."""
    from importlib import metadata

    try:
        entries = metadata.metadata("nemo-migrator").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:  # running from a checkout that was never installed
        entries = []
    urls = {}
    for entry in entries:
        label, _, url = entry.partition(",")
        urls[label.strip()] = url.strip()
    return urls


def homepage() -> str:
    return project_urls().get("Homepage", FALLBACK_HOMEPAGE)


def rule_url(code: str) -> str:
    """Each rule's page under the Documentation URL (`docs/rules/NM106.md`, generated from rules/lint)."""
    docs = project_urls().get("Documentation", f"{FALLBACK_HOMEPAGE}/blob/main/docs").rstrip("/")
    return f"{docs}/rules/{code}.md"


def lines_of(result: FileResult) -> list[str]:
    """The linted text split the way rows are counted (by LF; a CR before it stays on the line)."""
    return (result.source or "").split("\n")


def byte_column(lines: list[str], location: Location) -> int:
    """A 1-based code-point column as a 1-based UTF-8 byte column (reviewdog's unit)."""
    if 1 <= location.row <= len(lines):
        line = lines[location.row - 1]
        head = line[:location.column - 1]
        return len(head.encode("utf-8")) + max(0, location.column - 1 - len(line)) + 1
    return location.column


def fix_span(diagnostic: Diagnostic, source: str) -> tuple[Location, Location, str] | None:
    """A fix as one replacement: from its first edit's start to its last edit's end, and the text that span
    becomes (one suggestion per fix, so a reviewer applies the fix whole)."""
    from migrator.engine.fixes import apply_edits, line_offsets, to_offset

    if diagnostic.fix is None or not diagnostic.fix.edits:
        return None
    edits = diagnostic.fix.edits
    start = min(e.location for e in edits)
    end = max(e.end_location for e in edits)
    if len(edits) == 1:
        return start, end, edits[0].content
    offsets = line_offsets(source)
    begin, finish = to_offset(offsets, start), to_offset(offsets, end)
    fixed = apply_edits(source, edits)
    tail = len(source) - finish
    return start, end, fixed[begin:len(fixed) - tail]


def fix_note(diagnostic: Diagnostic) -> str | None:
    if diagnostic.fix is None:
        return None
    if diagnostic.fix.applicability == "safe":
        return f"fix (safe): {diagnostic.fix.message}"
    return f"fix (unsafe: it changes what NeMo does; review it): {diagnostic.fix.message}"


def fingerprints(result: FileResult, path: str) -> Iterator[tuple[Diagnostic, str]]:
    """A stable identity for each finding: its rule, its file and the text of its first line (whitespace
    collapsed), plus an occurrence number among equal keys in the file. The same finding keeps it across runs and
    when other lines move; editing the flagged line makes it a new finding."""
    lines = lines_of(result)
    seen: Counter[str] = Counter()
    for diagnostic in result.diagnostics:
        row = diagnostic.location.row
        text = " ".join(lines[row - 1].split()) if 1 <= row <= len(lines) else ""
        digest = hashlib.sha256("\0".join((diagnostic.code, path, text)).encode("utf-8")).hexdigest()[:16]
        seen[digest] += 1
        yield diagnostic, f"{digest}:{seen[digest]}"


def error_position(result: FileResult) -> Location | None:
    """Where an unreadable file's error points (`path:line:col: YAML syntax error ...`), if it says."""
    import re

    if result.error is None:
        return None
    match = re.match(rf"{re.escape(result.filename)}:(\d+):(\d+): ", result.error)
    return Location(int(match.group(1)), int(match.group(2))) if match else None


UNREADABLE = ("NM002", "unreadable-file")  # a stable code for a file that could not be linted (ruff's E902)


def unreadable_diagnostic(result: FileResult) -> Diagnostic:
    """An unreadable or unparsable file as a finding (error severity, at the position its message names, else 1:1),
    for the formats that carry only findings (json)."""
    at = error_position(result) or Location(1, 1)
    return Diagnostic(code=UNREADABLE[0], name=UNREADABLE[1], message=result.error or "", severity="error",
                      filename=result.filename, location=at, end_location=at)


def failing(diagnostic: Diagnostic, fail_on: str | None) -> bool:
    """Does the finding count as a failure under `--fail-on` (default warning)?"""
    from migrator.engine.diagnostics import SEVERITY_RANK

    return SEVERITY_RANK[diagnostic.severity] >= SEVERITY_RANK[fail_on or "warning"]
