"""The `run_config.yaml` sections of a Megatron-Bridge checkpoint: the model provider, the tokenizer, the checkpoint.

Bridge builds the model from `run_config.yaml`'s `model:` alone (`load_megatron_model`, the training loader), so
every architecture value is written explicitly on the provider class (GPTModelProvider, which exists in every
Bridge release, for dense and MoE GPT models; MambaModelProvider for hybrid Mamba models), never left to a
preset or a default that changes between releases. The values are the ones the NeMo 2.0 side derives and checks
against the tensor shapes (`nemo1_arch`, `shapes`), or a NeMo 2.0 checkpoint's own config; the field names are
megatron-core's (NeMo 2.0 configs and Bridge providers are both TransformerConfig subclasses).

Every `_target_` and field written is checked against the names table of `rules/bridge_models.yaml` for every git
tag of the release lines `--target megatron-bridge=...` spans: a required name that is absent somewhere is an
error, an optional one (a chat template, the SentencePiece `legacy` flag) is dropped with a warning.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrator.convert.model.architecture import dtype_fields
from migrator.convert.model.bridge_models import TARGET_KEY, BridgeTable, Release
from migrator.convert.model.nemo1_values import check_mcore_values
from migrator.convert.model.spec import TokenizerSpec
from migrator.errors import MigratorError

Warn = Callable[[str], None]

# Provider fields written for a megatron-core GPT model, in this order (None values are resolved or left out).
GPT_FIELDS = (
    "num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups", "kv_channels",
    "seq_length", "vocab_size", "should_pad_vocab", "make_vocab_size_divisible_by",
    "position_embedding_type", "rotary_base", "rotary_percent", "rotary_interleaved", "seq_len_interpolation_factor",
    "rope_scaling", "rope_scaling_factor",
    "normalization", "layernorm_epsilon", "layernorm_zero_centered_gamma", "activation_func", "gated_linear_unit",
    "add_bias_linear", "add_qkv_bias", "qk_layernorm", "share_embeddings_and_output_weights", "window_size",
    "apply_rope_fusion", "persist_layer_norm", "masked_softmax_fusion", "bias_activation_fusion",
    "bias_dropout_fusion", "gradient_accumulation_fusion", "init_method_std", "hidden_dropout", "attention_dropout",
    "bf16", "fp16", "params_dtype", "tensor_model_parallel_size", "pipeline_model_parallel_size",
)
MOE_FIELDS = (
    "num_moe_experts", "moe_ffn_hidden_size", "moe_router_topk", "moe_router_pre_softmax",
    "moe_token_dispatcher_type", "moe_grouped_gemm", "moe_router_load_balancing_type", "moe_aux_loss_coeff",
    "moe_shared_expert_intermediate_size",
)
FP8_FIELDS = ("fp8", "fp8_margin", "fp8_interval", "fp8_amax_history_len", "fp8_amax_compute_algo")
MAMBA_FIELDS = (
    "num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups", "kv_channels",
    "seq_length", "vocab_size", "should_pad_vocab", "make_vocab_size_divisible_by", "position_embedding_type",
    "normalization", "layernorm_epsilon", "add_bias_linear", "activation_func", "gated_linear_unit",
    "share_embeddings_and_output_weights", "hybrid_override_pattern", "mamba_num_groups", "mamba_state_dim",
    "mamba_head_dim", "apply_rope_fusion", "persist_layer_norm", "masked_softmax_fusion", "bias_dropout_fusion",
    "gradient_accumulation_fusion", "init_method_std", "hidden_dropout", "attention_dropout", "bf16", "fp16",
    "params_dtype", "tensor_model_parallel_size", "pipeline_model_parallel_size",
)
TOKENIZER_FIELDS = ("tokenizer_type", "tokenizer_model", "special_tokens", "chat_template", "hf_tokenizer_kwargs",
                    "sp_tokenizer_kwargs")
OPTIONAL_TOKENIZER_FIELDS = {"chat_template", "sp_tokenizer_kwargs"}
CHECKPOINT_FIELDS = ("ckpt_format", "fully_parallel_save", "save_optim", "save_rng")
CALLABLE_FIELDS = {"activation_func"}
DTYPE_FIELDS = {"params_dtype"}
# megatron-core applies Llama 3.1 rope scaling with these fixed values; only the factor is a provider field
_ROPE_SCALING_FIXED = {"low_freq_factor": 1, "high_freq_factor": 4, "old_context_len": 8192}
TOKENIZER_DIR = "tokenizer"
SENTENCEPIECE_FILE = "tokenizer.model"  # the name Bridge's save_tokenizer_assets gives a SentencePiece model


@dataclass
class BridgeSpec:
    """What `run_config.yaml` says, as plain data, and the tokenizer files the checkpoint holds."""

    kind: str  # "gpt" | "mamba"
    provider: str
    model: dict[str, Any]  # the `model:` section (with `_target_`)
    tokenizer: dict[str, Any] | None = None  # the `tokenizer:` section
    tokenizer_files: dict[str, bytes | Path] = field(default_factory=dict)  # path under iter_N/ -> content
    checkpoint: dict[str, Any] = field(default_factory=dict)
    releases: list[str] = field(default_factory=list)  # release lines checked, e.g. ["0.2", ..., "0.6"]
    warnings: list[str] = field(default_factory=list)
    expected_keys: set[str] | None = None  # the model's tensor keys (unprefixed), for --strict
    origin: str = ""  # where the architecture came from (model_config.yaml, context/model.yaml, ...)


def _target(path: str, call: bool = False) -> dict[str, Any]:
    return {"_target_": path, "_call_": call}


def _resolved(values: Mapping[str, Any]) -> dict[str, Any]:
    """Values with megatron-core's None defaults made explicit (what the model is built with anyway)."""
    out = dict(values)
    heads = out.get("num_attention_heads")
    if out.get("num_query_groups") is None and heads:
        out["num_query_groups"] = heads
    if out.get("kv_channels") is None and heads:
        out["kv_channels"] = out["hidden_size"] // heads
    if out.get("num_moe_experts") is not None and out.get("moe_ffn_hidden_size") is None:
        out["moe_ffn_hidden_size"] = out.get("ffn_hidden_size")
    if "scale_factor" in out:
        for key, fixed in _ROPE_SCALING_FIXED.items():
            if out.get(key, fixed) != fixed:
                raise MigratorError(f"model config: {key}={out[key]!r} (Llama 3.1 rope scaling): Megatron-Bridge's "
                                    f"provider takes only the scaling factor and applies {key}={fixed}")
        out["rope_scaling"] = True
        out["rope_scaling_factor"] = out["scale_factor"]
    return out


def model_section(kind: str, values: Mapping[str, Any], padded_vocab_size: int, source_dtype: str, dtype: str,
                  table: BridgeTable) -> dict[str, Any]:
    """The `model:` section: the provider `_target_` and every architecture field, explicit."""
    provider = table.providers.get(kind)
    if provider is None:
        raise MigratorError(f"no Megatron-Bridge provider for a {kind} model in {table.providers}")
    v = _resolved(values)
    v.update(vocab_size=padded_vocab_size, should_pad_vocab=False, tensor_model_parallel_size=1,
             pipeline_model_parallel_size=1)
    v.update(dtype_fields(dtype, source_dtype))
    names = list(MAMBA_FIELDS if kind == "mamba" else GPT_FIELDS)
    if kind == "gpt" and v.get("num_moe_experts") is not None:
        names += MOE_FIELDS
    names += [f for f in FP8_FIELDS if v.get("fp8")]
    model: dict[str, Any] = {"_target_": provider}
    for name in names:
        value = v.get(name)
        if value is None and name in ("window_size", "moe_shared_expert_intermediate_size", "rope_scaling",
                                      "rope_scaling_factor", "seq_len_interpolation_factor", "ffn_hidden_size",
                                      "num_attention_heads", "num_query_groups", "kv_channels"):
            continue  # absent means megatron-core's own default, which is the model's
        if name not in v:
            continue
        if name in CALLABLE_FIELDS:
            if value not in table.callables:
                raise MigratorError(f"model config {name}: {value} has no Megatron-Bridge equivalent (known: "
                                    f"{', '.join(sorted(table.callables))})")
            value = _target(table.callables[value])
        elif name in DTYPE_FIELDS:
            value = _target(value)
        elif isinstance(value, tuple):
            value = list(value)
        model[name] = value
    return model


def tokenizer_section(tokenizer: TokenizerSpec, iter_dir: Path) -> tuple[dict[str, Any], dict[str, bytes | Path]]:
    """The `tokenizer:` section (Bridge's TokenizerConfig) and the files it points at (under iter_N/tokenizer/).

    `iter_dir` is where the iteration folder will finally be; the tokenizer path is absolute, as Bridge's own
    checkpoints record it (Bridge's SentencePiece builder opens the path as given, relative to the working folder).
    """
    from migrator.convert.model.tokenizer import HF_AUTO, SENTENCEPIECE

    folder = Path(os.path.abspath(iter_dir)) / TOKENIZER_DIR
    kwargs = tokenizer.kwargs
    if tokenizer.class_path == SENTENCEPIECE:
        (content,) = tokenizer.files.values()
        section: dict[str, Any] = {"tokenizer_type": "SentencePieceTokenizer",
                                   "tokenizer_model": str(folder / SENTENCEPIECE_FILE)}
        special = kwargs.get("special_tokens")
        if special:
            section["special_tokens"] = list(special) if not isinstance(special, dict) else list(special.values())
        if kwargs.get("chat_template"):
            section["chat_template"] = kwargs["chat_template"]
        if kwargs.get("legacy"):
            section["sp_tokenizer_kwargs"] = {"legacy": True}
        return section, {f"{TOKENIZER_DIR}/{SENTENCEPIECE_FILE}": content}
    if tokenizer.class_path == HF_AUTO:
        (source,) = tokenizer.files.values()
        hf_kwargs = {k: v for k, v in kwargs.items() if k != "pretrained_model_name"}
        section = {"tokenizer_type": "HuggingFaceTokenizer", "tokenizer_model": str(folder)}
        if hf_kwargs:
            section["hf_tokenizer_kwargs"] = hf_kwargs
        return section, {TOKENIZER_DIR: source}
    raise MigratorError(f"tokenizer {tokenizer.class_path.rsplit('.', 1)[-1]}: not supported for --to bridge "
                        "(SentencePiece and Hugging Face tokenizers are; pass --tokenizer_path)")


def check_names(spec: BridgeSpec, table: BridgeTable, span: list[Release], warn: Warn) -> None:
    """Every `_target_` and field of the sections exists at every tag of `span` (optional ones are dropped)."""
    def check(name: str, what: str, optional: bool = False) -> bool:
        missing = table.absent(name, span)
        if not missing:
            return True
        where = f"Megatron-Bridge {', '.join(missing)}"
        if optional:
            message = f"{what}: not in {where}; left out (--target {TARGET_KEY}=... without those releases keeps it)"
            spec.warnings.append(message)
            warn(message)
            return False
        raise MigratorError(f"{what}: does not exist in {where}; choose --target {TARGET_KEY}= releases that "
                            "have it")

    for section, cls in (("model", spec.provider), ("tokenizer", table.tokenizer), ("checkpoint", table.checkpoint)):
        data = getattr(spec, section)
        if data is None:
            continue
        check(cls, f"run_config.yaml {section}: {cls}")
        for key in list(data):
            if key == "_target_":
                continue
            value = data[key]
            if isinstance(value, dict) and "_target_" in value and not str(value["_target_"]).startswith("torch."):
                check(value["_target_"], f"run_config.yaml {section}.{key}: {value['_target_']}")
            optional = section == "tokenizer" and key in OPTIONAL_TOKENIZER_FIELDS
            if not check(f"{cls}:{key}", f"run_config.yaml {section}.{key}", optional):
                del data[key]


def checkpoint_section(table: BridgeTable) -> dict[str, Any]:
    """What the training loader reads from `checkpoint:` (no optimizer or RNG state was converted)."""
    return {"_target_": table.checkpoint, "ckpt_format": "torch_dist", "fully_parallel_save": True,
            "save_optim": False, "save_rng": False}


def build_bridge_spec(kind: str, values: Mapping[str, Any], padded_vocab_size: int, source_dtype: str, dtype: str,
                      tokenizer: TokenizerSpec | None, iter_dir: Path, table: BridgeTable, span: list[Release],
                      warn: Warn, origin: str = "model config") -> BridgeSpec:
    """`origin` names where `values` came from (a NeMo 2.0 checkpoint's context/ is checked here; a NeMo 1.0
    model_config.yaml was checked when it was read)."""
    check_mcore_values(dict(values), origin)
    model = model_section(kind, values, padded_vocab_size, source_dtype, dtype, table)
    spec = BridgeSpec(kind=kind, provider=model["_target_"], model=model, checkpoint=checkpoint_section(table),
                      releases=[r.name for r in span])
    if tokenizer is not None:
        section, files = tokenizer_section(tokenizer, iter_dir)
        spec.tokenizer = {"_target_": table.tokenizer, **section}
        spec.tokenizer_files = files
    check_names(spec, table, span, warn)
    return spec


def run_config(spec: BridgeSpec) -> dict[str, Any]:
    """The whole `run_config.yaml` (sections Bridge reads; nothing about training, which the user chooses)."""
    out: dict[str, Any] = {"model": spec.model, "checkpoint": spec.checkpoint}
    if spec.tokenizer is not None:
        out["tokenizer"] = spec.tokenizer
    return out
