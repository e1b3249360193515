"""Lint files: discover them, dispatch by language, apply suppressions and the rule selection, fix."""
from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from migrator.engine.diagnostics import Diagnostic, FileResult
from migrator.engine.selection import Selection
from migrator.engine.suppression import IGNORE_COMMENT, NOQA_COMMENT, Suppressions
from migrator.engine.table import Table
from migrator.engine.unused_suppression import can_matter, unused_suppressions
from migrator.errors import MigratorError
from migrator.versions import BridgeTarget, Source, Target


@dataclass
class LintOptions:
    target: Target
    source: Source = field(default_factory=Source)
    selection: Selection = field(default_factory=Selection)
    config_path: Path | None = None  # the NeMo 1.0 YAML a Python file was migrated from (consistency rules)
    bridge_target: BridgeTarget | None = None  # Megatron-Bridge code and YAML (NM2xx); None: the newest release
    # from the project configuration (migrator.engine.project), applied per file by `for_file`
    per_file_ignores: tuple[tuple[str, tuple[str, ...]], ...] = ()
    pairs: tuple[tuple[str, str], ...] = ()  # (YAML config, Python script), relative to `root`
    root: Path | None = None

    def for_file(self, path: str) -> LintOptions:
        """The options for one file: its per-file ignores, and for a script the project pairs with a config, that
        config as `config_path` (so the consistency rules run)."""
        if not self.per_file_ignores and not self.pairs:
            return self
        from migrator.engine.project import file_options

        return file_options(self, path)


@dataclass(frozen=True)
class Language:
    """How one kind of file is checked. `check` and `parses` are "module:function" so that a language's
    dependencies (libcst for Python) load only when a file of that kind is linted."""

    name: str
    suffixes: tuple[str, ...]
    check: str  # (text, filename, table, options) -> list[Diagnostic]; raises MigratorError if unparsable
    parses: str  # (text, filename) -> bool: does a fixed text still parse (and compile)?
    suppressions: tuple[re.Pattern[str], ...]
    comments: str  # (text, filename, rows) -> {row: column where its comment starts} (migrator.engine.suppression)

    def function(self, which: str) -> Callable:
        module, name = getattr(self, which).split(":")
        return getattr(importlib.import_module(module), name)


LANGUAGES: list[Language] = [
    Language("yaml", (".yaml", ".yml"), "migrator.yaml.lint:check_text", "migrator.yaml.lint:parses",
             (IGNORE_COMMENT,), "migrator.yaml.lint:comment_starts"),
    Language("python", (".py",), "migrator.python.check:check_text", "migrator.python.lint:parses",
             (IGNORE_COMMENT, NOQA_COMMENT), "migrator.python.lint:comment_starts"),
]


def language_for(path: str) -> Language:
    for language in LANGUAGES:
        if path.endswith(language.suffixes):
            return language
    return LANGUAGES[0]  # an explicitly named file of another suffix is read as YAML


def all_suffixes() -> tuple[str, ...]:
    return tuple(s for language in LANGUAGES for s in language.suffixes)


def discover(paths: Iterable[str], suffixes: tuple[str, ...], excluded: Callable[[str], bool] | None = None,
             force_exclude: bool = False) -> Iterator[tuple[str, str | None]]:
    """Yield (path, None) for each file to lint, or (path, error) for a path that cannot be linted. A folder is walked
    as ruff walks (`migrator.engine.walk`: .gitignore, hidden folders, virtual environments); files found there are
    skipped when `excluded` says so, paths named explicitly only with `force_exclude`."""
    for raw in paths:
        path = Path(raw)
        if force_exclude and excluded is not None and excluded(raw):
            continue
        if path.is_dir():
            from migrator.engine.walk import walk

            found = walk(raw, suffixes)
            for child in found:
                if excluded is None or not excluded(child):
                    yield child, None
            if not found:
                yield raw, f"{raw}: directory holds no {'/'.join(suffixes)} file"
        elif path.exists():
            yield raw, None
        else:
            yield raw, f"{raw}: no such file or directory"


def read_text(path: Path, display: str) -> str:
    """Read a file as UTF-8 text; a binary or non-UTF-8 file, or anything but a regular file (a link to /dev/zero, a
    FIFO), is a one-line error. A BOM is kept in the text."""
    from migrator.inputs import read_regular

    data = read_regular(path, display)
    if b"\0" in data[:8192]:
        raise MigratorError(f"{display}: binary file, not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MigratorError(f"{display}: not UTF-8 (byte {exc.start}: {data[exc.start]:#04x})") from None


def check_text(text: str, filename: str, table: Table, options: LintOptions,
               language: Language | None = None) -> tuple[list[Diagnostic], Suppressions]:
    """Findings for one text after selection and suppression comments (raises MigratorError if unparsable)."""
    language = language or language_for(filename)
    diagnostics = language.function("check")(text, filename, table, options)
    enabled = [d for d in diagnostics if options.selection.enabled(d.code, d.name)]
    suppressions = Suppressions.scan(text, language.suppressions, language.function("comments"), filename,
                                     relevant=can_matter(table, enabled))
    kept = suppressions.filter(enabled)
    kept += unused_suppressions(suppressions, text, filename, table, options.selection, language.name)  # NM001
    return sorted(kept, key=lambda d: d.sort_key), suppressions


def lint_file(path: str, table: Table, options: LintOptions) -> FileResult:
    options = options.for_file(path)
    result = FileResult(filename=path)
    try:
        text = read_text(Path(path), path)
        result.diagnostics, _ = check_text(text, path, table, options)
    except MigratorError as exc:
        result.error = str(exc)
        return result
    result.source = text
    return result


def lint_paths(paths: Iterable[str], table: Table, options: LintOptions,
               excluded: Callable[[str], bool] | None = None, force_exclude: bool = False) -> list[FileResult]:
    results = []
    for path, error in discover(paths, all_suffixes(), excluded, force_exclude):
        results.append(FileResult(filename=path, error=error) if error else lint_file(path, table, options))
    return results


@dataclass
class FixedFile:
    result: FileResult  # the findings that remain after fixing
    original: str
    fixed: str
    applied: list[Diagnostic]


def fix_file(result: FileResult, table: Table, options: LintOptions, *, unsafe: bool) -> FixedFile:
    """Fix one linted file in memory (the caller writes or diffs)."""
    from migrator.engine.fixes import fix_text

    options = options.for_file(result.filename)
    language = language_for(result.filename)
    parses = language.function("parses")
    outcome = fix_text(
        result.source or "",
        lambda text: check_text(text, result.filename, table, options, language)[0],
        unsafe=unsafe,
        valid=lambda text: parses(text, result.filename),
    )
    remaining = FileResult(filename=result.filename, diagnostics=outcome.remaining, source=outcome.text)
    return FixedFile(remaining, result.source or "", outcome.text, outcome.applied)
