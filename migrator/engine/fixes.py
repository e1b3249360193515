"""Apply fixes as text-span edits (ruff-style): only the bytes a fix names change; everything else stays."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from migrator.engine.diagnostics import Diagnostic, Edit, Location

MAX_PASSES = 10


def line_offsets(text: str) -> list[int]:
    """Offset (in code points) of the start of each 1-based row; one extra entry past the end."""
    offsets = [0, 0]
    for index, char in enumerate(text):
        if char == "\n":
            offsets.append(index + 1)
    offsets.append(len(text))
    return offsets


def to_offset(offsets: list[int], location: Location) -> int:
    row = min(location.row, len(offsets) - 2)
    return offsets[row] + location.column - 1


def apply_edits(text: str, edits: Iterable[Edit]) -> str:
    offsets = line_offsets(text)
    spans = sorted(((to_offset(offsets, e.location), to_offset(offsets, e.end_location), e.content) for e in edits),
                   reverse=True)
    for start, end, content in spans:
        text = text[:start] + content + text[end:]
    return text


@dataclass
class FixOutcome:
    text: str
    applied: list[Diagnostic]
    remaining: list[Diagnostic]


def fix_text(text: str, lint: Callable[[str], list[Diagnostic]], *, unsafe: bool,
             valid: Callable[[str], bool]) -> FixOutcome:
    """Apply every allowed fix, pass after pass (fixes of one pass never overlap), re-linting in between.
    A pass whose result `valid` rejects (it would not parse) is dropped, and fixing stops there."""
    applied: list[Diagnostic] = []
    diagnostics = lint(text)
    for _ in range(MAX_PASSES):
        chosen, taken = [], []
        offsets = line_offsets(text)
        for d in diagnostics:
            if d.fix is None or (d.fix.applicability == "unsafe" and not unsafe):
                continue
            spans = [(to_offset(offsets, e.location), to_offset(offsets, e.end_location)) for e in d.fix.edits]
            if any(s < te and ts < e or s == e == ts == te for s, e in spans for ts, te in taken):
                continue  # overlaps a fix already chosen in this pass: next pass
            taken.extend(spans)
            chosen.append(d)
        if not chosen:
            break
        candidate = apply_edits(text, [e for d in chosen for e in d.fix.edits])
        if candidate == text or not valid(candidate):
            break
        text = candidate
        applied.extend(chosen)
        diagnostics = lint(text)
    return FixOutcome(text, applied, diagnostics)
