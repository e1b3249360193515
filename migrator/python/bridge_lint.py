"""Lint Megatron-Bridge code: `CheckpointConfig(...)` calls (found by qualified name, any import style or alias,
also nested in `ConfigContainer(checkpoint=CheckpointConfig(...))`) and attribute assignments on a config's
checkpoint (`cfg.checkpoint.save_interval = 100`, the way Bridge recipes are customised, or on a variable bound to a
CheckpointConfig call).

Rules (rules/lint/NM20x-*.yaml): NM201 unknown field (a TypeError in a call; silently ignored in an assignment;
NeMo 2.0 names get their Bridge name), NM202 wrong type / value outside the allowed set, NM203 a value the target
removed (zarr), NM204 a combination finalize()/validate() raise on, NM205 a field the target release lacks.
Assignments are judged only in a module that imports from `megatron.bridge`.

The code is found with Python's `ast` (`migrator.python.bridge_ast`), so linting loads no LibCST; the files
`ast_calls` declines (a `global`/`nonlocal` statement, a lone CR line ending, an identifier Python normalises) go
through LibCST's analysis (`migrator.python.bridge_scan`), the reference both give the same findings as.
"""
from __future__ import annotations

from typing import Any

from migrator.engine.bridge_table import load_bridge_table
from migrator.engine.bridge_verdicts import Verdict, conflicts, default_target, field_verdict, value_verdict
from migrator.engine.diagnostics import Diagnostic, Edit, Fix, Location
from migrator.engine.table import Table
from migrator.errors import MigratorError
from migrator.python.ast_calls import Piece, Unsupported
from migrator.python.bridge_ast import BridgeCall, BridgeCode, find_bridge_code
from migrator.python.lint import guarded, syntax_check, without_bom
from migrator.python.names import NOT_LITERAL
from migrator.versions import BridgeTarget


class BridgeChecker:
    def __init__(self, filename: str, table: Table, target: BridgeTarget | None, shift: int):
        self.bridge = load_bridge_table()
        self.target = target or default_target(self.bridge)
        self.release = str(self.target.bridge)
        self.filename = filename
        self.table = table
        self.shift = shift
        self.findings: list[Diagnostic] = []

    @property
    def classes(self) -> set[str]:
        return set(self.bridge.mapping.class_names)

    def loc(self, position: tuple[int, int]) -> Location:
        line, column = position
        return Location(line, column + 1 + (self.shift if line == 1 else 0))

    def report(self, verdict: Verdict | tuple[str, str], piece: Piece, fix: Fix | None = None) -> None:
        code, message = (verdict.code, verdict.message) if isinstance(verdict, Verdict) else verdict
        rule = self.table.rule_by_code[code]
        self.findings.append(Diagnostic(code=code, name=rule.name, message=message, severity=rule.severity,
                                        filename=self.filename, location=self.loc(piece.start),
                                        end_location=self.loc(piece.end), fix=fix))

    def rename(self, piece: Piece, new: str) -> Fix:
        return Fix("unsafe", f"Rename to {new}", (Edit(new, self.loc(piece.start), self.loc(piece.end)),))

    def replace_value(self, piece: Piece, value: str) -> Fix:
        return Fix("unsafe", f"Use {value}", (Edit(f"{piece.quote}{value}{piece.quote}", self.loc(piece.start),
                                                   self.loc(piece.end)),))

    def run(self, code: BridgeCode) -> list[Diagnostic]:
        assigned_fields: set[str] = set()
        judged = []
        for assignment in code.assignments:
            on_checkpoint = assignment.owner_attribute == "checkpoint"
            on_bound = assignment.owner_name is not None and assignment.owner_name in code.bound
            if on_bound or (on_checkpoint and code.imports_bridge):
                assigned_fields.add(assignment.field.text)
                judged.append(assignment)
        for call in code.calls:
            self.call(call, assigned_fields)
        for assignment in judged:
            self.field(assignment.field, assignment.value, assignment.literal, assignment=True, siblings=set())
        return self.findings

    def call(self, call: BridgeCall, assigned_fields: set[str]) -> None:
        values: dict[str, Any] = {}
        for name, keyword in call.keywords.items():
            if self.field(keyword.name, keyword.value, keyword.literal, assignment=False,
                          siblings=set(call.keywords)):
                values[name] = keyword.literal
        if call.star:
            return  # *args / **kwargs may set anything
        literal_values = {k: v for k, v in values.items() if v is not NOT_LITERAL}
        # a field assigned elsewhere in the file may change before finalize(): only judge what is known
        unknown = assigned_fields | {k for k, v in values.items() if v is NOT_LITERAL}
        known = set(self.bridge.field_names(self.release)) - unknown
        for conflict in conflicts(self.bridge, self.target, literal_values, known):
            self.report(("NM204", f"{conflict.message} (megatron-bridge={self.release})"), call.func)

    def field(self, name: Piece, value: Piece, literal: Any, *, assignment: bool, siblings: set[str]) -> bool:
        """Judge one field name and its literal value; True when the field exists in the target."""
        verdict = field_verdict(self.bridge, self.target, name.text, assignment=assignment)
        if verdict is not None:
            fix = None
            if verdict.suggestion and verdict.suggestion not in siblings:
                fix = self.rename(name, verdict.suggestion)
            self.report(verdict, name, fix)
            return False
        if literal is NOT_LITERAL:
            return True
        verdict = value_verdict(self.bridge, self.target, name.text, literal)
        if verdict is not None:
            fix = None
            if verdict.suggestion and value.simple_string:
                fix = self.replace_value(value, verdict.suggestion)
            self.report(verdict, value, fix)
        return True


@guarded
def check_text(text: str, filename: str, table: Table, options: Any) -> list[Diagnostic]:
    body, shift = without_bom(text)
    tree = syntax_check(body, filename, shift)
    checker = BridgeChecker(filename, table, getattr(options, "bridge_target", None), shift)
    try:
        code = find_bridge_code(tree, body, checker.classes, filename)
    except Unsupported:
        code = _with_libcst(body, filename, checker.classes, shift)
    return checker.run(code)


def _with_libcst(body: str, filename: str, classes: set[str], shift: int) -> BridgeCode:
    import libcst as cst

    from migrator.python.bridge_scan import found_with_libcst

    try:
        module = cst.parse_module(body)
    except cst.ParserSyntaxError as exc:
        raise MigratorError(f"{filename}:{exc.raw_line}:{exc.raw_column + 1 + (exc.raw_line == 1) * shift}: "
                            f"Python syntax error: {exc.message}") from None
    return found_with_libcst(module, classes, filename)
