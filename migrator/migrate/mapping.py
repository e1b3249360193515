"""NeMo 1.0 YAML -> NeMo 2.0 `MegatronStrategy(...)` keyword arguments: the one source of truth.

`--emit-python`, `--patch`, `migrate-config --output-format json` and the Python consistency rule (NM120) all read
the `Mapping` built here. It judges nothing itself where the YAML lint already does: it runs the YAML rules
(`migrator.yaml.checks`) on the file and decides, per finding, whether the setting is carried, carried with a
comment, left out with a comment, or refused (an error such as zarr for a megatron-core that cannot read it).

What it adds to the lint:
- a setting the YAML leaves out is written explicitly when NeMo 1.0's default (for the source release) differs
  from NeMo 2.0's (parallel load/save, async save; zarr for a config from before NeMo 2.0.0);
- the argument order (the table's order, stable whatever the YAML order) and a short reason per argument.

This module does not import libcst: the JSON output and `lint --config` need no syntax tree.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from migrator.engine.diagnostics import Diagnostic, Location
from migrator.engine.table import Setting, Table
from migrator.errors import MigratorError
from migrator.versions import Source, Target, Version
from migrator.yaml import checks
from migrator.yaml.document import Document, Node, parse

Scalar = Any  # bool | int | str | None

# How each YAML finding bears on the migration (codes not listed do not: NM111's point is made by writing the
# value explicitly, NM113 is about YAML spelling only).
REFUSE = frozenset({"NM101", "NM102", "NM105", "NM106", "NM115"})  # the value cannot be carried faithfully
WARN = frozenset({"NM103", "NM104", "NM107", "NM109", "NM112", "NM116"})
NOTE = frozenset({"NM110", "NM114"})

MessageSeverity = Literal["error", "warning", "info"]


@dataclass
class Message:
    """Something the user must know about the migration: printed as a comment in the code (and, for warnings and
    errors, on stderr). `code` is the YAML rule that said it, when one did."""

    severity: MessageSeverity
    text: str
    code: str | None = None
    location: Location | None = None
    setting: str | None = None


@dataclass
class MappedArgument:
    """One keyword argument of `MegatronStrategy(...)`."""

    name: str
    value: Scalar
    setting: str  # the NeMo 1.0 key it comes from
    origin: Literal["yaml", "nemo1-default"]
    comment: str | None = None  # a short reason, written after the argument
    key: Node | None = None  # positions in the YAML (origin "yaml")
    value_node: Node | None = None
    parent: Node | None = None  # the YAML mapping holding the key
    yaml_path: str = ""


@dataclass
class Omitted:
    """A setting of the YAML that is not carried, and why."""

    setting: str
    argument: str
    value: Scalar
    reason: str
    key: Node | None = None


class Refusable:
    """A mapping's verdict from its messages: an error means no code is produced (unless --force)."""

    messages: list[Message]

    @property
    def errors(self) -> list[Message]:
        return [m for m in self.messages if m.severity == "error"]

    @property
    def refused(self) -> bool:
        """True when the tool must not produce code (an error, and no --force)."""
        return bool(self.errors)


@dataclass
class Mapping(Refusable):
    filename: str
    target: Target
    source: Source
    force: bool
    document: Document
    config: checks.Config
    arguments: list[MappedArgument] = field(default_factory=list)
    omitted: list[Omitted] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    findings: list[Diagnostic] = field(default_factory=list)  # every YAML lint finding on the file

    def argument(self, name: str) -> MappedArgument | None:
        return next((a for a in self.arguments if a.name == name), None)

    def as_json(self) -> dict[str, Any]:
        def start(node: Node | None) -> Location | None:
            return node.start if node is not None else None

        return json_form(
            self.filename, self.config.kind, {"nemo": str(self.target.nemo),
                                              "megatron-core": str(self.target.megatron_core)},
            self.source, "nemo.lightning.MegatronStrategy", self.refused,
            [(a.name, a.value, a.yaml_path, a.origin, a.comment, start(a.key)) for a in self.arguments],
            [(o.setting, o.argument, o.value, o.reason, start(o.key)) for o in self.omitted],
            self.messages)


def json_form(config: str, kind: str, target: dict[str, str], source: Source, class_name: str, refused: bool,
              arguments: Iterable[tuple[str, Scalar, str, str, str | None, Location | None]],
              omitted: Iterable[tuple[str, str | None, Scalar, str, Location | None]],
              messages: Iterable[Message]) -> dict[str, Any]:
    """`migrate-config --output-format json`, for either destination (NeMo 2.0 `Mapping`, Megatron-Bridge
    `BridgeMapping`): arguments as (name, value, setting, origin, comment, where), omitted settings as (setting,
    argument, value, reason, where), `where` a YAML position or None."""
    def loc(where: Location | None) -> dict[str, int] | None:
        return {"row": where.row, "column": where.column} if where is not None else None

    return {
        "config": config,
        "kind": kind,
        "target": target,
        "source": {"nemo": str(source.nemo)} if source.nemo else None,
        "class": class_name,
        "refused": refused,
        "arguments": [
            {"name": name, "value": value, "setting": setting, "origin": origin, "comment": comment,
             "location": loc(where)}
            for name, value, setting, origin, comment, where in arguments
        ],
        "omitted": [
            {"setting": setting, "argument": argument, "value": value, "reason": reason, "location": loc(where)}
            for setting, argument, value, reason, where in omitted
        ],
        "messages": [
            {"severity": m.severity, "code": m.code, "message": m.text, "setting": m.setting,
             "location": loc(m.location)}
            for m in messages
        ],
    }


def py(value: Scalar) -> str:
    """A value as emitted in Python (strings in double quotes, like the emitted code)."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


# ================================================================================================= entry points
def load_mapping(path: str | Path, table: Table, target: Target, source: Source, *, force: bool = False) -> Mapping:
    """Read and map a NeMo 1.0 YAML file; MigratorError (exit 2) for a file that is not one."""
    from migrator.engine.runner import read_text

    display = str(path)
    text = read_text(Path(path), display)
    return map_text(text, display, table, target, source, force=force)


def parse_nemo1(text: str, filename: str, nemo2_refusal: str) -> tuple[Document, checks.Config]:
    """A NeMo 1.0 YAML, parsed and classified; a NeMo 2.0 one (a `strategy:` block) is refused with `nemo2_refusal`,
    at the block's key."""
    document = parse(text, filename)
    config = nemo1_config(document, filename)
    if config.kind == "nemo2":
        key = config.strategy[0]
        raise MigratorError(f"{filename}:{key.start.row}:{key.start.column}: {nemo2_refusal}")
    return document, config


def map_text(text: str, filename: str, table: Table, target: Target, source: Source, *,
             force: bool = False) -> Mapping:
    document, config = parse_nemo1(text, filename, "already a NeMo 2.0 config (its `strategy:` block holds the "
                                   "MegatronStrategy arguments): nothing to migrate; `nemo-migrate lint` judges that "
                                   "block")
    if config.kind == "training" and config.model is not None and config.checkpoints in ("none", "fsdp"):
        why = ("an FSDP config (model.fsdp: True) writes FSDP checkpoints" if config.checkpoints == "fsdp" else
               "no Megatron GPT/BERT/T5/Mamba model config (no mcore_* flag, no dist_ckpt_* key)")
        raise MigratorError(f"{filename}: {why}: it has no megatron-core distributed-checkpoint settings to "
                            "migrate")
    if config.kind == "training" and config.model is None:
        raise MigratorError(f"{filename}: a training config without a `model:` mapping has no checkpoint settings "
                            "to migrate")
    findings = checks.check_document(document, table, target, source)
    mapping = Mapping(filename, target, source, force, document, config, findings=findings)
    _Mapper(mapping, table).run()
    return mapping


def nemo1_config(document: Document, filename: str) -> checks.Config:
    """The one config a YAML file to migrate holds (either destination); MigratorError (exit 2) for a file that holds
    no NeMo config, several, or a Megatron-Bridge YAML (nothing to migrate from it)."""
    configs = [c for c in (checks.classify(root) for root in document.roots) if c is not None]
    bridge = next((c for c in configs if c.kind == "bridge"), None)
    if bridge is not None:
        key = bridge.checkpoint[0]
        raise MigratorError(f"{filename}:{key.start.row}:{key.start.column}: already a Megatron-Bridge YAML (its "
                            "top-level `checkpoint:` block holds Bridge fields), not a NeMo 1.0 config; lint it "
                            "with `nemo-migrate lint`")
    if not configs:
        raise MigratorError(f"{filename}: not a NeMo 1.0 config (no `model:` mapping, trainer/exp_manager or "
                            "model fields)")
    if len(configs) > 1:
        raise MigratorError(f"{filename}: holds {len(configs)} NeMo configs (YAML documents); migrate one at a time")
    return configs[0]


# ================================================================================================= the mapping
class _Mapper:
    def __init__(self, mapping: Mapping, table: Table):
        self.m = mapping
        self.table = table
        self.ctx = checks.Context(mapping.document, mapping.config, table, mapping.target, mapping.source)
        self.handled: set[Location] = set()  # where the findings about carried settings start

    def run(self) -> None:
        for setting in self.table.settings.settings:
            pair = self.ctx.setting_pair(setting)
            if pair is None:
                self.absent(setting)
            else:
                self.present(setting, *pair)
        self.file_messages()
        self.m.messages.sort(key=lambda msg: ({"error": 0, "warning": 1, "info": 2}[msg.severity],
                                             msg.location or Location(0, 0)))

    # --------------------------------------------------------------------------------------------- helpers
    def findings_on(self, key: Node, value: Node) -> dict[str, Diagnostic]:
        spans = {key.start, value.start}
        return {d.code: d for d in self.m.findings if d.location in spans}

    def message(self, severity: MessageSeverity, d: Diagnostic, setting: str | None, extra: str = "") -> None:
        self.m.messages.append(Message(severity, d.message + extra, d.code, d.location, setting))

    def path(self, setting: Setting) -> str:
        if setting.in_model and self.m.config.kind == "model":
            return setting.key
        return setting.path

    def add(self, setting: Setting, value: Scalar, origin: str, comment: str | None,
            key: Node | None = None, value_node: Node | None = None) -> None:
        self.m.arguments.append(MappedArgument(
            name=setting.target.argument, value=value, setting=setting.key, origin=origin, comment=comment,
            key=key, value_node=value_node, yaml_path=self.path(setting),
            parent=self.parent(setting) if key is not None else None))

    def parent(self, setting: Setting) -> Node | None:
        if setting.in_model:
            return self.m.config.model
        return self.ctx.lookup(".".join(setting.path.split(".")[:-1]))

    def omit(self, setting: Setting, value: Scalar, reason: str, key: Node | None) -> None:
        self.m.omitted.append(Omitted(setting.key, setting.target.argument, value, reason, key))

    def available(self, setting: Setting) -> bool:
        return self.m.target.nemo >= Version.parse(self.table.argument_by_name[setting.target.argument].since)

    # --------------------------------------------------------------------------------------------- a key the YAML sets
    def present(self, setting: Setting, key: Node, value: Node) -> None:
        self.handled.update((key.start, value.start))
        found = self.findings_on(key, value)
        arg = setting.target.argument
        if "NM112" in found:  # an interpolation: only Hydra knows the value
            self.message("warning", found["NM112"], setting.key, f"; set {arg}=... by hand")
            self.omit(setting, value.raw, "an OmegaConf interpolation, resolved only by Hydra", key)
            return
        # only a lint error refuses: wherever migrate-config refuses a file, the lint reports an error on it
        refusing = [found[c] for c in sorted(REFUSE & set(found)) if found[c].severity == "error"]
        for d in refusing:
            if self.m.force:
                self.message("warning", d, setting.key, " (carried anyway: --force)" if d.code in ("NM105", "NM106")
                             else " (left out: --force)")
            else:
                self.message("error", d, setting.key, self.refusal_hint(setting, d))
        if any(d.code in ("NM101", "NM102") for d in refusing):
            self.omit(setting, value.raw, "a value NeMo does not accept", key)
            return
        if refusing and not self.m.force:
            self.omit(setting, value.value, "refused (see the error)", key)
            return
        for code in sorted(WARN & set(found)):
            self.message("warning", found[code], setting.key)
        for code in sorted(NOTE & set(found)):
            self.message("info", found[code], setting.key)
        if not self.available(setting):
            since = self.table.argument_by_name[arg].since
            self.omit(setting, value.value, f"MegatronStrategy has no {arg} before NeMo {since} "
                      f"(target nemo={self.m.target.nemo})", key)
            return
        self.add(setting, value.value, "yaml", self.comment(setting, value.value, found, explicit=True),
                 key, value)

    def refusal_hint(self, setting: Setting, d: Diagnostic) -> str:
        if d.code == "NM106":
            return (f"; change {setting.key} in the YAML (the fix: `nemo-migrate lint --unsafe-fixes --fix`), or pass "
                    f"--force to carry the value anyway")
        if d.code == "NM105":
            return "; delete the copy you do not mean, or pass --force to carry the last one"
        return f"; correct it, or pass --force to leave {setting.key} out"

    def comment(self, setting: Setting, value: Scalar, found: dict[str, Diagnostic], *, explicit: bool) -> str | None:
        arg = self.table.argument_by_name[setting.target.argument]
        parts: list[str] = []
        if not setting.read_by_nemo1:
            parts.append(f"NeMo 1.0 ignored this key (always {py(setting.nemo1_default[-1].value)}); NeMo 2.0 "
                         "applies it")
        if setting.key == "dist_ckpt_parallel_dist_opt":
            parts.append(f"same value as {setting.key} (NeMo's migration page inverts it)")
        elif setting.key == "dist_ckpt_load_on_device" and "NM110" in found:
            parts.append("only takes effect when the save format is zarr")
        old = self.ctx.default_for_source(setting)
        if explicit and old is not checks.UNKNOWN and old != arg.default and value == old:
            parts.append(f"NeMo 2.0 defaults to {py(arg.default)}")
        lifecycle = setting.values.get(str(value)) if isinstance(value, str) else None
        if lifecycle is not None:
            for stage, label in ((lifecycle.removed, "removed"), (lifecycle.deprecated, "deprecated")):
                if stage is not None and self.m.target.reached(nemo=stage.nemo, megatron_core=stage.megatron_core):
                    parts.append(f"{label} in megatron-core {stage.megatron_core}"
                                 + (" (--force)" if label == "removed" else ""))
                    break
        return "; ".join(parts) or None

    # --------------------------------------------------------------------------------------------- a key it leaves out
    def absent(self, setting: Setting) -> None:
        if not self.m.config.distributed:
            return  # no megatron-core distributed checkpoints (legacy, FSDP): NeMo 1.0 never used these settings
        if not setting.in_model and self.m.config.kind != "training":
            return  # async_save lives in exp_manager, which a model config does not hold
        old = self.ctx.default_for_source(setting)
        arg = self.table.argument_by_name[setting.target.argument]
        if old is checks.UNKNOWN or old == arg.default or not self.available(setting):
            return
        comment = f"NeMo 1.0 default (not set in the YAML); NeMo 2.0 defaults to {py(arg.default)}"
        # the lint's own finding on a removed or deprecated default (NM106 / NM107 on the model key): the mapping
        # refuses exactly where the lint reports an error, so the two cannot disagree
        d = self.implicit_finding(setting)
        if d is not None:
            if d.severity == "error" and not self.m.force:
                self.message("error", d, setting.key, "; or pass --force to carry the old default")
                self.omit(setting, old, "refused (see the error)", None)
                return
            self.message("warning", d, setting.key, " (carried anyway: --force)" if d.severity == "error" else "")
            comment += f"; {'removed' if d.code == 'NM106' else 'deprecated'} (see the {d.code} message)"
        self.add(setting, old, "nemo1-default", comment)

    def implicit_finding(self, setting: Setting) -> Diagnostic | None:
        key = self.m.config.model_key
        if key is None:
            return None
        return next((d for d in self.m.findings if d.code in ("NM106", "NM107") and d.location == key.start
                     and d.message.startswith(f"{setting.key} is not set")), None)

    # --------------------------------------------------------------------------------------------- file-level findings
    def file_messages(self) -> None:
        """Findings not tied to a setting the mapping carries: unknown and misplaced keys (NeMo 1.0 ignored them, so
        they are not carried), legacy checkpoints, duplicates elsewhere."""
        seen = {(m.code, m.location) for m in self.m.messages}
        for d in self.m.findings:
            if (d.code, d.location) in seen or d.location in self.handled:
                continue
            if d.code in ("NM103", "NM104"):
                self.message("warning", d, None, "; not carried (NeMo 1.0 ignored it too)")
            elif d.code == "NM116":
                self.message("warning", d, None)
            elif d.code == "NM105":
                self.message("warning", d, None)  # a duplicate outside the checkpoint settings
            elif d.code == "NM114":
                self.message("info", d, None)  # the distributed optimizer with the default format


def config_mapping(path: str, table: Table, target: Target, source: Source) -> Mapping:
    """The mapping of `lint --config OLD.yaml`, read once per run (keyed by the file's identity): the CLI's check
    of a bad --config and every script it is compared with share it."""
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise MigratorError(f"{path}: cannot read: {exc.strerror}") from None
    return _config_mapping(path, stat.st_mtime_ns, stat.st_size, table, target, source)


@functools.lru_cache(maxsize=8)
def _config_mapping(path: str, _mtime: int, _size: int, table: Table, target: Target, source: Source) -> Mapping:
    return load_mapping(path, table, target, source)
