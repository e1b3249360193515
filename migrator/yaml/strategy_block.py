"""A NeMo 2.0 YAML's `strategy:` block (kind "nemo2"), judged against NeMo 2.0's MegatronStrategy arguments.

NeMo 2.0 YAMLs (e.g. NeMo's speechlm configs, read by Hydra/OmegaConf into `MegatronStrategy(**strategy)`) hold
the arguments themselves, so they are judged as a Python call with literal keywords is: unknown or removed
`ckpt_*` keywords (swallowed by **kwargs), types, allowed values, removed formats, arguments newer than the
target, conflicting pairs, NM114's note. Nothing is migrated over them (`migrate-config` refuses such a file).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from migrator.engine.diagnostics import Edit, Fix
from migrator.engine.verdicts import (
    bool_spelling, closest, closest_allowed, lifecycle_stage, note_applies, with_article,
)
from migrator.versions import Version
from migrator.yaml.document import Node, type_name

if TYPE_CHECKING:
    from migrator.yaml.checks import Context


def check_strategy_block(ctx: Context) -> None:
    _, block = ctx.config.strategy
    table = ctx.table
    arguments = table.argument_by_name
    removed = {r.name: r for r in table.strategy.removed_arguments}
    wrong = {w.name: w for w in table.strategy.wrong_names}
    written: dict[str, Any] = {}
    for key, value in block.items:
        name = key.raw if key.kind == "scalar" else None
        if not isinstance(name, str) or name.startswith("_"):
            continue
        if name in arguments:
            literal = _literal(value)
            if literal is not _UNKNOWN:
                written[name] = (key, literal)
                _argument(ctx, arguments[name], key, value, literal)
        elif name in removed:
            r = removed[name]
            instead = ("use " + " and ".join(r.replaced_by) + " instead") if r.replaced_by else "delete it"
            ctx.report_node("NM108", key, f"{name} was removed before NeMo {r.removed} ({r.why}); {instead}")
        elif name in wrong or "ckpt" in name or closest(name, list(arguments)):
            w = wrong.get(name)
            matches = [w.use] if w else closest(name, list(arguments))
            message = f"{name} is not a MegatronStrategy argument: **kwargs swallows it, so it does nothing"
            if w:
                message += f" ({w.why})"
            if len(matches) == 1:
                message += f"; did you mean {matches[0]}?"
            ctx.report_node("NM103", key, message)
    for conflict in table.strategy.conflicts:
        values = {n: written[n][1] if n in written else arguments[n].default for n in conflict.when}
        if any(n in written for n in conflict.when) and all(values[n] == v for n, v in conflict.when.items()):
            key = next(written[n][0] for n in conflict.when if n in written)
            ctx.report_node("NM115", key, f"{conflict.message} (strategy block, target {ctx.target.describe()})")


_UNKNOWN = object()


def _literal(value: Node) -> Any:
    if value.kind != "scalar" or (isinstance(value.raw, str) and "${" in value.raw):
        return _UNKNOWN
    return value.value


def _argument(ctx: Context, argument: Any, key: Node, value: Node, literal: Any) -> None:
    if ctx.target.nemo < Version.parse(argument.since):
        ctx.report_node("NM109", key, f"{argument.name}: MegatronStrategy has no {argument.name} before NeMo "
                        f"{argument.since} ({ctx.target_note()}); **kwargs swallows it, so it does nothing there")
        return
    if value.is_plain and isinstance(literal, bool) and value.raw not in ("true", "True", "TRUE", "false", "False",
                                                                           "FALSE"):
        spelled = bool_spelling(literal)
        ctx.report_node("NM113", value, f"{argument.name}: {value.raw} is the boolean {spelled} for NeMo (YAML "
                        f"1.1) but the string {value.raw!r} for YAML 1.2 tools; write {spelled}",
                        fix=Fix("safe", f"Write `{spelled}`", (Edit(spelled, value.start, value.end),)))
    kind = type_name(literal)
    if literal is None:
        if not argument.nullable:
            ctx.report_node("NM101", value, f"{argument.name} is null where NeMo expects "
                            f"{with_article(argument.type)}; None behaves as False")
        return
    if kind != argument.type and kind not in argument.other_types:
        why = " (a non-empty string is truthy: NeMo behaves as if it were True)" if (
            argument.type == "bool" and kind == "str" and literal) else ""
        ctx.report_node("NM101", value, f"{argument.name} must be {with_article(argument.type)}; NeMo reads "
                        f"{kind} {value.raw!r}{why}")
        return
    if argument.minimum is not None and isinstance(literal, int) and literal < argument.minimum:
        ctx.report_node("NM102", value, f"{argument.name} must be at least {argument.minimum}, got {literal}")
        return
    if argument.allowed is not None and kind == argument.type and literal not in argument.allowed:
        close = closest_allowed(literal, argument.allowed)
        hint = f"; did you mean {close!r}?" if close else ""
        ctx.report_node("NM102", value, f"{argument.name}: {literal!r} is not one of "
                        f"{', '.join(str(a) for a in argument.allowed)}{hint}")
        return
    setting = ctx.table.setting_for_argument(argument.name)
    lifecycle = setting.values.get(str(literal)) if setting is not None and isinstance(literal, str) else None
    verdict = lifecycle_stage(lifecycle, ctx.target) if lifecycle is not None else None
    if verdict is not None:
        code, stage = verdict
        message = f"{argument.name}: {literal} — {stage.message} ({ctx.target_note()})"
        if lifecycle.replacement:
            message += f"; use {lifecycle.replacement}"
        ctx.report_node(code, value, message)
    for note in ctx.table.strategy.notes:
        if note.argument == argument.name and literal == note.value and note_applies(note, ctx.target):
            ctx.report_node("NM114", key, f"{argument.name}: {value.raw} — {note.message} ({ctx.target_note()})")
