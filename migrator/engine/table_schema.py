"""pydantic validation of the rule table, over the dataclasses of `migrator.engine.table`.

Kept out of the lint path (pydantic costs ~0.25 s to import and build): `load_table` runs it once per table
version, the test suite runs it on every change, and `nemo-migrate schema` derives JSON Schemas from it.
"""
from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter, ValidationError

from migrator.engine import table as t
from migrator.errors import MigratorError
from migrator.versions import Version


def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)  # strictness comes from table.Record.__pydantic_config__


def validate(raw: dict[str, Any]) -> t.Table:
    """Validate every file of the table (types, required fields, Literals) plus the cross-file invariants."""
    # JSON mode: strict validation still accepts mappings for dataclasses (python mode would want instances)
    def check(cls: type, data: Any) -> Any:
        return _adapter(cls).validate_json(json.dumps(data))

    try:
        table = t.Table(
            releases=check(t.ReleaseTable, raw["releases"]),
            settings=check(t.SettingTable, raw["settings"]),
            strategy=check(t.StrategyTable, raw["strategy"]),
            lint_rules=[check(t.LintRule, rule) for rule in raw["lint_rules"]],
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MigratorError(f"rules: invalid table at {where}: {first['msg']}") from None
    check_invariants(table)
    return table


def check_invariants(table: t.Table) -> None:
    problems: list[str] = []
    arguments = table.argument_by_name
    for setting in table.settings.settings:
        if setting.target.argument not in arguments:
            problems.append(f"setting {setting.key}: target argument {setting.target.argument} not in strategy.yaml")
        for version in [setting.target.since] + [d.source_before for d in setting.nemo1_default if d.source_before]:
            _check_version(version, f"setting {setting.key}", problems)
        if setting.nemo1_default[-1].source_before is not None:
            problems.append(f"setting {setting.key}: the last nemo1_default must apply to every source release")
        for value, lifecycle in setting.values.items():
            if setting.allowed is not None and value not in [str(a) for a in setting.allowed]:
                problems.append(f"setting {setting.key}: lifecycle for value {value!r} outside `allowed`")
    codes = [r.code for r in table.lint_rules]
    if len(codes) != len(set(codes)):
        problems.append(f"duplicate lint rule codes: {sorted(c for c in codes if codes.count(c) > 1)}")
    names = [r.name for r in table.lint_rules]
    if len(names) != len(set(names)):
        problems.append(f"duplicate lint rule names: {sorted(n for n in names if names.count(n) > 1)}")
    for rule in table.lint_rules:
        for example in rule.invalid + rule.valid:
            if example.code not in (None, rule.code):
                problems.append(f"rule {rule.code}: an example names another code {example.code}")
        if not rule.invalid or not rule.valid:
            problems.append(f"rule {rule.code}: needs at least one VALID and one INVALID example")
    for argument in table.strategy.arguments:
        _check_version(argument.since, f"argument {argument.name}", problems)
        _check_typed(argument.default, argument.type, argument.nullable, f"argument {argument.name} default", problems)
    for setting in table.settings.settings:
        for default in setting.nemo1_default:
            _check_typed(default.value, setting.type, setting.nullable, f"setting {setting.key} nemo1_default", problems)
        for value in setting.allowed or []:
            _check_typed(value, setting.type, False, f"setting {setting.key} allowed value", problems)
    if problems:
        raise MigratorError("rules: " + "; ".join(problems))


_PY_TYPES = {"bool": (bool,), "int": (int,), "str": (str,)}


def _check_typed(value: Any, type_: str, nullable: bool, where: str, problems: list[str]) -> None:
    if value is None:
        if not nullable:
            problems.append(f"{where} is null but the type {type_} is not nullable")
        return
    ok = isinstance(value, _PY_TYPES[type_]) and not (type_ == "int" and isinstance(value, bool))
    if not ok:
        problems.append(f"{where} {value!r} is not a {type_}")


def _check_version(text: str, where: str, problems: list[str]) -> None:
    try:
        Version.parse(text)
    except ValueError:
        problems.append(f"{where}: bad version {text!r}")
