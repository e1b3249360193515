"""`migrate-config OLD --to bridge --emit-python`: the Megatron-Bridge snippet, built from LibCST nodes.

    # Megatron-Bridge checkpoint settings migrated from megatron_gpt_config.yaml by migrate-config (target
    #   megatron-bridge=0.6.0, megatron-core=0.19).
    from megatron.bridge.training.config import CheckpointConfig

    # not carried: model.dist_ckpt_load_on_device: True: no Bridge field: ...
    checkpoint = CheckpointConfig(
        ckpt_format="torch_dist",
        fully_parallel_save=False,  # NeMo 1.0 default (not set in the YAML); Bridge defaults to True
    )

    # cfg = ConfigContainer(..., checkpoint=checkpoint), or on a recipe's config: cfg.checkpoint = checkpoint

The result is re-parsed and compiled before it is returned.
"""
from __future__ import annotations

from pathlib import Path

import libcst as cst

from migrator.errors import MigratorError
from migrator.migrate.bridge_mapping import BridgeMapping
from migrator.migrate.mapping import py
from migrator.python.emit import check_code, comment_lines, keyword_call, message_lines


def header_text(mapping: BridgeMapping, tool: str = "migrate-config") -> str:
    return (f"Megatron-Bridge checkpoint settings migrated from {Path(mapping.filename).name} by {tool} "
            f"(target {mapping.target.describe()}"
            + (f", source nemo={mapping.source.nemo}" if mapping.source.nemo else "") + ").")


def omitted_texts(mapping: BridgeMapping) -> list[str]:
    explained = {m.setting for m in mapping.messages if m.severity != "info"}
    return [f"not carried: {o.setting}: {py(o.value)}: {o.reason}" for o in mapping.omitted
            if o.setting not in explained]


def build_module(mapping: BridgeMapping) -> cst.Module:
    header = comment_lines(header_text(mapping))
    notes: list[cst.EmptyLine] = [cst.EmptyLine()]
    for message in mapping.messages:
        notes.extend(message_lines(message))
    for text in omitted_texts(mapping):
        notes.extend(comment_lines(text))
    module, _, name = "megatron.bridge.training.config.CheckpointConfig".rpartition(".")
    dotted: cst.BaseExpression = cst.Name(module.split(".")[0])
    for part in module.split(".")[1:]:
        dotted = cst.Attribute(value=dotted, attr=cst.Name(part))
    imports = cst.SimpleStatementLine(body=[cst.ImportFrom(module=dotted, names=[cst.ImportAlias(name=cst.Name(name))])])
    assign = cst.SimpleStatementLine(
        body=[cst.Assign(targets=[cst.AssignTarget(cst.Name("checkpoint"))], value=keyword_call(cst.Name("CheckpointConfig"), mapping.fields))],
        leading_lines=notes,
    )
    footer = [cst.EmptyLine(), *comment_lines("cfg = ConfigContainer(..., checkpoint=checkpoint), or on a recipe's "
                                              "config: cfg.checkpoint = checkpoint")]
    return cst.Module(body=[imports, assign], header=header, footer=footer)


def emit_bridge(mapping: BridgeMapping) -> str:
    if mapping.refused:
        raise MigratorError(f"{mapping.filename}: refusing to emit code: " + "; ".join(m.text for m in mapping.errors))
    code = build_module(mapping).code
    check_code(code, "<migrate-config>")
    return code
