"""Derive the NeMo 2.0 model description of a NeMo 1.0 checkpoint: classes from `--model_id`, values from the YAML.

NeMo's own converter builds the preset config of the model id and copies nothing from the `.nemo` (apart from
fp8 keys), so any model whose sizes differ from the preset fails to load. Here the id (or a NeMo 2.0 checkpoint
given as the id, or the family inferred from the tensors) only chooses the model and config *classes*; every
architecture value comes from the `.nemo`'s own model_config.yaml, is checked against the tensor shapes, and is
compared with the preset: a difference is a warning and the YAML's value is written.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from migrator.convert.formats.chunks import CAST_TARGETS
from migrator.convert.formats.types import TensorInfo
from migrator.convert.model import nemo1_arch, shapes
from migrator.convert.model.models import FamilyEntry, ModelTable, load_model_table
from migrator.convert.model.spec import ModelSpec
from migrator.convert.read.nemo2_context import find_io_json, read_reference_model
from migrator.errors import MigratorError

Warn = Callable[[str], None]

# Fields compared with the preset (a difference is a warning). Training settings (init_method_std, dropouts)
# and precision are carried from the YAML / the pipeline without comparison.
COMPARED_FIELDS = (
    "num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups", "kv_channels",
    "seq_length", "position_embedding_type", "rotary_base", "rotary_percent", "rotary_interleaved",
    "seq_len_interpolation_factor", "make_vocab_size_divisible_by", "normalization", "layernorm_epsilon",
    "layernorm_zero_centered_gamma", "activation_func", "gated_linear_unit", "add_bias_linear", "add_qkv_bias",
    "qk_layernorm", "share_embeddings_and_output_weights", "num_moe_experts", "moe_ffn_hidden_size",
    "moe_router_topk", "moe_router_pre_softmax", "moe_token_dispatcher_type", "moe_grouped_gemm",
    "moe_router_load_balancing_type", "moe_aux_loss_coeff", "moe_shared_expert_intermediate_size", "window_size",
    "scale_factor", "low_freq_factor", "high_freq_factor", "old_context_len",
    "hybrid_override_pattern", "mamba_num_groups", "mamba_state_dim", "mamba_head_dim",
    "apply_rope_fusion", "persist_layer_norm", "masked_softmax_fusion", "bias_activation_fusion",
    "bias_dropout_fusion", "gradient_accumulation_fusion",
)
# Written into io.json whatever the preset says (they exist in every NeMo 2.0 release): the architecture is
# then explicit in the checkpoint and does not depend on a preset that may change between NeMo versions.
ALWAYS_WRITTEN = {
    "gpt": (
        "num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups", "kv_channels",
        "seq_length", "position_embedding_type", "rotary_base", "rotary_percent", "make_vocab_size_divisible_by",
        "normalization", "layernorm_epsilon", "activation_func", "gated_linear_unit", "add_bias_linear",
        "share_embeddings_and_output_weights", "apply_rope_fusion", "persist_layer_norm", "masked_softmax_fusion",
        "bias_activation_fusion", "bias_dropout_fusion", "gradient_accumulation_fusion", "init_method_std",
        "hidden_dropout", "attention_dropout",
    ),
    "moe": (
        "num_moe_experts", "moe_router_topk", "moe_router_pre_softmax", "moe_token_dispatcher_type",
        "moe_grouped_gemm", "moe_router_load_balancing_type", "moe_aux_loss_coeff",
    ),
    "mamba": (
        "num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups", "kv_channels",
        "seq_length", "position_embedding_type", "make_vocab_size_divisible_by", "normalization",
        "layernorm_epsilon", "add_bias_linear", "gated_linear_unit", "share_embeddings_and_output_weights",
        "hybrid_override_pattern", "mamba_num_groups", "mamba_state_dim", "mamba_head_dim", "apply_rope_fusion",
        "persist_layer_norm", "masked_softmax_fusion", "bias_dropout_fusion", "gradient_accumulation_fusion",
        "init_method_std", "hidden_dropout", "attention_dropout",
    ),
}
# NeMo 1.0 YAML key of a NeMo 2.0 field, where the names differ (for readable warnings)
NEMO1_KEY = {
    "seq_length": "encoder_seq_length", "rotary_percent": "rotary_percentage", "add_bias_linear": "bias",
    "add_qkv_bias": "qkv_bias", "activation_func": "activation", "bias_dropout_fusion": "bias_dropout_add_fusion",
    "mamba_num_groups": "mamba_ssm_ngroups", "scale_factor": "scale_positional_embedding/scale_factor",
}
CALLABLE_FIELDS = {"activation_func"}
# Import paths that name the same function (F.gelu is a C builtin whose __module__ is torch._C._nn)
CALLABLE_ALIASES = {"torch._C._nn.gelu": "torch.nn.functional.gelu"}
# Arguments that older NeMo 2.0 releases cannot take (io.json would not build there); everything else written
# exists since NeMo 2.0.0 (megatron-core 0.9). Checked against the NeMo and Megatron-LM git tags.
FIELD_SINCE = {
    "vocab_size": "NeMo >= 2.3.0",
    "moe_ffn_hidden_size": "megatron-core >= 0.10 (NeMo >= 2.1)",
    "moe_shared_expert_intermediate_size": "megatron-core >= 0.10 (NeMo >= 2.1)",
}

@dataclass(frozen=True)
class Target:
    """Which NeMo 2.0 classes the output uses, and where that choice came from."""

    family: FamilyEntry
    model_class: str
    config_class: str
    preset: dict[str, Any] | None  # None: values of this config class are unknown (nothing to compare)
    origin: str  # "--model_id <id>", "--model_id <path>", or "inferred from the tensors"
    model_id: str | None


def _short(class_path: str) -> str:
    return class_path.rsplit(".", 1)[-1]


def _is_moe(index: Mapping[str, TensorInfo]) -> bool:
    return any(k.startswith(("decoder.layers.mlp.router.", "decoder.layers.mlp.experts.")) for k in index)


def _is_mamba(index: Mapping[str, TensorInfo]) -> bool:
    return any(".mixer." in k for k in index)


def resolve_target(model_id: str | None, tensors: Mapping[str, TensorInfo], table: ModelTable,
                   warn: Warn) -> Target:
    """Model and config classes from a model id, a NeMo 2.0 checkpoint path, or (MoE only) the tensors."""
    if model_id is None:
        index = shapes.tensor_index(tensors)
        valid = ", ".join(table.models)
        if _is_mamba(index):
            raise MigratorError("--model_id is required: the checkpoint has Mamba mixer layers (NemotronH); "
                                "pass one of nemotronh4b, nemotronh8b, nemotronh47b, nemotronh56b")
        if not _is_moe(index):
            raise MigratorError("--model_id is required: a dense GPT checkpoint could be Llama, Mistral or "
                                f"Nemotron; pass one of: {valid} (or a NeMo 2.0 checkpoint path)")
        family = table.families["mixtral"]
        warn(f"no --model_id: the MoE tensors (decoder.layers.mlp.router/experts) mean Mixtral; using "
             f"{_short(family.model_class)} with {_short(family.config_class)}")
        return Target(family, family.model_class, family.config_class, table.preset(family.config_class),
                      "inferred from the tensors", None)
    if model_id in table.models:
        entry = table.entry(model_id)
        family = table.families[entry.family]
        return Target(family, entry.model_class, entry.config_class, table.preset(entry.config_class),
                      f"--model_id {model_id}", model_id)
    io_json = find_io_json(model_id)
    if io_json is None:
        table.entry(model_id)  # raises: unknown id, with the list of valid ones
    assert io_json is not None
    ref = read_reference_model(io_json)
    family = table.family_for_model_class(ref.model_class)
    if family is None:
        supported = ", ".join(sorted({f.model_class for f in table.families.values()}))
        raise MigratorError(f"{io_json}: model class {ref.model_class} is not supported (supported: {supported})")
    base = table.preset(ref.config_class)
    preset = None if base is None else {**base, **{k: v for k, v in ref.config_arguments.items() if k in base}}
    if base is None:
        warn(f"--model_id {model_id}: {ref.config_class} is not in the model table; its preset values are "
             f"unknown, so every derived value is written and none is compared")
    return Target(family, ref.model_class, ref.config_class, preset, f"--model_id {model_id}", model_id)


def _effective(field: str, value: Any, values: Mapping[str, Any]) -> Any:
    """The value megatron-core ends up using (None defaults resolved), for comparing YAML with preset."""
    if value is None:
        if field == "num_query_groups":
            return values.get("num_attention_heads")
        if field == "kv_channels" and values.get("num_attention_heads"):
            return values["hidden_size"] // values["num_attention_heads"]
        if field == "moe_ffn_hidden_size" and values.get("num_moe_experts"):
            return values.get("ffn_hidden_size")
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return CALLABLE_ALIASES.get(value, value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _same(field: str, derived: Any, preset: Any, values: Mapping[str, Any], preset_values: Mapping[str, Any]
          ) -> bool:
    merged = {**preset_values, **{k: v for k, v in values.items() if k in ("num_attention_heads", "hidden_size",
                                                                            "ffn_hidden_size")}}
    return _effective(field, derived, values) == _effective(field, preset, merged)


def _rope_scaling_class(target: Target, values: dict[str, Any], table: ModelTable, warn: Warn) -> Target:
    """NeMo 2.0 applies Llama 3.1 rope scaling only through Llama31Config (and subclasses)."""
    scaled = "scale_factor" in values
    preset_scaled = target.preset is not None and "scale_factor" in target.preset
    if scaled == preset_scaled or target.preset is None:
        return target
    family = target.family
    new_class = family.rope_scaling_config_class if scaled else family.config_class
    if scaled and not new_class:
        raise MigratorError(f"model_config.yaml: scale_positional_embedding: true (Llama 3.1 rope scaling) has no "
                            f"NeMo 2.0 equivalent for the {family.name} family")
    assert new_class is not None
    what = ("applies Llama 3.1 rope scaling (scale_positional_embedding: true)" if scaled
            else "has no rope scaling (scale_positional_embedding: false)")
    warn(f"{_short(target.config_class)}: model_config.yaml {what}; using {_short(new_class)} instead")
    return Target(family, target.model_class, new_class, table.preset(new_class), target.origin, target.model_id)


def dtype_fields(dtype: str, source_dtype: str) -> dict[str, Any]:
    """The precision fields megatron-core's config takes for `--dtype` (NeMo 2.0 and Megatron-Bridge alike)."""
    name = source_dtype if dtype == "keep" else CAST_TARGETS.get(dtype)
    if name not in ("bfloat16", "float16", "float32"):
        raise MigratorError(f"--dtype {dtype}: unsupported (keep, bf16, fp16, fp32)"
                            + (f"; the source tensors are {source_dtype}" if dtype == "keep" else ""))
    return {"bf16": name == "bfloat16", "fp16": name == "float16", "params_dtype": f"torch.{name}"}


def derive_model_spec(model_config: dict, tensors: Mapping[str, TensorInfo], model_id: str | None, dtype: str,
                      warn: Warn) -> ModelSpec:
    """The NeMo 2.0 model (classes + explicit config arguments) for a NeMo 1.0 checkpoint.

    `model_config`: the parsed model_config.yaml; `tensors`: NeMo 1.0 keys -> TensorInfo (global shapes);
    `dtype`: "keep" (the source tensors' dtype) or bf16/fp16/fp32 as the pipeline casts; `warn` receives each
    warning (they are also kept in `ModelSpec.warnings`).
    """
    warnings: list[str] = []

    def _warn(message: str) -> None:
        warnings.append(message)
        warn(message)

    table = load_model_table()
    target = resolve_target(model_id, tensors, table, _warn)
    kind = target.family.kind
    values = nemo1_arch.mamba_fields(model_config) if kind == "mamba" else nemo1_arch.gpt_fields(model_config)
    facts = shapes.check_mamba(values, tensors) if kind == "mamba" else shapes.check_gpt(values, tensors)
    if kind == "gpt":
        target = _rope_scaling_class(target, values, table, _warn)

    preset = target.preset
    config_kwargs: dict[str, Any] = {}
    always = set(ALWAYS_WRITTEN["mamba" if kind == "mamba" else "gpt"])
    if values.get("num_moe_experts") is not None:
        always |= set(ALWAYS_WRITTEN["moe"])
    if "scale_factor" in values:  # Llama 3.1 rope scaling: explicit, whatever Llama31Config's defaults are
        always |= set(nemo1_arch.ROPE_SCALING_DEFAULTS)
    short = _short(target.config_class)
    for field in COMPARED_FIELDS + ("init_method_std", "hidden_dropout", "attention_dropout"):
        if field not in values:
            continue
        derived = values[field]
        if kind == "mamba" and derived is None:
            continue  # the YAML does not say; keep the preset's value
        known = preset is not None and field in preset
        differs = known and not _same(field, derived, preset[field], values, preset)
        if field in COMPARED_FIELDS and differs:
            key = f" ({NEMO1_KEY[field]})" if field in NEMO1_KEY else ""
            note = " (sliding-window attention; NeMo 1.0 had none)" if field == "window_size" else ""
            _warn(f"{short}: {field} is {preset[field]!r} in the preset but {derived!r} in model_config.yaml"
                  f"{key}{note}; using {derived!r}")
        if field in always or differs or (preset is None) or (not known and derived not in (None, False)):
            config_kwargs[field] = derived
    for field in config_kwargs.keys() & FIELD_SINCE.keys():
        _warn(f"{short}: {field}={config_kwargs[field]!r} is written; loading it needs {FIELD_SINCE[field]}")
    for field in ("fp8", "fp8_margin", "fp8_interval", "fp8_amax_history_len", "fp8_amax_compute_algo"):
        if field in values:
            config_kwargs[field] = values[field]
    config_kwargs.update(dtype_fields(dtype, facts.source_dtype))

    divisible = values["make_vocab_size_divisible_by"]
    if facts.padded_vocab_size % divisible and kind == "mamba":
        raise MigratorError(_mamba_vocab_message(facts.padded_vocab_size, f"a multiple of {divisible}"))
    if facts.padded_vocab_size % divisible:
        _warn(f"model.embedding.word_embeddings.weight: {facts.padded_vocab_size} rows is not a multiple of "
              f"make_vocab_size_divisible_by={divisible}; writing vocab_size={facts.padded_vocab_size} "
              f"(needs {FIELD_SINCE['vocab_size']})")
        config_kwargs["vocab_size"] = facts.padded_vocab_size

    return ModelSpec(
        family=target.family.name,
        model_class=target.model_class,
        config_class=target.config_class,
        config_kwargs=config_kwargs,
        expected_keys=facts.expected_keys,
        warnings=warnings,
        model_id=target.model_id,
        config_callables={f for f in CALLABLE_FIELDS if f in config_kwargs},
        padded_vocab_size=facts.padded_vocab_size,
        source_dtype=facts.source_dtype,
        origin=target.origin,
    )


def _mamba_vocab_message(rows: int, nemo2_rows: str) -> str:
    return (f"model.embedding.word_embeddings.weight: {rows} rows, but NeMo 2.0's MambaModel always builds "
            f"{nemo2_rows} and ignores vocab_size; it cannot load this checkpoint")


def reconcile_vocab_size(spec: ModelSpec, tokenizer_vocab_size: int | None, warn: Warn | None = None) -> None:
    """Make NeMo 2.0 build the embedding with the checkpoint's row count.

    NeMo 2.0 pads the tokenizer's vocabulary to a multiple of make_vocab_size_divisible_by (times TP) unless the
    config has an explicit `vocab_size`. NeMo 1.0 padded with its own TP size, so a checkpoint trained with TP > 1
    (or a tokenizer whose size changed) has more rows than NeMo 2.0 would compute: then `vocab_size` is written.
    """
    rows = spec.padded_vocab_size
    if rows is None or tokenizer_vocab_size is None or "vocab_size" in spec.config_kwargs:
        return
    divisible = int(spec.config_kwargs.get("make_vocab_size_divisible_by", 128))
    padded = -(-tokenizer_vocab_size // divisible) * divisible
    if tokenizer_vocab_size > rows:
        raise MigratorError(f"model.embedding.word_embeddings.weight: {rows} rows, but the tokenizer has "
                            f"{tokenizer_vocab_size} tokens")
    if padded != rows and load_model_table().families[spec.family].kind == "mamba":
        raise MigratorError(_mamba_vocab_message(rows, f"{padded} (the tokenizer's {tokenizer_vocab_size} tokens "
                                                       f"padded to a multiple of {divisible})"))
    if padded != rows:
        message = (f"model.embedding.word_embeddings.weight: {rows} rows, but NeMo 2.0 would pad the tokenizer's "
                   f"{tokenizer_vocab_size} tokens to {padded}; writing vocab_size={rows} "
                   f"(needs {FIELD_SINCE['vocab_size']})")
        spec.config_kwargs["vocab_size"] = rows
        spec.warnings.append(message)
        if warn is not None:
            warn(message)
