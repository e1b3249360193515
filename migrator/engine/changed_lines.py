"""`--diff-only BASE` and `--changed-lines-from DIFF`: keep the findings a pull request's change touches.

A finding is kept when its range touches a line the diff adds (or changes) in the new version of its file, so a
review bot comments only where a suggestion can be applied. Files the diff does not touch keep no finding; files
that could not be linted keep their error.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from migrator.engine.diagnostics import Diagnostic, FileResult
from migrator.errors import MigratorError

HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
ALL_LINES = None  # a file the change adds whole (an untracked file)


def parse_unified_diff(text: str) -> dict[str, set[int] | None]:
    """New-file path (as written after `+++ `, a leading `b/` dropped) -> the 1-based rows the diff adds there.
    Hunk bodies are read by their line counts, so an added line that starts with `++` is not taken for a header."""
    changed: dict[str, set[int] | None] = {}
    current: set[int] | None = None
    old_left = new_left = row = 0
    for line in text.splitlines():
        if old_left > 0 or new_left > 0:
            tag = line[:1]
            if tag == "+":
                if current is not None:
                    current.add(row)
                row += 1
                new_left -= 1
            elif tag == "-":
                old_left -= 1
            elif tag != "\\":  # context (a blank context line may have lost its leading space)
                row += 1
                old_left -= 1
                new_left -= 1
            continue
        if line.startswith("+++ "):
            name = _diff_path(line[4:])
            current = None if name is None else changed.setdefault(name, set())
            continue
        match = HUNK.match(line)
        if match:
            old_left = int(match.group(1)) if match.group(1) is not None else 1
            row = int(match.group(2))
            new_left = int(match.group(3)) if match.group(3) is not None else 1
    return changed


def _diff_path(raw: str) -> str | None:
    raw = raw.split("\t")[0].rstrip("\n")
    if raw.startswith('"') and raw.endswith('"'):
        raw = _unquote(raw[1:-1])
    if raw == "/dev/null":
        return None
    if raw.startswith(("b/", "a/")):
        raw = raw[2:]
    return raw


def _unquote(text: str) -> str:
    """git's C-style quoting of unusual file names (octal escapes are UTF-8 bytes)."""
    out = bytearray()
    i = 0
    simple = {"n": b"\n", "t": b"\t", '"': b'"', "\\": b"\\", "a": b"\a", "b": b"\b", "f": b"\f", "r": b"\r", "v": b"\v"}
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in simple:
                out += simple[nxt]
                i += 2
                continue
            if re.match(r"[0-7]{3}", text[i + 1:i + 4]):
                out.append(int(text[i + 1:i + 4], 8))
                i += 4
                continue
        out += char.encode("utf-8")
        i += 1
    return out.decode("utf-8", errors="replace")


def _git(*args: str, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, encoding="utf-8",
                              errors="replace")
    except FileNotFoundError:
        raise MigratorError("--diff-only: git is not installed (or not on PATH)") from None
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        raise MigratorError(f"--diff-only: git {' '.join(args[:2])}: {detail}")
    return proc.stdout


def git_toplevel(cwd: Path | None = None) -> Path | None:
    try:
        return Path(_git("rev-parse", "--show-toplevel", cwd=cwd).strip())
    except MigratorError:  # not a repository, or no git
        return None


def changed_lines_from_git(base: str) -> tuple[dict[str, set[int] | None], Path]:
    """What the change since BASE adds: `git diff $(git merge-base BASE HEAD)` against the working tree (plus
    untracked files, wholly new), paths relative to the top. Diffing from the merge base, as a pull request does,
    keeps what BASE gained after the branch left it out of the change; where HEAD is GitHub's merge commit of a
    pull request, the merge base is BASE itself."""
    top = git_toplevel()
    if top is None:
        raise MigratorError("--diff-only: not inside a git repository")
    try:
        _git("rev-parse", "--verify", "--quiet", f"{base}^{{commit}}", cwd=top)
    except MigratorError:
        raise MigratorError(f"--diff-only: {base!r} is not a commit in {top} (fetch it first in a shallow CI clone)")\
            from None
    try:
        start = _git("merge-base", base, "HEAD", cwd=top).strip()
    except MigratorError:
        raise MigratorError(f"--diff-only: {base!r} and HEAD have no common ancestor in {top} (a shallow clone? "
                            "fetch with fetch-depth: 0)") from None
    diff = _git("-c", "core.quotePath=false", "diff", "--no-color", "--no-ext-diff", "--find-renames", "-U0",
                start, "--", cwd=top)
    changed = parse_unified_diff(diff)
    for name in _git("-c", "core.quotePath=false", "ls-files", "--others", "--exclude-standard", "-z",
                     cwd=top).split("\0"):
        if name:
            changed[name] = ALL_LINES
    return changed, top


def changed_lines_from_file(source: str) -> tuple[dict[str, set[int] | None], Path]:
    """A unified diff from a file or `-` (stdin); its paths are relative to the git top level when the current
    directory is in a repository (what `git diff` writes), else to the current directory."""
    import sys

    from migrator.inputs import MAX_TEXT_BYTES, read_regular

    if source == "-":
        text = sys.stdin.read(MAX_TEXT_BYTES + 1)
        if len(text) > MAX_TEXT_BYTES:
            raise MigratorError(f"--changed-lines-from: stdin: more than {MAX_TEXT_BYTES:,} characters")
    else:
        text = read_regular(source, f"--changed-lines-from: {source}").decode("utf-8", errors="replace")
    if not is_unified_diff(text):
        raise MigratorError(f"--changed-lines-from: {'stdin' if source == '-' else source}: not a unified diff (no "
                            "`+++ ` or `diff --git` line); an empty file means no change")
    return parse_unified_diff(text), git_toplevel() or Path.cwd()


def is_unified_diff(text: str) -> bool:
    """An empty text (no change) or one with a file header; anything else given as a diff is a mistake (a
    findings report, the wrong file) that would silently drop every finding."""
    if not text.strip():
        return True
    return any(line.startswith(("+++ ", "diff --git ")) for line in text.splitlines())


def keep_changed(results: list[FileResult], changed: dict[str, set[int] | None], base: Path) -> list[FileResult]:
    """The results with only the findings whose range touches a changed line."""
    by_path = {os.path.normpath(base / name): rows for name, rows in changed.items()}
    kept = []
    for result in results:
        if result.error is not None:
            kept.append(result)
            continue
        absolute = os.path.normpath(Path.cwd() / result.filename)
        if absolute not in by_path:
            rows: set[int] | None = set()
        else:
            rows = by_path[absolute]
        diagnostics = [d for d in result.diagnostics if touches(d, rows)]
        kept.append(FileResult(result.filename, diagnostics, result.error, result.source))
    return kept


def touches(diagnostic: Diagnostic, rows: set[int] | None) -> bool:
    if rows is ALL_LINES:
        return True
    first = diagnostic.location.row
    last = diagnostic.end_location.row
    if last > first and diagnostic.end_location.column == 1:
        last -= 1  # the end is exclusive: a range ending at column 1 does not reach into that line
    return any(row in rows for row in range(first, last + 1))
