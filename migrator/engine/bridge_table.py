"""The Megatron-Bridge part of the rule table: `rules/bridge_fields.yaml` (extracted from Bridge's tagged sources by
scripts/extract_bridge_fields.py) and `rules/bridge.yaml` (the mappings and conflicts on top of it).

Plain dataclasses like `migrator.engine.table` (the pydantic schema in `table_schema` validates the same files);
loaded only when a command targets Bridge, so the NeMo 2.0 paths never read these files.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from migrator.engine.table import Record, Scalar, build, cached_data, rules_dir
from migrator.errors import MigratorError
from migrator.versions import Version

FIELDS_FILE = "bridge_fields.yaml"
MAPPING_FILE = "bridge.yaml"


# ----------------------------------------------------------------------------------------------- bridge_fields.yaml
@dataclass(eq=False, repr=False)
class FieldVariant(Record):
    """A field's facts over a run of consecutive releases (`first` .. `last`, both inclusive)."""

    first: str
    last: str
    type: Literal["bool", "int", "str", "float", "other"]
    nullable: bool
    origin: str  # "bridge" | "megatron-lm" | "bridge (overrides megatron-lm)"
    annotation: str
    default: Scalar = None
    allowed: list[Scalar] | None = None
    required: bool = False


@dataclass(eq=False, repr=False)
class BridgeField(Record):
    name: str
    variants: list[FieldVariant]


@dataclass(eq=False, repr=False)
class ExtractedRelease(Record):
    tag: str
    megatron_lm_commit: str | None
    megatron_core_at_pin: str | None
    post_init: list[str]
    finalize: list[str]
    validate: list[str]
    base: str | None = None


@dataclass(eq=False, repr=False)
class FieldTable(Record):
    schema_version: int
    generated_by: str
    releases: list[ExtractedRelease]
    fields: list[BridgeField]


# ----------------------------------------------------------------------------------------------- bridge.yaml
@dataclass(eq=False, repr=False)
class BridgeRelease(Record):
    version: str
    megatron_core: str
    date: str
    python: str
    note: str | None = None


@dataclass(eq=False, repr=False)
class BridgeLifecycleStage(Record):
    message: str
    megatron_core: str | None = None
    bridge: str | None = None


@dataclass(eq=False, repr=False)
class BridgeValue(Record):
    removed: BridgeLifecycleStage | None = None
    replacement: str | None = None
    convert_hint: str | None = None


@dataclass(eq=False, repr=False)
class Nemo1Mapping(Record):
    """A NeMo 1.0 key (`setting`, a settings.yaml key) or an exp_manager path (`path`, with its `type`) and its
    Bridge field; `field: null` when there is none (`why` says what to know instead)."""

    field: str | None
    setting: str | None = None
    path: str | None = None
    type: Literal["bool", "int", "str"] | None = None
    invert: bool = False
    since: str | None = None  # the first Bridge release that has the field, where later than 0.2
    null_means: Scalar = None  # what a null NeMo value means in Bridge terms
    why: str | None = None


@dataclass(eq=False, repr=False)
class Nemo2Mapping(Record):
    argument: str  # a MegatronStrategy argument, or `ModelCheckpoint.x` / `AutoResume.x`
    field: str | None
    invert: bool = False
    since: str | None = None
    null_means: Scalar = None
    why: str | None = None


@dataclass(eq=False, repr=False)
class FieldCondition(Record):
    field: str
    one_of: list[Scalar] | None = None
    not_one_of: list[Scalar] | None = None

    def holds(self, value: Any) -> bool:
        if self.one_of is not None:
            return any(same_value(value, v) for v in self.one_of)
        return not any(same_value(value, v) for v in self.not_one_of or [])


def same_value(a: Any, b: Any) -> bool:
    """Equal and of the same kind (True is not 1, None is only None)."""
    return isinstance(a, bool) == isinstance(b, bool) and (a is None) == (b is None) and a == b


@dataclass(eq=False, repr=False)
class BridgeConflict(Record):
    id: str
    where: Literal["finalize", "validate"]
    first: str
    when: list[FieldCondition]
    check: str
    message: str
    last: str | None = None


@dataclass(eq=False, repr=False)
class MappingTable(Record):
    schema_version: int
    class_names: list[str]
    container_names: list[str]
    import_module: str
    releases: list[BridgeRelease]
    nemo1: list[Nemo1Mapping]
    nemo2: list[Nemo2Mapping]
    conflicts: list[BridgeConflict] = field(default_factory=list)
    values: dict[str, dict[str, BridgeValue]] = field(default_factory=dict)
    nemo2_classes: dict[str, list[str]] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- the Bridge table
@dataclass(eq=False, repr=False)
class FieldFacts:
    """One field as one release has it."""

    name: str
    type: str
    nullable: bool
    default: Any
    allowed: list[Any] | None
    origin: str
    first: str  # the first release (of all known) that has the field


@dataclass(eq=False, repr=False)
class BridgeTable:
    fields: FieldTable
    mapping: MappingTable

    @functools.cached_property
    def release_versions(self) -> list[Version]:
        return [Version.parse(r.version) for r in self.mapping.releases]

    @property
    def newest(self) -> BridgeRelease:
        return self.mapping.releases[-1]

    def release(self, version: Version) -> BridgeRelease:
        for release in self.mapping.releases:
            if Version.parse(release.version) == version:
                return release
        raise MigratorError(f"megatron-bridge={version} is not a release the rule table knows")

    def resolve(self, text: str) -> BridgeRelease:
        """`0.3` -> the newest known 0.3.x; `0.3.0` -> exactly that; anything else is a usage error that says
        what the value means here (one release; `convert --target` reads the same words as release lines)."""
        parts = text.strip().lstrip("v").split(".")
        known = ", ".join(r.version for r in self.mapping.releases)
        meaning = (f"here megatron-bridge=X is the one release configs and code are judged against: 0.3 means the "
                   f"newest known 0.3.x, 0.3.0 exactly that tag (known: {known}; default {self.newest.version})")
        if ".." in text:
            raise MigratorError(f"--target: megatron-bridge={text}: a range of release lines is for `nemo-migrate "
                                f"convert` (every tag must load the checkpoint); {meaning}")
        try:
            wanted = tuple(int(p) for p in parts)
        except ValueError:
            raise MigratorError(f"--target: megatron-bridge={text!r} is not a version number; {meaning}") from None
        matches = [r for r in self.mapping.releases
                   if tuple(int(p) for p in r.version.split("."))[: len(wanted)] == wanted]
        if not matches:
            raise MigratorError(f"--target: megatron-bridge={text} is not a release the rule table knows (newer "
                                f"releases are unverified); {meaning}")
        return matches[-1]

    def facts(self, name: str, release: str) -> FieldFacts | None:
        """The field as `release` has it, or None when that release has no such field."""
        version = Version.parse(release)
        entry = self.field_by_name.get(name)
        if entry is None:
            return None
        for variant in entry.variants:
            if Version.parse(variant.first) <= version <= Version.parse(variant.last):
                return FieldFacts(name, variant.type, variant.nullable, variant.default, variant.allowed,
                                  variant.origin, entry.variants[0].first)
        return None

    def field_names(self, release: str) -> list[str]:
        return [f.name for f in self.fields.fields if self.facts(f.name, release) is not None]

    def lifespan(self, name: str) -> tuple[str, str] | None:
        entry = self.field_by_name.get(name)
        if entry is None:
            return None
        return entry.variants[0].first, entry.variants[-1].last

    @functools.cached_property
    def field_by_name(self) -> dict[str, BridgeField]:
        return {f.name: f for f in self.fields.fields}

    @functools.cached_property
    def nemo1_by_setting(self) -> dict[str, Nemo1Mapping]:
        return {m.setting: m for m in self.mapping.nemo1 if m.setting}

    @functools.cached_property
    def nemo2_by_argument(self) -> dict[str, Nemo2Mapping]:
        return {m.argument: m for m in self.mapping.nemo2}

    def conflicts_for(self, release: str) -> list[BridgeConflict]:
        version = Version.parse(release)
        return [c for c in self.mapping.conflicts
                if Version.parse(c.first) <= version and (c.last is None or version <= Version.parse(c.last))]

    def extracted(self, release: str) -> ExtractedRelease | None:
        return next((r for r in self.fields.releases if r.tag.lstrip("v") == release), None)


def bridge_files(directory: Path) -> list[Path]:
    return [directory / FIELDS_FILE, directory / MAPPING_FILE]


def read_raw(directory: Path | None = None) -> dict[str, Any]:
    from ruamel.yaml import YAML

    directory = directory or rules_dir()
    yaml = YAML(typ="safe", pure=True)
    out = {}
    for key, name in (("fields", FIELDS_FILE), ("mapping", MAPPING_FILE)):
        path = directory / name
        try:
            out[key] = yaml.load(path.read_text(encoding="utf-8"))
        except Exception as exc:
            raise MigratorError(f"{path}: cannot read rule data: {exc}".splitlines()[0]) from None
    return out


@functools.lru_cache(maxsize=None)
def load_bridge_table(directory: str | None = None) -> BridgeTable:
    """Load (validating with pydantic once per version of the files, like `load_table`)."""
    root = Path(directory) if directory else rules_dir()

    def validated() -> dict[str, Any]:
        from migrator.engine import table_schema
        from migrator.engine.table import load_table

        raw = read_raw(root)
        table_schema.validate_bridge(raw, load_table(directory))
        return raw

    data = cached_data("bridge", bridge_files(root), validated)
    return BridgeTable(fields=build(FieldTable, data["fields"], "rules/bridge_fields.yaml"),
                       mapping=build(MappingTable, data["mapping"], "rules/bridge.yaml"))
