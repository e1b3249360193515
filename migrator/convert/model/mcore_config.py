"""The megatron-core GPT model a converted checkpoint's config describes, read as data (no torch, no megatron-core).

`verify --load` builds this model and loads the checkpoint into it (`load_check.py`). The config comes from:
- a NeMo 2.0 checkpoint (`OUT/weights/` + `OUT/context/`): the config class and its explicitly passed arguments
  from `context/io.json` (what NeMo loads), over `context/model.yaml`'s `config:` (NeMo writes every field there,
  nemo-migrate only the explicit ones), over the class's defaults from the model table (`rules/nemo2_models.yaml`,
  checked against NeMo's classes in CI). Tensor keys carry the prefix `module.`.
- a Megatron-Bridge checkpoint (`OUT/latest_checkpointed_iteration.txt` + `OUT/iter_<7 digits>/`, or the iteration
  folder itself): `run_config.yaml`'s `model:` (the model provider's fields) over megatron-core's GPT defaults
  (GPTConfig's preset in the model table). Tensor keys carry no prefix.
Only the fields that shape the model or its forward pass are taken; kernel-fusion and parallelism settings are
forced to what a single CPU process can run (see `load_check.py`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrator.convert.model.models import load_model_table
from migrator.convert.model.nemo1_values import check_mcore_values
from migrator.convert.read.nemo2_context import read_reference_model
from migrator.errors import MigratorError

GPT_DEFAULTS_CLASS = "nemo.collections.llm.gpt.model.base.GPTConfig"
# TransformerConfig fields that decide the parameters or the forward pass (the rest are parallelism, fusion, ...).
TRANSFORMER_FIELDS = (
    "num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups", "kv_channels",
    "normalization", "layernorm_epsilon", "activation_func", "gated_linear_unit", "add_bias_linear", "add_qkv_bias",
    "qk_layernorm", "apply_residual_connection_post_layernorm", "rotary_interleaved", "window_size",
    "softmax_scale", "attention_softmax_in_fp32", "apply_query_key_layer_scaling", "fp32_residual_connection",
    "num_moe_experts", "moe_ffn_hidden_size", "moe_router_topk", "moe_router_pre_softmax",
    "moe_token_dispatcher_type", "moe_router_load_balancing_type", "moe_aux_loss_coeff",
    "moe_shared_expert_intermediate_size", "moe_router_score_function", "moe_router_topk_scaling_factor",
    "moe_router_enable_expert_bias", "moe_router_num_groups", "moe_router_group_topk", "moe_layer_freq",
    "moe_router_dtype", "bf16", "fp16", "params_dtype", "init_method_std", "hidden_dropout", "attention_dropout",
)
# GPTModel constructor arguments (besides the config, the layer spec and vocab_size)
MODEL_FIELDS = ("position_embedding_type", "rotary_percent", "rotary_base", "seq_len_interpolation_factor",
                "share_embeddings_and_output_weights")
ACTIVATIONS = {  # import path in a config -> megatron-core/torch function that load_check uses
    "torch.nn.functional.silu": "silu", "torch._C._nn.silu": "silu",
    "torch.nn.functional.gelu": "gelu", "torch._C._nn.gelu": "gelu",
    "torch.nn.functional.relu": "relu", "torch.relu": "relu",
    "nemo.collections.llm.fn.activation.squared_relu": "squared_relu",
    "megatron.core.activations.squared_relu": "squared_relu",
    "megatron.core.activations.quick_gelu": "quick_gelu",
    "megatron.core.activations.fast_gelu": "fast_gelu",
}
DTYPES = ("torch.bfloat16", "torch.float16", "torch.float32")
_ITER_DIR = re.compile(r"^iter_\d{7}$")


@dataclass
class LoadTarget:
    """What to build and where to load it from."""

    checkpoint: Path  # the folder holding .metadata and the data files
    prefix: str  # "module." (NeMo 2.0) or "" (Bridge)
    config_file: Path  # where the config was read (for messages)
    config_class: str
    transformer: dict[str, Any] = field(default_factory=dict)  # TransformerConfig fields (activation: a name above)
    model: dict[str, Any] = field(default_factory=dict)  # GPTModel arguments
    seq_length: int | None = None
    vocab_size: int | None = None  # None: taken from the checkpoint's embedding (see load_check)
    zero_centered_gamma: bool = False
    rope_scaling: dict[str, float] | None = None  # Llama 3.1: scale_factor, low/high_freq_factor, old_context_len
    unsupported: str | None = None  # why the model cannot be built on CPU (then only the index checks ran)
    notes: list[str] = field(default_factory=list)


def _plain(value: Any) -> Any:
    """A model.yaml / run_config.yaml value as io.json's reader gives it: `{_target_: torch.bfloat16, _call_: false}`
    (a referenced object) becomes its import path."""
    if isinstance(value, dict) and "_target_" in value and value.get("_call_") is False:
        return str(value["_target_"])
    return value


def _read_yaml(path: Path) -> Any:
    from ruamel.yaml import YAML, YAMLError

    try:
        with path.open(encoding="utf-8") as f:
            return YAML(typ="safe", pure=True).load(f)
    except (OSError, YAMLError, UnicodeDecodeError) as error:
        raise MigratorError(f"{path}: unreadable ({type(error).__name__}: {str(error).splitlines()[0]})") from None


def _section(data: Any, key: str, path: Path) -> dict[str, Any]:
    section = data.get(key) if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise MigratorError(f"{path}: no `{key}:` mapping")
    return {str(k): _plain(v) for k, v in section.items()}


def _bridge_dir(output: Path) -> Path | None:
    """The iteration folder of a Bridge checkpoint given as its root or as the folder itself."""
    if (output / "run_config.yaml").is_file() and _ITER_DIR.match(output.name):
        return output
    tracker = output / "latest_checkpointed_iteration.txt"
    if not tracker.is_file():
        return None
    text = tracker.read_text(encoding="utf-8", errors="replace").strip()
    if not text.isdigit():
        raise MigratorError(f"{tracker}: {text[:40]!r} is not an iteration number")
    folder = output / f"iter_{int(text):07d}"
    if not folder.is_dir():
        raise MigratorError(f"{tracker}: names iteration {int(text)}, but {folder.name}/ is missing")
    return folder


def _values(defaults_class: str, *layers: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    table = load_model_table()
    preset = table.preset(defaults_class)
    values: dict[str, Any] = dict(preset or table.preset(GPT_DEFAULTS_CLASS) or {})
    for layer in layers:
        values.update(layer)
    return values, preset is not None


def find_load_target(output: Path) -> LoadTarget:
    """Read the config of the NeMo 2.0 or Bridge checkpoint at `output`; MigratorError when it has none usable."""
    bridge = _bridge_dir(output)
    if bridge is not None:
        config_file = bridge / "run_config.yaml"
        if not config_file.is_file():
            raise MigratorError(f"{config_file}: missing (a Megatron-Bridge checkpoint keeps its model there)")
        model = _section(_read_yaml(config_file), "model", config_file)
        config_class = str(model.pop("_target_", "")) or "(no _target_)"
        values, _ = _values(GPT_DEFAULTS_CLASS, model)
        target = LoadTarget(checkpoint=bridge, prefix="", config_file=config_file, config_class=config_class)
        if "Mamba" in config_class or "NemotronH" in config_class:
            target.unsupported = f"{config_class.rsplit('.', 1)[-1]} has Mamba layers, which need CUDA kernels"
        return _fill(target, values, defaults="megatron-core's GPT defaults")
    io_json = output / "context" / "io.json"
    if not (output / "weights").is_dir() or not io_json.is_file():
        raise MigratorError(f"{output}: neither a NeMo 2.0 checkpoint (weights/ and context/io.json) nor a "
                            "Megatron-Bridge one (latest_checkpointed_iteration.txt)")
    reference = read_reference_model(io_json)
    yaml_config: dict[str, Any] = {}
    model_yaml = output / "context" / "model.yaml"
    if model_yaml.is_file():
        yaml_config = _section(_read_yaml(model_yaml), "config", model_yaml)
        yaml_config.pop("_target_", None)
    values, known = _values(reference.config_class, yaml_config, reference.config_arguments)
    target = LoadTarget(checkpoint=output / "weights", prefix="module.", config_file=io_json,
                        config_class=reference.config_class)
    family = load_model_table().family_for_model_class(reference.model_class)
    if (family is not None and family.kind == "mamba") or "ssm." in reference.config_class:
        target.unsupported = f"{reference.model_class.rsplit('.', 1)[-1]} has Mamba layers, which need CUDA kernels"
    if not known:
        target.notes.append(f"{reference.config_class}: not in the model table; fields that context/ leaves out "
                            "take GPTConfig's defaults")
    if "scale_factor" in values and "Llama31" in reference.config_class:
        target.rope_scaling = {k: float(values[k]) for k in
                               ("scale_factor", "low_freq_factor", "high_freq_factor", "old_context_len")}
    return _fill(target, values, defaults=f"{reference.config_class.rsplit('.', 1)[-1]}'s defaults")


def _fill(target: LoadTarget, values: dict[str, Any], defaults: str) -> LoadTarget:
    where = target.config_file
    if values.get("multi_latent_attention") or values.get("is_hybrid_model"):
        target.unsupported = target.unsupported or "multi-latent attention / hybrid layers are not built on CPU here"
    if values.get("mtp_num_layers"):
        target.unsupported = target.unsupported or "multi-token prediction layers are not built here"
    for name in ("num_layers", "hidden_size", "num_attention_heads"):
        if not isinstance(values.get(name), int) or isinstance(values.get(name), bool) or values[name] <= 0:
            raise MigratorError(f"{where}: {name} is {values.get(name)!r}, not a positive integer "
                                f"(fields not in the checkpoint's config take {defaults})")
    check_mcore_values(values, str(where))  # `layernorm_epsilon: tiny` is a bad checkpoint, not a model to build
    transformer = {k: values[k] for k in TRANSFORMER_FIELDS if k in values}
    activation = transformer.get("activation_func")
    if activation is not None:
        if activation not in ACTIVATIONS:
            target.unsupported = target.unsupported or f"activation_func {activation} is not one verify --load builds"
        else:
            transformer["activation_func"] = ACTIVATIONS[activation]
    for name in ("params_dtype",):
        if transformer.get(name) is not None and transformer[name] not in DTYPES:
            raise MigratorError(f"{where}: {name} is {transformer[name]!r}, not one of {', '.join(DTYPES)}")
    if transformer.get("normalization") not in (None, "LayerNorm", "RMSNorm"):
        raise MigratorError(f"{where}: normalization is {transformer['normalization']!r} (LayerNorm or RMSNorm)")
    target.transformer = transformer
    target.model = {k: values[k] for k in MODEL_FIELDS if k in values}
    target.zero_centered_gamma = bool(values.get("layernorm_zero_centered_gamma"))
    seq = values.get("seq_length", values.get("max_position_embeddings"))
    target.seq_length = seq if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0 else None
    vocab = values.get("vocab_size")
    target.vocab_size = vocab if isinstance(vocab, int) and not isinstance(vocab, bool) and vocab > 0 else None
    divisible, tp = values.get("make_vocab_size_divisible_by"), values.get("tensor_model_parallel_size") or 1
    if target.vocab_size and values.get("should_pad_vocab") and isinstance(divisible, int) and divisible > 0 \
            and isinstance(tp, int) and tp > 0:  # Bridge's provider then pads vocab_size (calculate_padded_vocab_size)
        target.vocab_size = -(-target.vocab_size // (divisible * tp)) * divisible * tp
    return target
