"""Suppression comments: `# nemo-migrate: ignore[NM101]` (YAML and Python) and `# noqa: NM101` (Python).

A comment silences a finding that starts on its own line or on the line below it. A comment without codes
silences every finding there. Each comment remembers whether it silenced anything, so a comment that
suppresses nothing can itself be reported. Only real comments count: the language says where its comments start
(Python's tokenizer, YAML's node positions), so `"# noqa: NM108"` inside a string silences nothing.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from migrator.engine.diagnostics import Diagnostic

IGNORE_COMMENT = re.compile(r"#\s*nemo-migrate:\s*ignore(?:\[(?P<codes>[^\]]*)\])?")
NOQA_COMMENT = re.compile(r"#\s*noqa(?::\s*(?P<codes>[A-Za-z0-9_,\s-]+?))?\s*(?:#|$)")
_NEEDS = {IGNORE_COMMENT: "nemo-migrate", NOQA_COMMENT: "noqa"}  # text a match cannot do without (a cheap pre-check)


@dataclass
class Suppression:
    row: int
    column: int  # 1-based column of the '#'
    end_column: int
    codes: frozenset[str] | None  # None = every code
    used: set[str] = field(default_factory=set)
    kind: str = "ignore"  # "ignore" (`# nemo-migrate: ignore[...]`) or "noqa" (`# noqa: ...`, shared with other tools)
    code_list: tuple[str, ...] = ()  # the codes in the order written
    codes_span: tuple[int, int] | None = None  # 1-based columns of the code list (end exclusive)

    def covers(self, code: str, name: str, blanket: bool = True) -> bool:
        if self.codes is None:
            return blanket
        return code in self.codes or name in self.codes


def rows(text: str) -> list[str]:
    """The file's rows as findings number them: split at LF (a CRLF's CR dropped). A form feed or another character
    `str.splitlines()` also breaks at stays inside its row, as Python's tokenizer and the fix applier count."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


# (text, filename, rows holding a candidate) -> {row: 1-based column where that row's comment starts}; None: cannot tell
CommentStarts = Callable[[str, str, set[int]], "dict[int, int] | None"]


class Suppressions:
    def __init__(self, items: list[Suppression], lines: list[str] | None = None):
        self.items = items
        self.lines = lines or []
        self._by_row: dict[int, list[Suppression]] = {}
        for item in items:
            self._by_row.setdefault(item.row, []).append(item)

    @classmethod
    def scan(cls, text: str, patterns: tuple[re.Pattern[str], ...] = (IGNORE_COMMENT,),
             comment_starts: CommentStarts | None = None, filename: str = "") -> Suppressions:
        lines = rows(text)
        items = []
        patterns = tuple(p for p in patterns if _NEEDS.get(p, "") in text)
        for row, line in enumerate(lines if patterns else (), start=1):
            if "#" not in line:
                continue
            for pattern in patterns:
                for match in pattern.finditer(line):
                    codes = match.group("codes")
                    listed = tuple(c.strip() for c in codes.split(",") if c.strip()) if codes else ()
                    parsed = frozenset(listed) if codes else None
                    span = (match.start("codes") + 1, match.end("codes") + 1) if codes else None
                    kind = "noqa" if pattern is NOQA_COMMENT else "ignore"
                    items.append(Suppression(row, match.start() + 1, match.end() + 1, parsed, kind=kind,
                                             code_list=listed, codes_span=span))
        if items and comment_starts is not None:
            starts = comment_starts(text, filename, {item.row for item in items})
            if starts is not None:  # keep what lies inside a comment (`# type: ignore  # noqa: NM108` too)
                items = [item for item in items if item.row in starts and item.column >= starts[item.row]]
        return cls(items, lines)

    def filter(self, diagnostics: list[Diagnostic], blanket: bool = True) -> list[Diagnostic]:
        """The findings no comment silences (and mark the comments that silenced something); `blanket=False`:
        only comments that name the code count."""
        kept = []
        for diagnostic in diagnostics:
            row = diagnostic.location.row
            hit = next((s for r in (row, row - 1) for s in self._by_row.get(r, ())
                        if s.covers(diagnostic.code, diagnostic.name, blanket)), None)
            if hit is None:
                kept.append(diagnostic)
            else:
                hit.used.add(diagnostic.code)
        return kept
