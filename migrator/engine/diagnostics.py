"""The one diagnostic model every checker produces and every renderer reads (ruff-style)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

Severity = Literal["error", "warning", "info"]
Applicability = Literal["safe", "unsafe"]

SEVERITY_RANK: dict[str, int] = {"info": 1, "warning": 2, "error": 3}


@dataclass(frozen=True, order=True)
class Location:
    """1-based row and column; columns count Unicode code points (ruff's convention)."""

    row: int
    column: int


@dataclass(frozen=True)
class Edit:
    """Replace the text from `location` up to `end_location` (exclusive) with `content`."""

    content: str
    location: Location
    end_location: Location


@dataclass(frozen=True)
class Fix:
    applicability: Applicability
    message: str
    edits: tuple[Edit, ...]


@dataclass(frozen=True)
class Diagnostic:
    code: str
    name: str
    message: str
    severity: Severity
    filename: str
    location: Location
    end_location: Location
    fix: Fix | None = None

    def with_severity(self, severity: Severity) -> Diagnostic:
        return replace(self, severity=severity)

    @property
    def sort_key(self) -> tuple:
        return (self.filename, self.location, self.end_location, self.code)


@dataclass
class FileResult:
    """What linting one file produced: findings, or a one-line error (unreadable, unparsable)."""

    filename: str
    diagnostics: list[Diagnostic] = field(default_factory=list)
    error: str | None = None
    source: str | None = None  # the text that was linted (fixers and renderers with context use it)
