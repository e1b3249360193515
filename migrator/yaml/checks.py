"""The YAML lint rules: NeMo 1.0 configs judged against the rule table, the target and the source.

Each rule is one function below, named after its rule code's slug; the table (`rules/settings.yaml`,
`rules/lint/*.yaml`) holds the facts, messages' vocabulary, docs and examples. A check only judges what the file
itself holds: keys inherited through a Hydra `defaults:` list are unknown here and never reported as missing.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from migrator.engine.diagnostics import Diagnostic, Edit, Fix, Location
from migrator.engine.table import Condition, Setting, Table
from migrator.engine.verdicts import (
    bool_spelling, closest, closest_allowed, coerce_literal, lifecycle_stage, note_applies, with_article,
)
from migrator.versions import BridgeTarget, Source, Target, Version
from migrator.yaml.bridge import check_bridge
from migrator.yaml.document import Document, Node, type_name
from migrator.yaml.strategy_block import check_strategy_block
from migrator.yaml.kinds import MCORE_FLAGS, Config, classify

UNKNOWN = object()  # a value that cannot be known statically (absent with no known default, or an interpolation)

CALLBACK_PATH = ("exp_manager", "checkpoint_callback_params")


@dataclass
class Context:
    document: Document
    config: Config
    table: Table
    target: Target
    source: Source
    findings: list[Diagnostic] = field(default_factory=list)

    # ---------------------------------------------------------------------------------------------- reporting
    def report(self, code: str, start: Location, end: Location, message: str, *, fix: Fix | None = None,
               severity: str | None = None) -> None:
        rule = self.table.rule_by_code[code]
        self.findings.append(Diagnostic(
            code=code, name=rule.name, message=message, severity=severity or rule.severity,
            filename=self.document.filename, location=start, end_location=end, fix=fix,
        ))

    def report_node(self, code: str, node: Node, message: str, **kwargs: Any) -> None:
        self.report(code, node.start, node.end, message, **kwargs)

    # ---------------------------------------------------------------------------------------------- values
    def default_for_source(self, setting: Setting) -> Any:
        """NeMo 1.0's value for an absent key, for the source release (the newest behaviour if unknown)."""
        for default in setting.nemo1_default:
            if default.source_before is None:
                return default.value
            if self.source.nemo is not None and self.source.nemo < Version.parse(default.source_before):
                return default.value
        return UNKNOWN  # pragma: no cover - the table guarantees a catch-all last entry

    def lookup(self, path: str) -> Node | None:
        """A node by dotted path; `model.` means the model mapping in both kinds of config."""
        parts = path.split(".")
        if parts[0] == "model":
            node, parts = self.config.model, parts[1:]
        else:
            node = self.config.root
        for part in parts:
            if node is None or node.kind != "mapping":
                return None
            node = node.get(part)
        return node

    def effective(self, setting: Setting) -> Any:
        node = self.setting_value(setting)
        if node is None:
            return self.default_for_source(setting)
        return UNKNOWN if node.kind != "scalar" or is_interpolation(node) else node.value

    def setting_pair(self, setting: Setting) -> tuple[Node, Node] | None:
        """(key node, value node) of a setting where this config holds it, else None."""
        if setting.in_model:
            return self.config.model.pair(setting.key) if self.config.model is not None else None
        parent = self.lookup(".".join(setting.path.split(".")[:-1])) if self.config.kind == "training" else None
        return parent.pair(setting.key) if parent is not None and parent.kind == "mapping" else None

    def legacy_model(self) -> bool:
        """A pre-megatron-core model (`mcore_gpt: False`, or no flag, which NeMo reads as False): its checkpoints
        are legacy, non-distributed ones."""
        return self.config.checkpoints == "legacy"

    def setting_value(self, setting: Setting) -> Node | None:
        if setting.in_model:
            return self.config.model.get(setting.key) if self.config.model is not None else None
        return self.lookup(setting.path)

    def condition_holds(self, condition: Condition) -> bool | None:
        if condition.setting:
            value = self.effective(self.table.setting_by_key[condition.setting])
        else:
            node = self.lookup(condition.path or "")
            value = UNKNOWN if node is None or node.kind != "scalar" or is_interpolation(node) else node.value
        if value is UNKNOWN:
            return None
        if condition.one_of is not None:
            return value in condition.one_of
        return value not in (condition.not_one_of or [])

    def target_note(self) -> str:
        return f"target {self.target.describe()}"


def is_interpolation(node: Node) -> bool:
    return node.kind == "scalar" and isinstance(node.raw, str) and "${" in node.raw


def replace_scalar(node: Node, text: str) -> Edit:
    """An edit replacing a scalar, keeping its quotes if it had any."""
    if node.style in ("'", '"'):
        text = f"{node.style}{text}{node.style}"
    return Edit(text, node.start, node.end)


# ================================================================================================ per-setting rules
# Each takes (ctx, setting, key node, value node) and returns False when later checks must not judge the value.


def unchecked_interpolation(ctx: Context, setting: Setting, key: Node, value: Node) -> bool:
    if not is_interpolation(value):
        return True
    ctx.report_node("NM112", value, f"{setting.key} is an OmegaConf interpolation ({value.raw}); its value is only "
                    "known after Hydra composes the config, so it is not checked")
    return False


def yaml11_boolean(ctx: Context, setting: Setting, key: Node, value: Node) -> bool:
    if value.is_plain and isinstance(value.value, bool) and value.raw not in ("true", "True", "TRUE", "false", "False", "FALSE"):
        spelled = bool_spelling(value.value)
        ctx.report_node(
            "NM113", value,
            f"{setting.key}: {value.raw} is the boolean {spelled} for NeMo (YAML 1.1) but the string "
            f"{value.raw!r} for YAML 1.2 tools; write {spelled}",
            fix=Fix("safe", f"Write `{spelled}`", (Edit(spelled, value.start, value.end),)),
        )
    return True


def invalid_type(ctx: Context, setting: Setting, key: Node, value: Node) -> bool:
    if value.kind != "scalar":
        ctx.report_node("NM101", value, f"{setting.key} must be {with_article(setting.type)}, not a {value.kind}")
        return False
    actual = value.value
    if actual is None:
        if setting.nullable:
            return True
        ctx.report_node("NM101", value, f"{setting.key} is null where NeMo expects {with_article(setting.type)}; "
                        f"NeMo passes None on, which behaves as False")
        return False
    kind = type_name(actual)
    if kind == setting.type:
        return True
    fix_text = coerce_literal(actual, setting.type)
    shown = f"the string {value.raw!r}" if kind == "str" else f"{kind} {value.raw}"
    why = ""
    if setting.type == "bool" and kind == "str":
        why = " (a non-empty string is truthy: NeMo behaves as if it were True)"
    yaml12 = f" (YAML 1.2 tools read it as {value.yaml12_type})" if value.yaml12_differs else ""
    fix = None
    if fix_text is not None:
        fix = Fix("unsafe", f"Write `{fix_text}`", (Edit(fix_text, value.start, value.end),))
    ctx.report_node("NM101", value, f"{setting.key} must be {with_article(setting.type)}; NeMo reads {shown}{why}{yaml12}", fix=fix)
    return False


def invalid_value(ctx: Context, setting: Setting, key: Node, value: Node) -> bool:
    actual = value.value
    if actual is None:
        return True
    if setting.minimum is not None and isinstance(actual, int) and actual < setting.minimum:
        ctx.report_node("NM102", value, f"{setting.key} must be at least {setting.minimum}, got {actual}")
        return False
    if setting.allowed is None or actual in setting.allowed:
        return True
    allowed = [str(a) for a in setting.allowed]
    close = closest_allowed(actual, setting.allowed)
    hint = f"; did you mean {close!r}?" if close else ""
    fix = Fix("unsafe", f"Use {close!r}", (replace_scalar(value, close),)) if close else None
    ctx.report_node("NM102", value, f"{setting.key}: {actual!r} is not one of {', '.join(allowed)}{hint}", fix=fix)
    return False


def value_lifecycle(ctx: Context, setting: Setting, key: Node, value: Node) -> bool:
    """NM106 removed-value / NM107 deprecated-value, by the target's component versions."""
    lifecycle = setting.values.get(str(value.value))
    if lifecycle is None:
        return True
    verdict = lifecycle_stage(lifecycle, ctx.target)
    if verdict is None:
        return True
    code, stage = verdict
    parts = [f"{setting.key}: {value.value} — {stage.message} ({ctx.target_note()})"]
    if lifecycle.convert_hint:
        parts.append(lifecycle.convert_hint)
    fix = None
    if lifecycle.replacement:
        parts[0] += f"; use {lifecycle.replacement}"
        fix = Fix("unsafe", f"Use {lifecycle.replacement!r}", (replace_scalar(value, lifecycle.replacement),))
    ctx.report_node(code, value, "; ".join(parts), fix=fix)
    return code != "NM106"


def unavailable_in_target(ctx: Context, setting: Setting, key: Node, value: Node) -> bool:
    since = Version.parse(setting.target.since)
    if ctx.target.nemo >= since or value.value == setting.target.default or (
            value.value in setting.target.same_as_default):
        return True
    ctx.report_node(
        "NM109", key,
        f"{setting.key}: MegatronStrategy has no {setting.target.argument} before NeMo {setting.target.since} "
        f"({ctx.target_note()}); the migration cannot carry {value.value!r} and the default applies",
    )
    return True


def no_effect(ctx: Context, setting: Setting, key: Node, value: Node) -> bool:
    if not setting.read_by_nemo1:
        arg = setting.target.argument
        ctx.report_node(
            "NM110", key,
            f"{setting.key} has no effect: NeMo 1.0 never reads it (always {setting.nemo1_default[-1].value}); "
            f"NeMo 2.0's {arg} does take effect, so migrating {value.raw} "
            + ("changes behaviour" if value.value != setting.nemo1_default[-1].value else "keeps behaviour"),
        )
        return True
    for rule in setting.no_effect:
        if ctx.condition_holds(rule.when) and not (rule.unless is not None and ctx.condition_holds(rule.unless)):
            here = ""
            if rule.when.path:
                here = f"; here {rule.when.path.removeprefix('model.')} is {ctx.lookup(rule.when.path).value!r}"
            ctx.report_node("NM110", key, f"{setting.key} has no effect here: {rule.message}{here}")
            break
    return True


def default_changed(ctx: Context, setting: Setting, key: Node, value: Node) -> bool:
    old = ctx.default_for_source(setting)
    new = setting.target.default
    if old is UNKNOWN or old == new or value.value != old:
        return True
    ctx.report_node(
        "NM111", key,
        f"{setting.key}: {value.raw} is NeMo 1.0's default, but NeMo 2.0's {setting.target.argument} defaults to "
        f"{_py(new)}; the migration must pass {setting.target.argument}={_py(value.value)} explicitly",
    )
    return True


def argument_notes(ctx: Context, setting: Setting, key: Node, value: Node) -> bool:
    """NM114: a migration note for the setting's NeMo 2.0 argument value on a range of targets."""
    for note in ctx.table.strategy.notes:
        if note.argument != setting.target.argument or value.value != note.value:
            continue
        if not note_applies(note, ctx.target):
            continue
        optim = ctx.lookup("model.optim.name")
        if optim is not None and optim.kind == "scalar" and optim.value != "mcore_distributed_optim":
            continue  # only the megatron-core distributed optimizer writes that format
        ctx.report_node("NM114", key, f"{setting.key}: {value.raw} maps to {note.argument}={_py(value.value)}: "
                        f"{note.message} ({ctx.target_note()})")
    return True


def _py(value: Any) -> str:
    """A value as it would be written in Python (`True`, `None`, `'zarr'`)."""
    return repr(value)


SETTING_RULES: list[Callable[[Context, Setting, Node, Node], bool]] = [
    unchecked_interpolation, yaml11_boolean, invalid_type, invalid_value, value_lifecycle,
    unavailable_in_target, no_effect, default_changed, argument_notes,
]


# ================================================================================================ file rules
def duplicate_key(ctx: Context) -> None:
    for _, mapping in ctx.config.root.walk_mappings():
        for first, key in mapping.duplicate_keys():  # what a merge key brings in may be overridden: no duplicate
            ctx.report_node("NM105", key, f"duplicate key {key.raw!r} (first at line {first.start.row}); "
                            "OmegaConf refuses the file, so NeMo does not start")


def unknown_setting(ctx: Context) -> None:
    table = ctx.table
    model_keys = [s.key for s in table.settings.settings if s.in_model]
    by_argument = {s.target.argument: s.key for s in table.settings.settings if s.in_model}
    if ctx.config.model is not None:
        _unknown_in(ctx, ctx.config.model, model_keys, by_argument, prefix="dist_ckpt")
    callback = ctx.lookup(".".join(CALLBACK_PATH)) if ctx.config.kind == "training" else None
    if callback is not None and callback.kind == "mapping":
        others = [s.key for s in table.settings.settings if not s.in_model]
        _unknown_in(ctx, callback, others, {"ckpt_async_save": "async_save"}, prefix=None)


def _unknown_in(ctx: Context, mapping: Node, known: list[str], renamed: dict[str, str], prefix: str | None) -> None:
    present = {k.raw for k, _ in mapping.items if k.kind == "scalar"}
    for key, value in mapping.items:
        name = key.raw
        if key.kind != "scalar" or not isinstance(name, str) or name in known:
            continue
        if name in renamed:
            matches = [renamed[name]]
            why = f"{name} is the NeMo 2.0 MegatronStrategy argument; NeMo 1.0 reads {renamed[name]}"
        else:
            matches = closest(name, known)
            if not matches and not (prefix and name.startswith(prefix)):
                continue
            why = f"{name} is not a setting NeMo reads, so it is silently ignored"
        fix = None
        if len(matches) == 1:
            why += f"; did you mean {matches[0]}?"
            unfit = _unfit_value(ctx.table, matches[0], value)
            if unfit:  # renaming would make NeMo read a value the setting cannot take (a list where a flag is)
                why += f" (no fix: the value is {unfit})"
            elif matches[0] not in present:
                fix = Fix("unsafe", f"Rename to {matches[0]}", (Edit(matches[0], key.start, key.end),))
        elif matches:
            why += f"; did you mean one of {', '.join(matches)}?"
        ctx.report_node("NM103", key, why, fix=fix)


def _unfit_value(table: Table, key: str, value: Node) -> str | None:
    """Why `value` cannot be the value of setting `key` (a sequence or mapping, or a scalar neither of its type nor
    coercible to it), or None when it can (or the setting's type is not known)."""
    setting = next((s for s in table.settings.settings if s.key == key), None)
    if setting is None:
        return None
    if value.kind != "scalar":
        return f"a {value.kind}, where {key} takes {with_article(setting.type)}"
    actual = value.value
    if actual is None or type_name(actual) == setting.type or coerce_literal(actual, setting.type) is not None:
        return None
    return f"{type_name(actual)} {value.raw}, where {key} takes {with_article(setting.type)}"


def misplaced_setting(ctx: Context) -> None:
    table = ctx.table
    right_model = ctx.config.model_path()
    # a key node NeMo reads at the right place (directly, or through a merge key `<<: *anchor`) is not misplaced
    # where its anchor is defined
    callback = ctx.lookup(".".join(CALLBACK_PATH)) if ctx.config.kind == "training" else None
    holders = {True: ctx.config.model, False: callback}  # by setting.in_model
    in_place = {where: {id(k) for k, _ in h.items} if h is not None and h.kind == "mapping" else set()
                for where, h in holders.items()}
    templates = {id(m) for h in holders.values() if h is not None and h.kind == "mapping"
                 for m in h.merged_mappings()}  # anchors merged into them
    for path, mapping in ctx.config.root.walk_mappings():
        if id(mapping) in templates:
            continue
        for key in mapping.keys_named(table.setting_by_key):
            setting = table.setting_by_key[key.raw]
            if id(key) in in_place[setting.in_model]:
                continue
            if setting.in_model:
                if path == right_model:
                    continue
                where = "model" if ctx.config.kind == "training" else "the top level of a model config"
                right = f"model.{setting.key}" if ctx.config.kind == "training" else setting.key
            else:
                if ctx.config.kind == "training" and path == CALLBACK_PATH:
                    continue
                if path not in ((), ("model",), ("exp_manager",), ("trainer",), ("model", "checkpoint_callback_params"),
                                ("trainer", "checkpoint_callback_params")) and ctx.config.kind == "training":
                    continue  # a key of that name deep in an unrelated sub-config is not ours to judge
                where, right = "exp_manager.checkpoint_callback_params", setting.path
            here = ".".join(path) or "the top level"
            ctx.report_node("NM104", key, f"{setting.key} at {here} is ignored: NeMo reads {right} "
                            f"(move it under {where})")


def implicit_defaults(ctx: Context) -> None:
    """One NM111 note for a training config on the settings it leaves to NeMo 1.0 defaults that NeMo 2.0 changed."""
    if ctx.config.kind != "training" or ctx.config.model_key is None or not ctx.config.distributed \
            or not ctx.config.saves:
        return  # only a run that writes megatron-core distributed checkpoints has these defaults
    changed = []
    for setting in ctx.table.settings.settings:
        if ctx.setting_value(setting) is not None:
            continue
        old, new = ctx.default_for_source(setting), setting.target.default
        if old is UNKNOWN or old == new:
            continue
        note = f"{setting.key} ({_py(old)} -> {setting.target.argument}={_py(new)})"
        if setting.key == "dist_ckpt_format" and ctx.source.nemo is not None:
            note += f" [source nemo={ctx.source.nemo}]"
        changed.append(note)
    if not changed:
        return
    inherited = " unless a file in the Hydra defaults list sets them" if ctx.config.root.get("defaults") else ""
    ctx.report_node(
        "NM111", ctx.config.model_key,
        "relies on NeMo 1.0 checkpoint defaults that NeMo 2.0 changed: " + ", ".join(changed)
        + f"; set them explicitly when migrating{inherited}",
    )


def non_distributed_checkpoint(ctx: Context) -> None:
    if ctx.config.kind != "training" or not ctx.legacy_model():
        return
    family = ctx.config.family or "GPT"
    if ctx.config.flag is not None:
        key, value = ctx.config.flag
        where, said = key, f"{key.raw}: {value.raw}"
    else:
        flag = next(f for f, fam in MCORE_FLAGS.items() if fam == family)
        where = ctx.config.model_key
        said = (f"model.{flag} is not set, and NeMo's Megatron {family} model reads a missing {flag} as False: "
                "this config")
    ctx.report_node("NM116", where, f"{said} saves legacy non-distributed checkpoints, which NeMo 2.0 cannot load "
                    f"and the dist_ckpt settings do not apply to; {legacy_remedy(family)}")


def legacy_remedy(family: str) -> str:
    """What to do with a pre-megatron-core model's checkpoints, by model family."""
    if family == "GPT":
        return "`nemo-migrate convert` converts them (and their .nemo files) to NeMo 2.0 directly"
    # NeMo ships converters for GPT only (scripts/checkpoint_converters/convert_gpt_nemo_to_mcore.py, v1.23 to v2.4)
    return (f"NeMo has no converter for legacy {family} checkpoints: train with the megatron-core model "
            f"(mcore_{family.lower()}: True) before moving to NeMo 2.0, or keep NeMo 1.0 for these checkpoints")


def implicit_removed_value(ctx: Context) -> None:
    """NM106 / NM107 for a key the config leaves out whose NeMo 1.0 default (for the `--source` release) the target
    removed or deprecated: zarr, the format before NeMo 2.0.0. `migrate-config` refuses exactly this finding."""
    if ctx.config.kind != "training" or ctx.config.model_key is None or not ctx.config.distributed:
        return
    for setting in ctx.table.settings.settings:
        if not setting.in_model or ctx.setting_value(setting) is not None:
            continue
        old = ctx.default_for_source(setting)
        lifecycle = setting.values.get(str(old)) if isinstance(old, str) else None
        verdict = lifecycle_stage(lifecycle, ctx.target) if lifecycle is not None else None
        if verdict is None:
            continue
        code, stage = verdict
        message = (f"{setting.key} is not set, and NeMo 1.0 defaulted it to {old} for a config from NeMo "
                   f"{ctx.source.nemo}: {stage.message} ({ctx.target_note()})")
        if lifecycle.convert_hint:
            message += f"; {lifecycle.convert_hint}"
        if lifecycle.replacement:
            message += f"; set {setting.key}: {lifecycle.replacement} if new checkpoints may use it"
        ctx.report_node(code, ctx.config.model_key, message)


def conflicting_settings(ctx: Context) -> None:
    """NM115: async_save True with the zarr format. NeMo (DistributedCheckpointIO in 1.0, MegatronCheckpointIO in
    2.x) raises ValueError('Async dist-ckpt save supported only for torch_dist format') at the first save."""
    if ctx.config.kind != "training" or not ctx.config.distributed:
        return
    fmt = ctx.table.setting_by_key["dist_ckpt_format"]
    asynchronous = ctx.table.setting_by_key["async_save"]
    pair = ctx.setting_pair(asynchronous)
    if pair is None or ctx.effective(asynchronous) is not True or ctx.effective(fmt) != "zarr":
        return
    where = ("set in the YAML" if ctx.setting_value(fmt) is not None
             else f"NeMo 1.0's default for a config from NeMo {ctx.source.nemo}")
    ctx.report_node("NM115", pair[0], f"async_save: {pair[1].raw} with dist_ckpt_format zarr ({where}): NeMo "
                    "raises ValueError ('Async dist-ckpt save supported only for torch_dist format') at the first "
                    "save; use dist_ckpt_format: torch_dist or async_save: False")


def distopt_default(ctx: Context) -> None:
    """NM114 where the config uses the megatron-core distributed optimizer and leaves dist_ckpt_parallel_dist_opt
    at its default (True, which maps to ckpt_parallel_save_optim=True)."""
    setting = ctx.table.setting_by_key["dist_ckpt_parallel_dist_opt"]
    optim = ctx.lookup("model.optim.name")
    if not ctx.config.distributed or ctx.setting_value(setting) is not None or optim is None \
            or optim.kind != "scalar" or optim.value != "mcore_distributed_optim":
        return
    value = ctx.default_for_source(setting)
    for note in ctx.table.strategy.notes:
        if note.argument == setting.target.argument and value == note.value and note_applies(note, ctx.target):
            ctx.report_node("NM114", optim, f"optim.name: mcore_distributed_optim leaves {setting.key} at its "
                            f"default {_py(value)}, which maps to {note.argument}={_py(value)}: {note.message} "
                            f"({ctx.target_note()})")


FILE_RULES: list[Callable[[Context], None]] = [
    duplicate_key, unknown_setting, misplaced_setting, implicit_defaults, implicit_removed_value,
    conflicting_settings, distopt_default, non_distributed_checkpoint,
]


# ================================================================================================ entry point
def check_document(document: Document, table: Table, target: Target, source: Source,
                   bridge_target: BridgeTarget | None = None) -> list[Diagnostic]:
    """Every finding on a YAML file, each document judged by its kind (`bridge_target`: where a Megatron-Bridge
    YAML is judged, None: the newest release)."""
    findings: list[Diagnostic] = []
    for root in document.roots:
        config = classify(root)
        if config is None:
            continue
        if config.kind == "bridge":
            findings.extend(check_bridge(document, config, table, bridge_target))
            continue
        ctx = Context(document, config, table, target, source)
        if config.kind == "nemo2":
            check_strategy_block(ctx)
            findings.extend(ctx.findings)
            continue
        for file_rule in FILE_RULES:
            file_rule(ctx)
        for setting in table.settings.settings:
            pair = ctx.setting_pair(setting)
            if pair is None:
                continue
            for rule in SETTING_RULES:
                if not rule(ctx, setting, *pair):
                    break
        findings.extend(ctx.findings)
    # a node reached twice (an alias, a merge key) is judged once per place, but reported once
    unique = {(d.code, d.location, d.end_location, d.message): d for d in findings}
    return list(unique.values())
