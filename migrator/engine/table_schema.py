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


# ----------------------------------------------------------------------------------------------- the Bridge table
def validate_bridge(raw: dict[str, Any], table: t.Table) -> None:
    """Validate rules/bridge_fields.yaml and rules/bridge.yaml (types, Literals, no extra fields) and check them
    against each other and against the NeMo table: every field the mappings and conflicts name exists in the
    extracted field table (from the release they say), every conflict's `check` is among the assertions extracted
    from exactly the releases it claims, and every NeMo 1.0 key / NeMo 2.0 argument exists."""
    from migrator.engine import bridge_table as b

    def check(cls: type, data: Any) -> Any:
        return _adapter(cls).validate_json(json.dumps(data))

    try:
        fields = check(b.FieldTable, raw["fields"])
        mapping = check(b.MappingTable, raw["mapping"])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MigratorError(f"rules: invalid Bridge table at {where}: {first['msg']}") from None
    check_bridge_invariants(b.BridgeTable(fields=fields, mapping=mapping), table)


def check_bridge_invariants(bridge: Any, table: t.Table) -> None:
    problems: list[str] = []
    releases = [r.version for r in bridge.mapping.releases]
    extracted = [r.tag.lstrip("v") for r in bridge.fields.releases]
    if releases != extracted:
        problems.append(f"bridge.yaml releases {releases} differ from the extracted ones {extracted}")
    for release in bridge.mapping.releases:
        _check_version(release.version, f"bridge release {release.version}", problems)
        _check_version(release.megatron_core, f"bridge release {release.version} megatron_core", problems)
    for entry in bridge.fields.fields:
        for variant in entry.variants:
            for version in (variant.first, variant.last):
                if version not in releases:
                    problems.append(f"field {entry.name}: variant release {version} unknown")

    def field_known(name: str, since: str | None, where: str) -> None:
        span = bridge.lifespan(name)
        if span is None:
            problems.append(f"{where}: Bridge has no field {name!r} in any release")
        elif since is not None and bridge.facts(name, since) is None:
            problems.append(f"{where}: field {name!r} does not exist in Bridge {since}")
        elif since is None and bridge.facts(name, releases[0]) is None:
            problems.append(f"{where}: field {name!r} is not in Bridge {releases[0]} (say `since`)")

    for m in bridge.mapping.nemo1:
        where = f"bridge.yaml nemo1 {m.setting or m.path}"
        if (m.setting is None) == (m.path is None):
            problems.append(f"{where}: give exactly one of setting / path")
        if m.setting is not None and m.setting not in table.setting_by_key:
            problems.append(f"{where}: not a settings.yaml key")
        if m.path is not None and m.type is None:
            problems.append(f"{where}: a path needs its type")
        if m.field is not None:
            field_known(m.field, m.since, where)
        elif not m.why:
            problems.append(f"{where}: a key with no Bridge field needs `why`")
    mapped = {m.setting for m in bridge.mapping.nemo1 if m.setting}
    for setting in table.settings.settings:
        if setting.key not in mapped:
            problems.append(f"bridge.yaml nemo1: settings.yaml key {setting.key} has no entry")
    for m in bridge.mapping.nemo2:
        where = f"bridge.yaml nemo2 {m.argument}"
        if "." not in m.argument and m.argument not in table.argument_by_name:
            problems.append(f"{where}: not a strategy.yaml argument")
        if m.field is not None:
            field_known(m.field, m.since, where)
        elif not m.why:
            problems.append(f"{where}: an argument with no Bridge field needs `why`")
    for name, values in bridge.mapping.values.items():
        field_known(name, None, f"bridge.yaml values {name}")
    for c in bridge.mapping.conflicts:
        where = f"bridge.yaml conflict {c.id}"
        for cond in c.when:
            field_known(cond.field, c.first, where)
        for release in bridge.fields.releases:
            version = Version.parse(release.tag.lstrip("v"))
            inside = Version.parse(c.first) <= version and (c.last is None or version <= Version.parse(c.last))
            found = c.check in (release.finalize if c.where == "finalize" else release.validate)
            if inside and not found:
                problems.append(f"{where}: {c.where}() of Bridge {release.tag} has no check {c.check!r}")
            if found and not inside:
                problems.append(f"{where}: {c.where}() of Bridge {release.tag} has the check but the rule excludes it")
    if problems:
        raise MigratorError("rules: " + "; ".join(problems))
