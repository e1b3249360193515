"""Translate a NeMo 1.0 `model_config.yaml` into NeMo 2.0 config field values, with NeMo 1.0's own defaults.

NeMo 1.0 (`MegatronGPTModel.build_transformer_config`, nemo_toolkit <= 2.3) builds megatron-core's
TransformerConfig from the YAML: a few keys are renamed or computed in code (`bias` -> add_bias_linear,
`activation` -> activation_func + gated_linear_unit, `normalization: layernorm1p` -> LayerNorm with a zero-centred
gamma, `bias_dropout_add_fusion` -> bias_dropout_fusion, `rotary_percentage` -> rotary_percent,
`encoder_seq_length` -> the model's max sequence length), the rest are TransformerConfig fields copied by name,
and a key missing from the YAML takes the code default of NeMo 1.0 or megatron-core. This module reproduces that
mapping, so the values describe the model NeMo 1.0 actually built, not what a NeMo 2.0 preset assumes.
Everything NeMo 2.0 cannot express is a MigratorError naming the key.
"""
from __future__ import annotations

from typing import Any

from migrator.convert.model.nemo1_values import FIELDS, describe
from migrator.errors import MigratorError

YAML = "model_config.yaml"

# NeMo 1.0 `activation` -> (NeMo 2.0 activation_func import path, gated_linear_unit)
_ACTIVATIONS: dict[str, tuple[str, bool]] = {
    "gelu": ("torch.nn.functional.gelu", False),
    "geglu": ("torch.nn.functional.gelu", True),
    "fast-geglu": ("torch.nn.functional.gelu", True),
    "reglu": ("torch.nn.functional.relu", True),
    "fast-reglu": ("torch.nn.functional.relu", True),
    "swiglu": ("torch.nn.functional.silu", True),
    "fast-swiglu": ("torch.nn.functional.silu", True),
    "squared-relu": ("nemo.collections.llm.fn.activation.squared_relu", False),
}
OPENAI_GELU = "nemo.collections.llm.fn.activation.openai_gelu"

# NeMo 1.0 position embeddings that megatron-core (and so NeMo 2.0) implements
_POSITION_EMBEDDINGS = {"learned_absolute", "rope", "none"}

# Llama 3.1 rope scaling (NeMo 1.0 `scale_positional_embedding: true`, mcore_model_customize) and its defaults;
# NeMo 2.0's Llama31Config has fields of the same names.
ROPE_SCALING_DEFAULTS = {"scale_factor": 8, "low_freq_factor": 1, "high_freq_factor": 4, "old_context_len": 8192}


def _require(cfg: dict[str, Any], key: str) -> Any:
    value = cfg.get(key)
    if value is None:
        raise MigratorError(f"{YAML}: {key} is missing")
    return value


def _int(cfg: dict[str, Any], key: str, value: Any) -> int:
    """A size the model needs (no null): the value table's rule for the key (model_config.yaml was checked against
    it when read; this guards a config that did not come through that reader)."""
    rule = FIELDS[key]
    if value is None or not rule.accepts(value):
        raise MigratorError(f"{YAML}: {key}: expected {rule.expected.removesuffix(' or null')}, got {describe(value)}")
    return value


def _normalization(cfg: dict[str, Any], default: str) -> tuple[str, bool]:
    raw = cfg.get("normalization", default)
    name = str(raw).lower()
    zero_centered = bool(cfg.get("layernorm_zero_centered_gamma", False))
    if name == "layernorm":
        return "LayerNorm", zero_centered
    if name == "layernorm1p":
        return "LayerNorm", True
    if name == "rmsnorm":
        return "RMSNorm", zero_centered
    raise MigratorError(f"{YAML}: normalization: {raw!r} is not supported by megatron-core "
                        f"(layernorm, layernorm1p, rmsnorm)")


def activation(cfg: dict[str, Any]) -> tuple[str, bool]:
    activation = str(cfg.get("activation", "gelu"))
    if activation not in _ACTIVATIONS:
        raise MigratorError(f"{YAML}: activation: {activation!r} has no NeMo 2.0 equivalent "
                            f"(supported: {', '.join(_ACTIVATIONS)})")
    func, gated = _ACTIVATIONS[activation]
    if cfg.get("openai_gelu", False):  # NeMo 1.0 gives openai_gelu precedence over any activation
        func = OPENAI_GELU
    elif cfg.get("onnx_safe", False) and func != "torch.nn.functional.gelu":
        raise MigratorError(f"{YAML}: onnx_safe: true replaces activation {activation!r} by erf_gelu, "
                            f"which NeMo 2.0 has no config for")
    return func, gated


def _refuse_unsupported(cfg: dict[str, Any]) -> None:
    if cfg.get("mcore_gpt") is False:
        raise MigratorError(f"{YAML}: mcore_gpt: false is a legacy (non megatron-core) model, but these tensors "
                            f"are a megatron-core distributed checkpoint (pre-megatron-core models save "
                            f"model_weights.ckpt / mp_rank_XX/, which convert reads); the config does not "
                            f"describe this checkpoint")
    if cfg.get("apply_embedding_scaling", False):
        raise MigratorError(f"{YAML}: apply_embedding_scaling: true has no NeMo 2.0 GPT config equivalent")
    if cfg.get("mcore_customization_config"):
        raise MigratorError(f"{YAML}: mcore_customization_config: customised megatron-core modules "
                            f"(e.g. Gemma 2 logit soft-capping) are not supported")
    if cfg.get("multi_latent_attention", False):
        raise MigratorError(f"{YAML}: multi_latent_attention: true (DeepSeek MLA) is not supported")


def _fp8(cfg: dict[str, Any]) -> dict[str, Any]:
    """NeMo 1.0's fp8 is a bool plus fp8_e4m3/fp8_hybrid; NeMo 2.0's is the format string (or None)."""
    if not cfg.get("fp8", False):
        return {}
    if cfg.get("fp8_e4m3", False):
        fmt = "e4m3"
    elif cfg.get("fp8_hybrid", False):
        fmt = "hybrid"
    else:
        raise MigratorError(f"{YAML}: fp8: true but neither fp8_e4m3 nor fp8_hybrid is set")
    out: dict[str, Any] = {"fp8": fmt}
    for key, default in (("fp8_margin", 0), ("fp8_interval", 1), ("fp8_amax_history_len", 1),
                         ("fp8_amax_compute_algo", "most_recent")):
        out[key] = cfg.get(key, default)
    return out


def gpt_fields(cfg: dict[str, Any]) -> dict[str, Any]:
    """NeMo 2.0 GPTConfig field values of a NeMo 1.0 MegatronGPTModel config (megatron-core GPT layout)."""
    _refuse_unsupported(cfg)
    position = str(cfg.get("position_embedding_type", "learned_absolute"))
    if position not in _POSITION_EMBEDDINGS:
        raise MigratorError(f"{YAML}: position_embedding_type: {position!r} is not implemented by "
                            f"megatron-core (learned_absolute, rope, none)")
    normalization, zero_centered = _normalization(cfg, "layernorm")
    activation_func, gated = activation(cfg)
    seq_length = cfg.get("encoder_seq_length", cfg.get("seq_length", cfg.get("max_position_embeddings")))
    window = cfg.get("window_size")
    values: dict[str, Any] = {
        "num_layers": _int(cfg, "num_layers", _require(cfg, "num_layers")),
        "hidden_size": _int(cfg, "hidden_size", _require(cfg, "hidden_size")),
        "ffn_hidden_size": _int(cfg, "ffn_hidden_size", _require(cfg, "ffn_hidden_size")),
        "num_attention_heads": _int(cfg, "num_attention_heads", _require(cfg, "num_attention_heads")),
        "num_query_groups": cfg.get("num_query_groups"),
        "kv_channels": cfg.get("kv_channels"),
        "seq_length": _int(cfg, "encoder_seq_length", seq_length if seq_length is not None else
                           _require(cfg, "encoder_seq_length")),
        "position_embedding_type": position,
        "rotary_base": cfg.get("rotary_base", 10000),
        "rotary_percent": cfg.get("rotary_percentage", 1.0),
        "rotary_interleaved": cfg.get("rotary_interleaved", False),
        "seq_len_interpolation_factor": cfg.get("seq_len_interpolation_factor"),
        "make_vocab_size_divisible_by": cfg.get("make_vocab_size_divisible_by", 128),
        "normalization": normalization,
        "layernorm_epsilon": cfg.get("layernorm_epsilon", 1e-5),
        "layernorm_zero_centered_gamma": zero_centered,
        "activation_func": activation_func,
        "gated_linear_unit": gated,
        "add_bias_linear": cfg.get("bias", True),
        "add_qkv_bias": cfg.get("qkv_bias", False),
        "qk_layernorm": cfg.get("qk_layernorm", False),
        "share_embeddings_and_output_weights": cfg.get("share_embeddings_and_output_weights", True),
        "num_moe_experts": cfg.get("num_moe_experts"),
        "window_size": list(window) if window is not None else None,
        # fusion flags exactly as NeMo 1.0 ran them (code defaults where the YAML has no key)
        "apply_rope_fusion": cfg.get("apply_rope_fusion", False),
        "persist_layer_norm": cfg.get("persist_layer_norm", False),
        "masked_softmax_fusion": cfg.get("masked_softmax_fusion", False),
        "bias_activation_fusion": cfg.get("bias_activation_fusion", True),
        "bias_dropout_fusion": cfg.get("bias_dropout_add_fusion", True),
        "gradient_accumulation_fusion": cfg.get("gradient_accumulation_fusion", False),
        # training settings carried so that fine-tuning behaves as in NeMo 1.0 (not compared with presets)
        "init_method_std": cfg.get("init_method_std", 0.02),
        "hidden_dropout": cfg.get("hidden_dropout", 0.1),
        "attention_dropout": cfg.get("attention_dropout", 0.1),
    }
    if values["num_moe_experts"] is not None:
        values.update({
            "num_moe_experts": _int(cfg, "num_moe_experts", values["num_moe_experts"]),
            "moe_ffn_hidden_size": cfg.get("moe_ffn_hidden_size"),
            "moe_router_topk": cfg.get("moe_router_topk", 2),
            "moe_router_pre_softmax": cfg.get("moe_router_pre_softmax", False),
            "moe_token_dispatcher_type": cfg.get("moe_token_dispatcher_type", "allgather"),
            "moe_grouped_gemm": cfg.get("moe_grouped_gemm", False),
            "moe_router_load_balancing_type": cfg.get("moe_router_load_balancing_type", "aux_loss"),
            "moe_aux_loss_coeff": cfg.get("moe_aux_loss_coeff", 0),
            "moe_shared_expert_intermediate_size": cfg.get("moe_shared_expert_intermediate_size"),
        })
    if cfg.get("scale_positional_embedding", False):
        values.update({key: cfg.get(key, default) for key, default in ROPE_SCALING_DEFAULTS.items()})
    values.update(_fp8(cfg))
    return values


def mamba_fields(cfg: dict[str, Any]) -> dict[str, Any]:
    """NeMo 2.0 SSMConfig (NemotronH) field values of a NeMo 1.0 MegatronMambaModel config."""
    _refuse_unsupported(cfg)
    num_layers = _int(cfg, "num_layers", _require(cfg, "num_layers"))
    normalization, _ = _normalization(cfg, "rmsnorm")
    pattern = cfg.get("hybrid_override_pattern") or "M" * num_layers
    if len(pattern) != num_layers or set(pattern) - set("M*-"):
        raise MigratorError(f"{YAML}: hybrid_override_pattern: {pattern!r} must have num_layers ({num_layers}) "
                            f"characters out of M (Mamba), * (attention), - (MLP)")
    return {
        "num_layers": num_layers,
        "hidden_size": _int(cfg, "hidden_size", _require(cfg, "hidden_size")),
        "ffn_hidden_size": cfg.get("ffn_hidden_size"),
        "num_attention_heads": cfg.get("num_attention_heads"),
        "num_query_groups": cfg.get("num_query_groups"),
        "kv_channels": cfg.get("kv_channels"),
        "seq_length": cfg.get("encoder_seq_length", 4096),
        "position_embedding_type": str(cfg.get("position_embedding_type", "none")),
        "make_vocab_size_divisible_by": cfg.get("make_vocab_size_divisible_by", 128),
        "normalization": normalization,
        "layernorm_epsilon": cfg.get("layernorm_epsilon", 1e-5),
        "add_bias_linear": cfg.get("add_bias_linear", False),
        "gated_linear_unit": cfg.get("gated_linear_unit", False),
        "share_embeddings_and_output_weights": cfg.get("share_embeddings_and_output_weights", False),
        "hybrid_override_pattern": pattern,
        "mamba_num_groups": cfg.get("mamba_ssm_ngroups", 8),
        "mamba_state_dim": cfg.get("mamba_state_dim", 128),
        "mamba_head_dim": cfg.get("mamba_head_dim", 64),
        "apply_rope_fusion": cfg.get("apply_rope_fusion", False),
        "persist_layer_norm": cfg.get("persist_layer_norm", False),
        "masked_softmax_fusion": cfg.get("masked_softmax_fusion", False),
        "bias_dropout_fusion": cfg.get("bias_dropout_add_fusion", True),
        "gradient_accumulation_fusion": cfg.get("gradient_accumulation_fusion", False),
        "init_method_std": cfg.get("init_method_std", 0.02),
        "hidden_dropout": cfg.get("hidden_dropout", 0.0),
        "attention_dropout": cfg.get("attention_dropout", 0.0),
    }
