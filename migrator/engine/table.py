"""The versioned mapping table under `rules/`: typed records and a loader.

The record types are plain dataclasses so that `nemo-migrate lint` starts fast; they double as the pydantic schema:
`migrator.engine.table_schema` validates the same files with `pydantic.TypeAdapter` over these classes (the first
load of each table version and the test suite run it), and `nemo-migrate schema` derives the editor JSON Schema from
them.
At run time `build()` below converts the YAML data strictly (unknown or missing fields, wrong scalar types and
values outside a Literal are errors), without importing pydantic.
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from migrator.errors import MigratorError

Scalar = Union[bool, int, float, str, None]


class Record:
    """Base of every table record. pydantic reads `__pydantic_config__` from stdlib dataclasses: no extra fields,
    no type coercion (a plain dict, so this module does not import pydantic)."""

    __pydantic_config__ = {"extra": "forbid", "strict": True}

    def __repr__(self) -> str:  # one shared repr: per-class generated code costs start-up time (lint must start fast)
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"

Severity = Literal["error", "warning", "info"]
Language = Literal["yaml", "python"]


# ----------------------------------------------------------------------------------------------- releases.yaml
@dataclass(eq=False, repr=False)
class Release(Record):
    version: str
    date: str | None = None
    note: str | None = None


@dataclass(eq=False, repr=False)
class DefaultTarget(Record):
    nemo: str
    megatron_core: str


@dataclass(eq=False, repr=False)
class Releases(Record):
    nemo: list[Release]
    megatron_core: list[Release]


@dataclass(eq=False, repr=False)
class ReleaseTable(Record):
    schema_version: int
    default_target: DefaultTarget
    releases: Releases


# ----------------------------------------------------------------------------------------------- settings.yaml
@dataclass(eq=False, repr=False)
class DefaultValue(Record):
    """NeMo 1.0's value for an absent key; `source_before` limits it to configs from releases before that one."""

    value: Scalar
    source_before: str | None = None
    why: str | None = None


@dataclass(eq=False, repr=False)
class TargetArgument(Record):
    argument: str
    default: Scalar
    since: str
    # values that behave as the argument's default does, so a target without the argument loses nothing
    same_as_default: list[Scalar] = field(default_factory=list)


@dataclass(eq=False, repr=False)
class Lifecycle(Record):
    """A value deprecated or removed from a component version on (e.g. zarr in megatron-core)."""

    message: str
    nemo: str | None = None
    megatron_core: str | None = None


@dataclass(eq=False, repr=False)
class ValueLifecycle(Record):
    deprecated: Lifecycle | None = None
    removed: Lifecycle | None = None
    replacement: str | None = None
    convert_hint: str | None = None


@dataclass(eq=False, repr=False)
class Condition(Record):
    """True when the value at `setting` (a sibling setting) or `path` (dotted, `model.` = the model mapping) is in
    `one_of` / not in `not_one_of`. An unknown value makes the condition unknown, which never reports."""

    setting: str | None = None
    path: str | None = None
    one_of: list[Scalar] | None = None
    not_one_of: list[Scalar] | None = None


@dataclass(eq=False, repr=False)
class NoEffect(Record):
    when: Condition
    message: str
    unless: Condition | None = None  # the setting does take effect where this holds


@dataclass(eq=False, repr=False)
class Example(Record):
    """A snippet the test suite lints. Valid: no finding (of this rule, or on this setting's lines). Invalid: a
    finding with `code` at `at` ("line:col-line:col", 1-based, end exclusive); `fixed` is the text after its fix."""

    source: str
    code: str | None = None
    at: str | None = None
    target: str | None = None
    source_release: str | None = None
    lang: Language = "yaml"
    fixed: str | None = None
    message_contains: str | None = None
    config: str | None = None  # python examples: the NeMo 1.0 YAML the code was migrated from (`lint --config`)


@dataclass(eq=False, repr=False)
class Examples(Record):
    valid: list[str] = field(default_factory=list)
    invalid: list[Example] = field(default_factory=list)


@dataclass(eq=False, repr=False)
class Setting(Record):
    key: str
    path: str
    type: Literal["bool", "int", "str"]
    nemo1_default: list[DefaultValue]
    target: TargetArgument
    description: str
    nullable: bool = False
    allowed: list[Scalar] | None = None
    minimum: int | None = None
    read_by_nemo1: bool = True
    wrong_names: list[str] = field(default_factory=list)
    values: dict[str, ValueLifecycle] = field(default_factory=dict)
    no_effect: list[NoEffect] = field(default_factory=list)
    examples: Examples = field(default_factory=Examples)

    @property
    def in_model(self) -> bool:
        return self.path.startswith("model.")


@dataclass(eq=False, repr=False)
class SettingTable(Record):
    schema_version: int
    settings: list[Setting]


# ----------------------------------------------------------------------------------------------- strategy.yaml
@dataclass(eq=False, repr=False)
class Argument(Record):
    name: str
    type: Literal["bool", "int", "str"]
    default: Scalar
    since: str
    description: str
    nullable: bool = False
    allowed: list[Scalar] | None = None
    minimum: int | None = None
    enum_class: str | None = None
    other_types: list[Literal["bool", "int", "str"]] = field(default_factory=list)  # also accepted as they are


@dataclass(eq=False, repr=False)
class RemovedArgument(Record):
    name: str
    added: str
    removed: str
    replaced_by: list[str]
    why: str


@dataclass(eq=False, repr=False)
class WrongName(Record):
    name: str
    use: str
    why: str


@dataclass(eq=False, repr=False)
class Conflict(Record):
    when: dict[str, Scalar]
    message: str


@dataclass(eq=False, repr=False)
class ArgumentNote(Record):
    """A migration note for an argument value on a range of targets."""

    id: str
    argument: str
    value: Scalar
    message: str
    nemo_at_most: str | None = None
    megatron_core_at_least: str | None = None


@dataclass(eq=False, repr=False)
class StrategyTable(Record):
    schema_version: int
    class_names: list[str]
    arguments: list[Argument]
    config_wrappers: list[str] = field(default_factory=list)  # callables that configure a class: run.Config(cls, ...)
    removed_arguments: list[RemovedArgument] = field(default_factory=list)
    wrong_names: list[WrongName] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    notes: list[ArgumentNote] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- lint/*.yaml
@dataclass(eq=False, repr=False)
class LintRule(Record):
    """One lint rule's identity, documentation and examples (its check lives in migrator.yaml / migrator.python)."""

    code: str
    name: str
    severity: Severity
    languages: list[Language]
    summary: str
    what: str
    why: str
    example: str
    fix: str
    fix_safety: str | None = None
    depends_on: str | None = None  # "target", "source" or "target and source"
    invalid: list[Example] = field(default_factory=list)
    valid: list[Example] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- the whole table
@dataclass(eq=False, repr=False)
class Table:
    releases: ReleaseTable
    settings: SettingTable
    strategy: StrategyTable
    lint_rules: list[LintRule]

    @functools.cached_property
    def setting_by_key(self) -> dict[str, Setting]:
        return {s.key: s for s in self.settings.settings}

    @functools.cached_property
    def rule_by_code(self) -> dict[str, LintRule]:
        return {r.code: r for r in self.lint_rules}

    @functools.cached_property
    def argument_by_name(self) -> dict[str, Argument]:
        return {a.name: a for a in self.strategy.arguments}

    def setting_for_argument(self, argument: str) -> Setting | None:
        return next((s for s in self.settings.settings if s.target.argument == argument), None)


# ----------------------------------------------------------------------------------------------- loading
def rules_dir() -> Path:
    """`migrator/_rules` inside an installed wheel, `<checkout>/rules` in a source checkout."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "_rules", package.parent / "rules"):
        if (candidate / "settings.yaml").is_file():
            return candidate
    raise MigratorError(f"rule table not found next to {package} (expected _rules/ or ../rules/)")


def read_raw(directory: Path | None = None) -> dict[str, Any]:
    """The table's files as plain data: {"releases": ..., "settings": ..., "strategy": ..., "lint_rules": [...]}."""
    from ruamel.yaml import YAML

    directory = directory or rules_dir()
    yaml = YAML(typ="safe", pure=True)

    def load(path: Path) -> Any:
        try:
            return yaml.load(path.read_text(encoding="utf-8"))
        except Exception as exc:  # a broken data file is a packaging error, named precisely
            raise MigratorError(f"{path}: cannot read rule data: {exc}".splitlines()[0]) from None

    return {
        "releases": load(directory / "releases.yaml"),
        "settings": load(directory / "settings.yaml"),
        "strategy": load(directory / "strategy.yaml"),
        "lint_rules": [load(p) for p in sorted((directory / "lint").glob("*.yaml"))],
    }


def table_files(directory: Path) -> list[Path]:
    """The files `read_raw` reads (the cache key of the lint table)."""
    return [directory / name for name in ("releases.yaml", "settings.yaml", "strategy.yaml")] + sorted(
        (directory / "lint").glob("*.yaml"))


def _cache_dir() -> Path:
    import os

    base = os.environ.get("NEMO_MIGRATE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "nemo-migrator"
    )
    return Path(base)


def cached_data(label: str, files: list[Path], produce: Callable[[], Any]) -> Any:
    """`produce()`'s JSON-able result, cached under the user cache dir and keyed by the content of `files` (and
    the package version), so a data file is parsed and validated once per change, not once per run. A cache that
    cannot be written (read-only home) only costs speed."""
    import hashlib
    import json
    import os

    from migrator import __version__

    digest = hashlib.sha256(__version__.encode())
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    cache = _cache_dir() / f"{label}-{digest.hexdigest()[:20]}.json"
    try:
        return json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    data = produce()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, cache)
    except OSError:
        pass
    return data


@functools.lru_cache(maxsize=None)
def load_table(directory: str | None = None) -> Table:
    """Load the table. The first load of a given table version validates it with pydantic
    (`table_schema.validate`) and caches the data as JSON; later loads read the JSON and convert it strictly
    without importing pydantic (a cold `lint` must start in well under 0.3 s)."""
    root = Path(directory) if directory else rules_dir()

    def validated() -> dict[str, Any]:
        from migrator.engine import table_schema

        raw = read_raw(root)
        table_schema.validate(raw)
        return raw

    return build(Table, cached_data("table", table_files(root), validated), "rules")


def build(cls: Any, data: Any, where: str) -> Any:
    """Convert plain data to `cls` (a dataclass or typing construct) strictly, naming the offending path."""
    origin = typing.get_origin(cls)
    if cls is Any:
        return data
    if dataclasses.is_dataclass(cls):
        if not isinstance(data, dict):
            raise MigratorError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
        hints = _hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(data) - set(fields)
        if unknown:
            raise MigratorError(f"{where}: unknown field(s) {sorted(unknown)} for {cls.__name__}")
        values = {}
        for name, f in fields.items():
            if name in data:
                values[name] = build(hints[name], data[name], f"{where}.{name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise MigratorError(f"{where}: missing field {name!r} of {cls.__name__}")
        return cls(**values)
    if origin in (Union, types.UnionType):
        options = typing.get_args(cls)
        if data is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return build(option, data, where)
            except MigratorError as exc:
                errors.append(str(exc))
        raise MigratorError(errors[0] if len(errors) == 1 else f"{where}: {data!r} matches none of {options}")
    if origin is Literal:
        if data not in typing.get_args(cls):
            raise MigratorError(f"{where}: {data!r} is not one of {typing.get_args(cls)}")
        return data
    if origin is list:
        if not isinstance(data, list):
            raise MigratorError(f"{where}: expected a list, got {type(data).__name__}")
        (item,) = typing.get_args(cls)
        return [build(item, v, f"{where}[{i}]") for i, v in enumerate(data)]
    if origin is dict:
        if not isinstance(data, dict):
            raise MigratorError(f"{where}: expected a mapping, got {type(data).__name__}")
        _, item = typing.get_args(cls)
        return {str(k): build(item, v, f"{where}.{k}") for k, v in data.items()}
    if cls is type(None):
        if data is not None:
            raise MigratorError(f"{where}: expected null")
        return None
    if cls in (str, int, float, bool):
        ok = isinstance(data, cls) and not (cls is int and isinstance(data, bool))
        if cls is float and isinstance(data, int) and not isinstance(data, bool):
            ok = True
        if not ok:
            raise MigratorError(f"{where}: expected {cls.__name__}, got {data!r}")
        return data
    raise MigratorError(f"{where}: unsupported schema type {cls!r}")  # pragma: no cover - schema bug


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)
