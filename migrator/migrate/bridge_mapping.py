"""NeMo 1.0 YAML (or NeMo 2.0 Python) -> Megatron-Bridge `CheckpointConfig(...)` fields: the one source of truth for
`migrate-config --to bridge` in every output form (Python, YAML block, overrides, JSON).

The facts come from the Bridge table (`rules/bridge_fields.yaml` per release, `rules/bridge.yaml` for the mappings
and conflicts). For a NeMo 1.0 YAML the YAML lint's findings decide what is refused (a value NeMo itself would not
accept, a duplicate), exactly as for NeMo 2.0; what is Bridge-specific (fields a release lacks, zarr, defaults
Bridge flips, finalize()/validate() conflicts) is judged here. No libcst import: the JSON and text forms need none.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from migrator.engine.bridge_table import BridgeTable, Nemo1Mapping, same_value
from migrator.engine.diagnostics import Diagnostic, Location
from migrator.engine.table import Setting, Table
from migrator.errors import MigratorError
from migrator.migrate.mapping import Message, MessageSeverity, Refusable, json_form, parse_nemo1, py
from migrator.versions import BridgeTarget, Source, Target, Version
from migrator.yaml import checks
from migrator.yaml.document import Document, Node

Scalar = Any
CLASS = "megatron.bridge.training.config.CheckpointConfig"
REFUSE = frozenset({"NM101", "NM102", "NM105"})


@dataclass
class BridgeField:
    """One keyword argument of `CheckpointConfig(...)`."""

    name: str
    value: Scalar
    setting: str  # where it comes from: a YAML path, or a NeMo 2.0 argument
    origin: Literal["yaml", "nemo1-default", "python", "nemo2-default"]
    comment: str | None = None
    location: Location | None = None


@dataclass
class BridgeOmitted:
    setting: str
    field: str | None
    value: Scalar
    reason: str
    location: Location | None = None


@dataclass
class BridgeMapping(Refusable):
    filename: str
    target: BridgeTarget
    source: Source
    force: bool
    kind: str  # "training" | "model" (NeMo 1.0 YAML) | "nemo2-python"
    fields: list[BridgeField] = field(default_factory=list)
    omitted: list[BridgeOmitted] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)

    @property
    def release(self) -> str:
        return str(self.target.bridge)

    def field(self, name: str) -> BridgeField | None:
        return next((f for f in self.fields if f.name == name), None)

    def values(self) -> dict[str, Scalar]:
        return {f.name: f.value for f in self.fields}

    def as_json(self) -> dict[str, Any]:
        return json_form(
            self.filename, self.kind, {"megatron-bridge": str(self.target.bridge),
                                       "megatron-core": str(self.target.megatron_core)},
            self.source, CLASS, self.refused,
            [(f.name, f.value, f.setting, f.origin, f.comment, f.location) for f in self.fields],
            [(o.setting, o.field, o.value, o.reason, o.location) for o in self.omitted],
            self.messages)


# ================================================================================================= shared judgement
class _Builder:
    """What the YAML and the Python mappers share: field facts, value checks, defaults, conflicts, ordering."""

    def __init__(self, mapping: BridgeMapping, bridge: BridgeTable):
        self.m = mapping
        self.bridge = bridge

    def facts(self, name: str):
        return self.bridge.facts(name, self.m.release)

    def say(self, severity: MessageSeverity, text: str, *, code: str | None = None, location: Location | None = None,
            setting: str | None = None) -> None:
        self.m.messages.append(Message(severity, text, code, location, setting))

    def omit(self, setting: str, field_name: str | None, value: Scalar, reason: str,
             location: Location | None = None) -> None:
        self.m.omitted.append(BridgeOmitted(setting, field_name, value, reason, location))

    def add(self, name: str, value: Scalar, setting: str, origin: str, comment: str | None,
            location: Location | None = None) -> None:
        self.m.fields.append(BridgeField(name, value, setting, origin, comment, location))

    def missing_field(self, name: str) -> str:
        span = self.bridge.lifespan(name)
        if span is None:  # pragma: no cover - the table's invariants name only real fields
            return f"Bridge has no field {name}"
        first, last = span
        if Version.parse(self.m.release) < Version.parse(first):
            return f"CheckpointConfig has {name} from Bridge {first} on; Bridge {self.m.release} has none"
        return f"CheckpointConfig had {name} up to Bridge {last}; Bridge {self.m.release} has none"

    def value_problem(self, name: str, value: Scalar) -> tuple[str, str] | None:
        """(code, message) when the target cannot use `value` for field `name`: NM203 for a removed value, NM202
        for a wrong type or a value outside the release's allowed set."""
        from migrator.engine.bridge_verdicts import value_verdict

        verdict = value_verdict(self.bridge, self.m.target, name, value)
        return (verdict.code, verdict.message) if verdict is not None else None

    def conflicts(self) -> None:
        """What finalize() / validate() of the target release would raise on, given the emitted fields and Bridge's
        defaults for the rest."""
        from migrator.engine.bridge_verdicts import conflicts

        for conflict in conflicts(self.bridge, self.m.target, self.m.values()):
            self.say("warning", f"{conflict.message} (Bridge {self.m.release})", code="NM204",
                     setting=conflict.when[0].field)

    def finish(self) -> None:
        order = {f.name: i for i, f in enumerate(self.bridge.fields.fields)}
        self.m.fields.sort(key=lambda f: order.get(f.name, len(order)))
        self.conflicts()
        self.m.messages.sort(key=lambda msg: ({"error": 0, "warning": 1, "info": 2}[msg.severity],
                                             msg.location or Location(0, 0)))


def convert_value(entry: Any, value: Scalar) -> Scalar:
    """A NeMo value in Bridge terms: null means `null_means` where the table says so; `invert` flips a boolean."""
    if value is None and entry.null_means is not None:
        value = entry.null_means
    if entry.invert and isinstance(value, bool):
        value = not value
    return value


# ================================================================================================= NeMo 1.0 YAML in
def load_bridge_mapping(path: str | Path, table: Table, bridge: BridgeTable, target: BridgeTarget, source: Source, *,
                        force: bool = False) -> BridgeMapping:
    from migrator.engine.runner import read_text

    display = str(path)
    return map_yaml(read_text(Path(path), display), display, table, bridge, target, source, force=force)


def map_yaml(text: str, filename: str, table: Table, bridge: BridgeTable, target: BridgeTarget, source: Source, *,
             force: bool = False) -> BridgeMapping:
    document, config = parse_nemo1(text, filename, "a NeMo 2.0 config (its `strategy:` block holds the "
                                   "MegatronStrategy arguments), not a NeMo 1.0 one: `--to bridge` reads those "
                                   "arguments from a NeMo 2.0 Python script, not from YAML; set the block's values in "
                                   "CheckpointConfig by hand")
    # the NeMo lint judges types, values and duplicates; its NeMo side of the target does not matter for those
    lint_target = Target(nemo=Version.parse(table.releases.default_target.nemo), megatron_core=target.megatron_core)
    findings = checks.check_document(document, table, lint_target, source)
    mapping = BridgeMapping(filename, target, source, force, config.kind)
    _YamlMapper(mapping, bridge, table, document, config, findings, lint_target).run()
    return mapping


class _YamlMapper(_Builder):
    def __init__(self, mapping: BridgeMapping, bridge: BridgeTable, table: Table, document: Document,
                 config: checks.Config, findings: list[Diagnostic], lint_target: Target):
        super().__init__(mapping, bridge)
        self.table = table
        self.config = config
        self.findings = findings
        self.ctx = checks.Context(document, config, table, lint_target, mapping.source)
        self.handled: set[Location] = set()

    def run(self) -> None:
        # NeMo 1.0's dist_ckpt_* defaults concern only models that wrote megatron-core distributed checkpoints
        # (not legacy, FSDP or non-Megatron models), as for the NeMo 2.0 destination
        distributed = self.config.distributed
        for entry in self.bridge.mapping.nemo1:
            if entry.setting is not None:
                setting = self.table.setting_by_key[entry.setting]
                pair = self.ctx.setting_pair(setting)
                if pair is not None:
                    self.present(entry, setting.path if self.config.kind == "training" or not setting.in_model
                                 else setting.key, pair, setting)
                elif distributed and (setting.in_model or self.config.kind == "training"):
                    self.absent(entry, setting)
            elif self.config.kind == "training":
                node_pair = self.pair_at(entry.path)
                if node_pair is not None:
                    self.present(entry, entry.path, node_pair, None)
        self.file_messages()
        self.finish()

    def pair_at(self, path: str) -> tuple[Node, Node] | None:
        parent = self.ctx.lookup(".".join(path.split(".")[:-1]))
        return parent.pair(path.split(".")[-1]) if parent is not None and parent.kind == "mapping" else None

    def findings_on(self, key: Node, value: Node) -> dict[str, Diagnostic]:
        spans = {key.start, value.start}
        return {d.code: d for d in self.findings if d.location in spans}

    def present(self, entry: Nemo1Mapping, path: str, pair: tuple[Node, Node], setting: Setting | None) -> None:
        key, value_node = pair
        self.handled.update((key.start, value_node.start))
        found = self.findings_on(key, value_node)
        where = key.start
        if value_node.kind != "scalar" or checks.is_interpolation(value_node):
            if "NM112" in found or checks.is_interpolation(value_node):
                self.say("warning", f"{path}: {value_node.raw} is an OmegaConf interpolation, resolved only by "
                         f"Hydra; set {entry.field or 'it'} by hand", code="NM112", location=where, setting=path)
            else:
                self.say("warning", f"{path} is not a single value; not carried", location=where, setting=path)
            self.omit(path, entry.field, value_node.raw, "not a literal value", where)
            return
        refusing = [found[c] for c in sorted(REFUSE & set(found))]
        value = value_node.value
        if setting is None and value is not None and entry.type is not None:
            ok = isinstance(value, {"bool": bool, "int": int, "str": str}[entry.type]) and not (
                entry.type == "int" and isinstance(value, bool))
            if not ok:
                self.refuse("NM101", f"{path} must be {'a' if entry.type != 'int' else 'an'} {entry.type}, "
                            f"got {py(value)}", where, path, left_out=True)
                self.omit(path, entry.field, value, "a value of the wrong type", where)
                return
        for d in refusing:
            self.refuse(d.code, d.message, d.location, path, left_out=d.code != "NM105")
        if any(d.code in ("NM101", "NM102") for d in refusing):
            self.omit(path, entry.field, value_node.raw, "a value NeMo does not accept", where)
            return
        if refusing and not self.m.force:
            self.omit(path, entry.field, value, "refused (see the error)", where)
            return
        if entry.field is None:
            if value is not None:
                self.omit(path, None, value, " ".join(entry.why.split()), where)
            return
        if self.facts(entry.field) is None:
            if value is not None:
                self.omit(path, entry.field, value, f"{self.missing_field(entry.field)}"
                          + (f" ({' '.join(entry.why.split())})" if entry.why else ""), where)
            return
        if value is None and entry.null_means is None and entry.setting is None:
            return  # an exp_manager path set to null: Bridge's own null default
        bridge_value = convert_value(entry, value)
        problem = self.value_problem(entry.field, bridge_value)
        comment_parts: list[str] = []
        if problem is not None:
            code, text = problem
            if self.m.force:
                self.say("warning", text + " (carried anyway: --force)", code=code, location=where, setting=path)
                comment_parts.append("--force")
            else:
                self.say("error", text + "; change it in the YAML, or pass --force to carry it anyway", code=code,
                         location=where, setting=path)
                self.omit(path, entry.field, value, "refused (see the error)", where)
                return
        if entry.invert:
            comment_parts.insert(0, f"inverted {path.rsplit('.', 1)[-1]}: {py(value)}")
        elif value is None and entry.null_means is not None:
            comment_parts.insert(0, f"NeMo's null means {py(entry.null_means)}")
        if entry.setting == "dist_ckpt_assume_constant_structure":
            comment_parts.insert(0, "NeMo 1.0 ignored this key; Bridge applies it")
        facts = self.facts(entry.field)
        if setting is not None and bridge_value != facts.default:
            old = self.ctx.default_for_source(setting)
            if old is not checks.UNKNOWN and same_value(convert_value(entry, old), bridge_value):
                comment_parts.append(f"NeMo 1.0's default; Bridge defaults to {py(facts.default)}")
        self.add(entry.field, bridge_value, path, "yaml", "; ".join(comment_parts) or None, where)

    def refuse(self, code: str, text: str, location: Location | None, path: str, *, left_out: bool) -> None:
        if self.m.force:
            self.say("warning", text + (" (left out: --force)" if left_out else " (carried anyway: --force)"),
                     code=code, location=location, setting=path)
        else:
            hint = ("; delete the copy you do not mean, or pass --force to carry the last one" if code == "NM105"
                    else f"; correct it, or pass --force to leave {path} out")
            self.say("error", text + hint, code=code, location=location, setting=path)

    def absent(self, entry: Nemo1Mapping, setting: Setting) -> None:
        if entry.field is None or self.facts(entry.field) is None:
            return
        old = self.ctx.default_for_source(setting)
        if old is checks.UNKNOWN:
            return
        value = convert_value(entry, old)
        facts = self.facts(entry.field)
        if same_value(value, facts.default):
            return
        path = setting.path if self.config.kind == "training" or not setting.in_model else setting.key
        comment = f"NeMo 1.0 default (not set in the YAML); Bridge defaults to {py(facts.default)}"
        problem = self.value_problem(entry.field, value)
        if problem is not None:
            code, text = problem
            text = (f"{setting.key} is not set, and NeMo 1.0 defaulted it to {old} for a config from NeMo "
                    f"{self.m.source.nemo}: {text}")
            if not self.m.force:
                self.say("error", text + f"; set {setting.key}: torch_dist in the YAML if new checkpoints may use "
                         "it, or pass --force to carry the old default", code=code, setting=path)
                self.omit(path, entry.field, old, "refused (see the error)")
                return
            self.say("warning", text + " (carried anyway: --force)", code=code, setting=path)
            comment += "; --force"
        self.add(entry.field, value, path, "nemo1-default", comment)

    def file_messages(self) -> None:
        seen = {(m.code, m.location) for m in self.m.messages}
        for d in self.findings:
            if (d.code, d.location) in seen or d.location in self.handled:
                continue
            if d.code in ("NM103", "NM104"):
                self.say("warning", d.message + "; not carried (NeMo 1.0 ignored it too)", code=d.code,
                         location=d.location)
            elif d.code in ("NM116", "NM105"):
                self.say("warning", d.message, code=d.code, location=d.location)
        if self.config.kind != "training":
            return
        if self.m.field("save") is None:
            callback = self.ctx.lookup("exp_manager.create_checkpoint_callback")
            if callback is None or callback.kind != "scalar" or callback.value is not False:
                self.say("info", "Bridge writes checkpoints only when save is set (NeMo 1.0's exp_manager saved "
                         "under its log directory by default): set save to the checkpoint directory",
                         setting="save")
        resume = self.ctx.lookup("exp_manager.resume_if_exists")
        if resume is not None and resume.kind == "scalar" and resume.value is True and self.m.field("load") is None:
            self.say("info", "exp_manager.resume_if_exists: True resumed from the run's own checkpoints; Bridge "
                     "resumes only from load: set load (usually the same directory as save)",
                     location=resume.start, setting="load")
