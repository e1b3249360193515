"""The Python lint rules: `MegatronStrategy(...)` keyword arguments judged against the rule table and the target.

Entry points for the lint engine (`migrator.engine.runner.LANGUAGES`): `check_text` and `parses`. A file whose
bytes never name the class cannot hold a strategy call and is not parsed at all; the others are parsed with Python's
`ast` (`migrator.python.ast_calls`). LibCST is loaded only where a file is fixed (`parses` re-checks the result),
for `--config` (NM120 shares `--patch`'s plan, which works on LibCST nodes) and for the rare file `ast_calls`
declines; both paths report the same findings at the same positions.

Each rule is a method of `_Checker` named after its rule's slug; the facts come from `rules/strategy.yaml` and
`rules/settings.yaml`, the documentation and examples from `rules/lint/NMxxx-*.yaml`. Only literal values are judged
(`True`, `2`, `"zarr"`, `StrictHandling.LOG_ALL`); a variable or expression is left alone.
"""
from __future__ import annotations

import ast
import functools
import io
import os
import tokenize
from collections.abc import Callable
from pathlib import Path
from typing import Any

from migrator.engine.diagnostics import Diagnostic, Edit, Fix, Location
from migrator.engine.table import Argument, Table
from migrator.engine.verdicts import closest, closest_allowed, coerce_literal, lifecycle_stage, note_applies, with_article
from migrator.engine.yaml11 import type_name
from migrator.errors import MigratorError
from migrator.migrate.mapping import Mapping, config_mapping, py
from migrator.python.names import NOT_LITERAL, same_value
from migrator.versions import Target, Version

BOM = "\ufeff"
MARKER = "MegatronStrategy"  # a file that never names the class has nothing to check


def parses(text: str, filename: str) -> bool:
    """Does a (fixed) text still parse with LibCST and compile with CPython?"""
    import libcst as cst

    text = text.removeprefix(BOM)
    try:
        cst.parse_module(text)
        compile(text, filename, "exec", dont_inherit=True)
    except (cst.ParserSyntaxError, SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def syntax_check(text: str | bytes, filename: str, shift: int = 0) -> ast.Module:
    """CPython's own parser judges the syntax first: it is fast, and LibCST spends time growing with the square of
    an expression's length on code that does not parse (minutes for a 20,000-term sum) or is nested deeper than
    CPython compiles (RecursionError, reported by the caller)."""
    try:
        return ast.parse(text, filename)
    except SyntaxError as exc:
        raise MigratorError(f"{filename}:{exc.lineno or 1}:{(exc.offset or 0) + (exc.lineno == 1) * shift}: "
                            f"Python syntax error: {exc.msg}") from None
    except ValueError as exc:  # a NUL byte
        raise MigratorError(f"{filename}: Python syntax error: {exc}") from None


def too_deep(filename: str) -> MigratorError:
    return MigratorError(f"{filename}: Python code nested too deeply to analyse (CPython's own compiler refuses it "
                         "too); not checked")


def guarded(check: Callable[[str, str, Table, Any], list[Diagnostic]]):
    """A language check whose code is nested deeper than CPython's own compiler takes (RecursionError,
    MemoryError) reports that as one line naming the file."""
    @functools.wraps(check)
    def run(text: str, filename: str, table: Table, options: Any) -> list[Diagnostic]:
        try:
            return check(text, filename, table, options)
        except (RecursionError, MemoryError):
            raise too_deep(filename) from None

    return run


def without_bom(text: str) -> tuple[str, int]:
    """The text without its BOM, and how far that moves row 1's columns (LibCST drops a BOM)."""
    return text.removeprefix(BOM), 1 if text.startswith(BOM) else 0


@guarded
def check_text(text: str, filename: str, table: Table, options: Any) -> list[Diagnostic]:
    text, shift = without_bom(text)
    if MARKER not in text:
        return []  # no strategy call can be written without the class's name: nothing to parse
    tree = syntax_check(text, filename, shift)
    mapping = None
    if getattr(options, "config_path", None) is not None:
        mapping = config_mapping(str(options.config_path), table, options.target, options.source)
    else:
        from migrator.python import ast_calls

        try:
            calls = ast_calls.find_calls(tree, text, table, filename)
        except ast_calls.Unsupported:
            pass  # LibCST decides
        else:
            return _AstChecker(text, filename, table, options.target, None, shift).run(calls)
    return _cst_check(text, filename, table, options.target, mapping, shift)


def _cst_check(text: str, filename: str, table: Table, target: Target, mapping: Mapping | None,
               shift: int) -> list[Diagnostic]:
    import libcst as cst
    from libcst.metadata import MetadataWrapper

    from migrator.python.calls import find_calls

    try:
        module = cst.parse_module(text)
    except cst.ParserSyntaxError as exc:
        raise MigratorError(f"{filename}:{exc.raw_line}:{exc.raw_column + 1 + (exc.raw_line == 1) * shift}: "
                            f"Python syntax error: {exc.message}") from None
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)  # a freshly parsed tree: no shared nodes
    checker = _CstChecker(wrapper, text, filename, table, target, mapping, shift)
    return checker.run(find_calls(wrapper, table, filename))


def comment_starts(text: str, filename: str, wanted: set[int]) -> dict[int, int] | None:
    """Where each wanted row's comment starts, from Python's own tokenizer (so `#` in a string is no comment)."""
    shift = 1 if text.startswith(BOM) else 0
    starts: dict[int, int] = {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(text.removeprefix(BOM)).readline):
            if token.type == tokenize.COMMENT and token.start[0] in wanted:
                row, column = token.start
                starts[row] = column + 1 + (shift if row == 1 else 0)
    except (tokenize.TokenError, SyntaxError, RecursionError):
        return None
    return starts


class _Checker:
    """The rules, on the calls either finder returns (`calls.StrategyCall` with LibCST nodes, or
    `ast_calls.AstCall` with spans); subclasses say where a node is and what text it has."""

    def __init__(self, text: str, filename: str, table: Table, target: Target, mapping: Mapping | None,
                 shift: int):
        self.text = text
        self.lines = text.split("\n")  # rows as LibCST counts them (a form feed stays in its row), CRs kept
        self.filename = filename
        self.table = table
        self.target = target
        self.mapping = mapping
        self.shift = shift
        self.findings: list[Diagnostic] = []
        self.arguments = table.argument_by_name
        self.removed = {r.name: r for r in table.strategy.removed_arguments}
        self.wrong = {w.name: w for w in table.strategy.wrong_names}

    # --------------------------------------------------------------------------------------------- plumbing
    def run(self, calls) -> list[Diagnostic]:
        for call in calls:
            for name, arg in call.keywords.items():
                self.keyword(call, name, arg)
            self.conflicting_arguments(call)
            if self.mapping is not None:
                self.config_mismatch(call)
        return self.findings

    def loc(self, line: int, column: int) -> Location:
        """A 1-based row and 0-based code-point column as a Location (a BOM moves row 1 by one)."""
        return Location(line, column + 1 + (self.shift if line == 1 else 0))

    def span(self, node) -> tuple[Location, Location]:
        raise NotImplementedError

    def code(self, node) -> str:
        raise NotImplementedError

    def is_simple_string(self, node) -> bool:
        raise NotImplementedError

    def quote(self, node) -> str:
        raise NotImplementedError

    def report(self, code: str, node, message: str, *, fix: Fix | None = None,
               severity: str | None = None) -> None:
        rule = self.table.rule_by_code[code]
        start, end = self.span(node)
        self.findings.append(Diagnostic(code=code, name=rule.name, message=message, severity=severity or rule.severity,
                                        filename=self.filename, location=start, end_location=end, fix=fix))

    def replace(self, node, text: str, applicability: str, message: str) -> Fix:
        start, end = self.span(node)
        return Fix(applicability, message, (Edit(text, start, end),))

    def target_note(self) -> str:
        return f"target {self.target.describe()}"

    # --------------------------------------------------------------------------------------------- per keyword
    def keyword(self, call, name: str, arg) -> None:
        argument = self.arguments.get(name)
        if argument is not None:
            if not self.unavailable_in_target(argument, arg):
                return
            value = call.values[name]
            if value is NOT_LITERAL:
                return
            if self.invalid_type(argument, arg, value) and self.invalid_value(argument, arg, value):
                self.value_lifecycle(argument, arg, value)
                self.argument_notes(argument, arg, value)
            return
        if name in self.removed:
            self.removed_argument(call, name, arg)
        elif name in self.wrong or self.looks_like_checkpoint_argument(name):
            self.unknown_setting(call, name, arg)

    def unavailable_in_target(self, argument: Argument, arg) -> bool:
        """NM109. An error in Python: MegatronStrategy's **kwargs swallows the keyword without a word."""
        since = Version.parse(argument.since)
        if self.target.nemo >= since:
            return True
        self.report("NM109", arg.keyword,
                    f"{argument.name}: MegatronStrategy has no {argument.name} before NeMo {argument.since} "
                    f"({self.target_note()}); **kwargs swallows it, so it silently does nothing there",
                    severity="error")
        return False

    def invalid_type(self, argument: Argument, arg, value: Any) -> bool:
        """NM101"""
        if value is None:
            if argument.nullable:
                return True
            self.report("NM101", arg.value, f"{argument.name}=None where NeMo expects {with_article(argument.type)}; "
                        "None behaves as False")
            return False
        kind = type_name(value)
        if kind == argument.type or kind in argument.other_types:
            return True
        why = " (a non-empty string is truthy: NeMo behaves as if it were True)" if (
            argument.type == "bool" and kind == "str" and value) else ""
        replacement = coerce_literal(value, argument.type)
        fix = None
        if replacement is not None:
            fix = self.replace(arg.value, replacement, "unsafe", f"Write `{replacement}`")
        self.report("NM101", arg.value, f"{argument.name} must be {with_article(argument.type)}, got {kind} "
                    f"{self.code(arg.value)}{why}", fix=fix)
        return False

    def invalid_value(self, argument: Argument, arg, value: Any) -> bool:
        """NM102"""
        if value is None:
            return True
        if argument.minimum is not None and isinstance(value, int) and value < argument.minimum:
            self.report("NM102", arg.value, f"{argument.name} must be at least {argument.minimum}, got {value}")
            return False
        if argument.allowed is None or value in argument.allowed or type_name(value) != argument.type:
            return True
        allowed = [str(a) for a in argument.allowed]
        close = closest_allowed(value, argument.allowed)
        hint = f"; did you mean {close!r}?" if close else ""
        fix = None
        if close and self.is_simple_string(arg.value):
            fix = self.replace(arg.value, _string(close, self.quote(arg.value)), "unsafe", f"Use {close!r}")
        self.report("NM102", arg.value, f"{argument.name}={self.code(arg.value)} is not one of "
                    f"{', '.join(allowed)}{hint}", fix=fix)
        return False

    def value_lifecycle(self, argument: Argument, arg, value: Any) -> None:
        """NM106 removed-value / NM107 deprecated-value, with the lifecycle the YAML setting records."""
        setting = self.table.setting_for_argument(argument.name)
        lifecycle = setting.values.get(str(value)) if setting is not None and isinstance(value, str) else None
        if lifecycle is None:
            return
        verdict = lifecycle_stage(lifecycle, self.target)
        if verdict is None:
            return
        code, stage = verdict
        message = f"{argument.name}={py(value)} — {stage.message} ({self.target_note()})"
        fix = None
        if lifecycle.replacement:
            message += f"; use {py(lifecycle.replacement)}"
            if self.is_simple_string(arg.value):
                fix = self.replace(arg.value, _string(lifecycle.replacement, self.quote(arg.value)), "unsafe",
                                   f"Use {lifecycle.replacement!r}")
        if lifecycle.convert_hint:
            message += f"; {lifecycle.convert_hint}"
        self.report(code, arg.value, message, fix=fix)

    def argument_notes(self, argument: Argument, arg, value: Any) -> None:
        """NM114: only where the value is written. The default (ckpt_parallel_save_optim=True) applies to every
        call, and whether the distributed optimizer is in use is decided elsewhere (the optimizer config), so a note
        on every call that leaves it out would be noise."""
        for note in self.table.strategy.notes:
            if note.argument != argument.name or not same_value(value, note.value):
                continue
            if not note_applies(note, self.target):
                continue
            self.report("NM114", arg.keyword, f"{argument.name}={py(value)}: {note.message} ({self.target_note()})")

    def removed_argument(self, call, name: str, arg) -> None:
        """NM108: `ckpt_include_optimizer`, replaced by ckpt_save_optimizer/ckpt_load_optimizer before NeMo 2.0.0."""
        removed = self.removed[name]
        value = call.values[name]
        shown = self.code(arg.value)
        fix = None
        if removed.replaced_by and not set(removed.replaced_by) & set(call.keywords):
            start, _ = self.span(arg.keyword)
            _, end = self.span(arg.value)
            line = self.lines[start.row - 1]
            before = line[: start.column - 1 - (self.shift if start.row == 1 else 0)]
            newline = "\r\n" if line.endswith("\r") else "\n"
            joiner = f",{newline}{before}" if not before.strip() else ", "
            text = joiner.join(f"{r}={shown}" for r in removed.replaced_by)
            safe = value is True  # both replacements default to True: nothing changes
            fix = Fix("safe" if safe else "unsafe", f"Replace with {', '.join(removed.replaced_by)}",
                      (Edit(text, start, end),))
        instead = ("pass " + " and ".join(f"{r}={shown}" for r in removed.replaced_by) + " instead"
                   if removed.replaced_by else "delete it (it has no replacement)")
        self.report("NM108", arg.keyword,
                    f"{name} was removed before NeMo {removed.removed} ({removed.why}); {instead}", fix=fix)

    def looks_like_checkpoint_argument(self, name: str) -> bool:
        return "ckpt" in name or bool(closest(name, list(self.arguments)))

    def unknown_setting(self, call, name: str, arg) -> None:
        """NM103: an unknown ckpt_* keyword, which **kwargs swallows (torch DDP raises TypeError with ddp="pytorch")."""
        wrong = self.wrong.get(name)
        matches = [wrong.use] if wrong else closest(name, list(self.arguments))
        message = f"{name} is not a MegatronStrategy argument: **kwargs swallows it, so it does nothing"
        if wrong:
            message += f" ({wrong.why})"
        fix = None
        if len(matches) == 1:
            message += f"; did you mean {matches[0]}?"
            if matches[0] not in call.keywords:
                fix = self.replace(arg.keyword, matches[0], "unsafe", f"Rename to {matches[0]}")
        elif matches:
            message += f"; did you mean one of {', '.join(matches)}?"
        self.report("NM103", arg.keyword, message, fix=fix)

    # --------------------------------------------------------------------------------------------- per call
    def conflicting_arguments(self, call) -> None:
        """NM115: combinations MegatronStrategy rejects; an absent argument counts with its default."""
        for conflict in self.table.strategy.conflicts:
            implicit = []
            for name, wanted in conflict.when.items():
                if name in call.keywords:
                    value = call.values[name]
                elif call.double_star is not None:
                    value = NOT_LITERAL  # **kwargs may set it
                else:
                    value = self.arguments[name].default
                    implicit.append(f"{name} defaults to {py(value)}")
                if value is NOT_LITERAL or not same_value(value, wanted):
                    break
            else:
                written = [n for n in conflict.when if n in call.keywords]
                if not written or call.expects_error:
                    continue  # a test that checks NeMo raises (`with pytest.raises(ValueError):`) is no finding
                anchor = call.keywords[written[-1]].keyword
                note = f" ({', '.join(implicit)})" if implicit else ""
                self.report("NM115", anchor, f"{conflict.message}{note}")

    def config_mismatch(self, call) -> None:
        """NM120: a keyword that disagrees with the YAML it was migrated from (`lint --config OLD.yaml`); the same
        plan `migrate-config --patch` would carry out."""
        from migrator.python.patch import plan_call

        mapping = self.mapping
        plan = plan_call(call, mapping, self.table, 0, 0)
        anchor = call.node.func if call.wrapper is None else call.node.args[0].value
        config = Path(mapping.filename).name
        missing = []
        for change in plan.changes:
            wanted = mapping.argument(change.argument)
            source = (f"{wanted.yaml_path}: {_yaml(wanted.value)}" if wanted.origin == "yaml" else
                      f"{wanted.yaml_path} not set, NeMo 1.0 default {_yaml(wanted.value)}")
            if change.kind == "add":
                default = self.arguments[change.argument].default
                if call.double_star is None and not same_value(default, change.value):
                    missing.append(f"{change.argument}={py(change.value)} ({source}; NeMo 2.0 default {py(default)})")
                continue
            if change.old_keyword is None:
                continue  # a non-literal value: not judged
            arg = call.keywords[change.old_keyword]
            if same_value(change.old_value, change.value):
                continue  # a rename only: NM103 reports the wrong name
            new = _string(change.value, self.quote(arg.value)) if isinstance(change.value, str) else py(change.value)
            inverted = " (NeMo's migration page shows this value inverted)" if (
                wanted.setting == "dist_ckpt_parallel_dist_opt") else ""
            self.report("NM120", arg.value,
                        f"{change.old_keyword}={self.code(arg.value)} disagrees with {source} in {config}; the "
                        f"migrated value is {change.argument}={py(change.value)}{inverted}",
                        fix=self.replace(arg.value, new, "unsafe", f"Use {new}"))
        if missing:
            self.report("NM120", anchor,
                        f"{len(missing)} keyword{'s' * (len(missing) != 1)} left out, so NeMo 2.0's default applies "
                        f"where {config} says otherwise: {', '.join(missing)}; `migrate-config "
                        f"{_shown(mapping.filename)} --patch {_shown(self.filename)}` adds "
                        f"{'them' if len(missing) > 1 else 'it'}")


class _AstChecker(_Checker):
    """Spans from `ast_calls` (no LibCST)."""

    def span(self, node) -> tuple[Location, Location]:
        return self.loc(*node.start), self.loc(*node.end)

    def code(self, node) -> str:
        return node.text.strip()

    def is_simple_string(self, node) -> bool:
        return node.simple_string

    def quote(self, node) -> str:
        return node.quote


class _CstChecker(_Checker):
    """LibCST nodes and their positions (computed only for a file with a finding)."""

    def __init__(self, wrapper, *args):
        super().__init__(*args)
        self.wrapper = wrapper
        self.module = wrapper.module

    @functools.cached_property
    def positions(self):
        from libcst.metadata import PositionProvider

        return self.wrapper.resolve(PositionProvider)

    def span(self, node) -> tuple[Location, Location]:
        where = self.positions[node]
        return (self.loc(where.start.line, where.start.column), self.loc(where.end.line, where.end.column))

    def code(self, node) -> str:
        return self.module.code_for_node(node).strip()

    def is_simple_string(self, node) -> bool:
        import libcst as cst

        return isinstance(node, cst.SimpleString)

    def quote(self, node) -> str:
        from migrator.python.calls import quote_of

        return quote_of(node)


def _shown(path: str) -> str:
    """A path as a user would type it from here: relative to the current folder when it is below it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # pragma: no cover - another drive on Windows
        return path
    return path if relative.startswith("..") else relative


def _string(value: str, quote: str) -> str:
    return quote + value.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)
