"""The type and range of every NeMo 1.0 `model_config.yaml` value the converter reads, as one table.

A value that NeMo 1.0 could not have built a model with (`layernorm_epsilon: tiny`, `rotary_base: [1, 2]`,
`num_layers: 2.5`, `hidden_dropout: 2`, an unknown `activation`) is refused before anything is written, in one line
naming the file, the line, the key, the value and what is expected; it is never carried into the NeMo 2.0 or
Megatron-Bridge config. A key the file leaves out is not checked: the converter then takes NeMo 1.0's or
megatron-core's default, as before.

What is accepted follows NeMo's own code (`MegatronGPTModel.build_transformer_config`, `activation_to_func` and
megatron-core's `TransformerConfig`, NeMo v1.23.0 to v2.3.2), which passes the YAML values through untyped:
- an int is accepted where a float is expected (Python and torch take `rotary_base: 10000`);
- a float is refused where an int is expected (`range()`, `torch.empty()` and `nn.Linear` refuse `2.0`);
- a boolean is refused where a number is expected (YAML 1.1 reads `yes`/`on` as True: a typo, not a number);
- a flag takes a boolean, 0/1 or null (NeMo tests flags by truthiness; `cfg.get(key, default)` returns the null);
- an enumeration takes the values NeMo's code branches on (`normalization` case-insensitively, as NeMo lowers it);
- NaN and infinities are refused everywhere.
Upper bounds are far above any trained model and guard against values no tensor could have (megatron-core and
Transformer Engine index sequence and hidden dimensions with 32-bit integers).

`check_tokenizer_section` does the same for the `tokenizer:` mapping (its shape and the type of each entry).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from migrator.errors import MigratorError

INT32_MAX = 2**31 - 1
MAX_LAYERS = 2**16  # deeper than any trained model; a hybrid pattern of num_layers characters is built from it

# NeMo 1.0's own vocabularies (what its code branches on), see the module docstring for the sources
ACTIVATIONS = ("gelu", "geglu", "reglu", "swiglu", "squared-relu", "fast-geglu", "fast-swiglu", "fast-reglu",
               "approx-gelu")  # utils_funcs.activation_to_func's supported_activations
NORMALIZATIONS = ("layernorm", "layernorm1p", "rmsnorm", "low_precision_layernorm")  # lowered, as NeMo does
POSITION_EMBEDDINGS = ("learned_absolute", "rope", "alibi", "kerple", "xpos", "sandwich", "learned_parameters",
                       "relative", "none")  # what the legacy and megatron-core GPT/T5 modules branch on
TOKEN_DISPATCHERS = ("allgather", "alltoall", "alltoall_seq", "flex")  # TransformerConfig
LOAD_BALANCING = ("aux_loss", "seq_aux_loss", "sinkhorn", "none")  # TransformerConfig
AMAX_ALGOS = ("max", "most_recent")  # TransformerConfig.fp8_amax_compute_algo
BLOCK_TYPES = ("pre_ln", "post_ln", "normformer")  # the legacy transformer's transformer_block_type


@dataclass(frozen=True)
class Rule:
    """What one key may hold. `kind`: "int", "number", "flag", "choice", "text", "pair"."""

    kind: str
    low: float | None = None  # inclusive lower bound (numbers)
    above: float | None = None  # exclusive lower bound (numbers)
    high: float | None = None  # inclusive upper bound (numbers)
    nullable: bool = False
    choices: tuple[str, ...] = ()
    fold_case: bool = False  # choices compared lowercased (NeMo lowers the value first)

    @property
    def expected(self) -> str:
        if self.kind == "flag":
            text = "a boolean (true/false)"
        elif self.kind == "choice":
            text = "one of " + ", ".join(self.choices) + (" (any case)" if self.fold_case else "")
        elif self.kind == "text":
            text = "a string"
        elif self.kind == "pair":
            text = "a list of two integers >= -1 ([left, right] window; -1 is unlimited)"
        else:
            positive = self.kind == "int" and self.low == 1
            text = "a positive integer" if positive else "an integer" if self.kind == "int" else "a number"
            bounds = []
            if self.above is not None:
                bounds.append(f"> {self.above:g}")
            if self.low is not None and not positive:
                bounds.append(f">= {self.low:g}")
            if self.high is not None:
                bounds.append(f"<= {self.high:g}" if self.high < 1e6 else f"<= {int(self.high)}")
            if bounds:
                text += " " + " and ".join(bounds)
        return text + (" or null" if self.nullable else "")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable or self.kind == "flag"
        if self.kind == "flag":
            return isinstance(value, bool) or (type(value) is int and value in (0, 1))
        if self.kind == "choice":
            return isinstance(value, str) and (value.lower() if self.fold_case else value) in self.choices
        if self.kind == "text":
            return isinstance(value, str)
        if self.kind == "pair":
            return (isinstance(value, list) and len(value) == 2
                    and all(type(v) is int and v >= -1 for v in value))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not isinstance(value, int):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return ((self.low is None or value >= self.low) and (self.above is None or value > self.above)
                and (self.high is None or value <= self.high))


def count(high: int = INT32_MAX, nullable: bool = False) -> Rule:
    """A positive integer (a size, a count)."""
    return Rule("int", low=1, high=high, nullable=nullable)


def number(low: float | None = None, above: float | None = None, high: float | None = None,
           nullable: bool = False) -> Rule:
    return Rule("number", low=low, above=above, high=high, nullable=nullable)


FLAG = Rule("flag")


def choice(*choices: str, fold_case: bool = False) -> Rule:
    return Rule("choice", choices=choices, fold_case=fold_case)


# Top-level keys of a NeMo 1.0 model_config.yaml that the converter reads (nemo1_arch, legacy_keys, nonsharded,
# the pipeline's vocabulary padding) -> what NeMo 1.0 accepts there.
FIELDS: dict[str, Rule] = {
    # sizes
    "num_layers": count(MAX_LAYERS),
    "hidden_size": count(),
    "ffn_hidden_size": count(nullable=True),  # null: megatron-core's 4 * hidden_size (Mamba configs)
    "num_attention_heads": count(nullable=True),  # required for GPT (nemo1_arch says so); Mamba may leave it out
    "num_query_groups": count(nullable=True),  # null: num_attention_heads
    "kv_channels": count(nullable=True),  # null: hidden_size // num_attention_heads
    "encoder_seq_length": count(),
    "seq_length": count(),
    "max_position_embeddings": count(),
    "make_vocab_size_divisible_by": count(),
    # numbers
    "layernorm_epsilon": number(low=0),
    "init_method_std": number(low=0),
    "hidden_dropout": number(low=0, high=1),  # torch.nn.Dropout's p
    "attention_dropout": number(low=0, high=1),
    "rotary_base": number(above=0),
    "rotary_percentage": number(above=0, high=1),
    "seq_len_interpolation_factor": number(above=0, nullable=True),
    "scale_factor": number(above=0),  # Llama 3.1 rope scaling (scale_positional_embedding: true)
    "low_freq_factor": number(above=0),
    "high_freq_factor": number(above=0),
    "old_context_len": number(above=0),
    # enumerations
    "activation": choice(*ACTIVATIONS),
    "normalization": choice(*NORMALIZATIONS, fold_case=True),
    "position_embedding_type": choice(*POSITION_EMBEDDINGS),
    "transformer_block_type": choice(*BLOCK_TYPES),
    "window_size": Rule("pair", nullable=True),
    # mixture of experts
    "num_moe_experts": count(nullable=True),
    "moe_ffn_hidden_size": count(nullable=True),
    "moe_shared_expert_intermediate_size": count(nullable=True),
    "moe_router_topk": count(),
    "moe_aux_loss_coeff": number(low=0),
    "moe_token_dispatcher_type": choice(*TOKEN_DISPATCHERS),
    "moe_router_load_balancing_type": choice(*LOAD_BALANCING),
    # Mamba (NemotronH)
    "hybrid_override_pattern": Rule("text", nullable=True),
    "mamba_ssm_ngroups": count(),
    "mamba_state_dim": count(),
    "mamba_head_dim": count(),
    # fp8 (carried when fp8: true)
    "fp8_margin": Rule("int", low=0, high=INT32_MAX),
    "fp8_interval": count(),
    "fp8_amax_history_len": count(),
    "fp8_amax_compute_algo": choice(*AMAX_ALGOS),
    # flags
    **{key: FLAG for key in (
        "bias", "qkv_bias", "qk_layernorm", "share_embeddings_and_output_weights", "rotary_interleaved",
        "layernorm_zero_centered_gamma", "openai_gelu", "onnx_safe", "mcore_gpt", "megatron_legacy",
        "apply_embedding_scaling", "multi_latent_attention", "scale_positional_embedding", "fp8", "fp8_e4m3",
        "fp8_hybrid", "apply_rope_fusion", "persist_layer_norm", "masked_softmax_fusion", "bias_activation_fusion",
        "bias_dropout_add_fusion", "gradient_accumulation_fusion", "moe_router_pre_softmax", "moe_grouped_gemm",
        "add_bias_linear", "gated_linear_unit", "transformer_engine", "headscale", "normalize_attention_scores",
    )},
}

# The `tokenizer:` mapping: entries the converter reads (tokenizer.py) -> what they may hold
TOKENIZER_FIELDS: dict[str, Rule] = {
    "library": Rule("text", nullable=True),
    "type": Rule("text", nullable=True),
    "model": Rule("text", nullable=True),
    "vocab_file": Rule("text", nullable=True),
    "merge_file": Rule("text", nullable=True),
    "sentencepiece_legacy": FLAG,
    "use_fast": FLAG,
    "trust_remote_code": FLAG,
}

_REFERENCE = re.compile(r"^\$\{\.?([A-Za-z_][A-Za-z0-9_]*)\}$")  # `${.key}` / `${key}`: another top-level key

Where = Callable[[str], str]  # key (dotted for nested ones) -> "file:line" (or the file alone)


def describe(value: Any, raw: str | None = None) -> str:
    """How a refused value is shown: its YAML text where known, and what YAML made of it."""
    if isinstance(value, bool):
        text = raw if raw is not None else str(value).lower()
        note = "" if text.lower() in ("true", "false") else "; YAML 1.1 reads yes/no/on/off as booleans"
        return f"{text} (a boolean{note})"
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{raw if raw is not None else value} (not a finite number)"
    if isinstance(value, (int, float)):
        return (raw if raw is not None else repr(value)) + (" (a float)" if isinstance(value, float) else "")
    if isinstance(value, str):
        shown = repr(value) if len(value) <= 60 else repr(value[:57]) + "..."
        return f"{shown} (a string)"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _problem(key: str, value: Any, rule: Rule, where: Where, raw: str | None) -> MigratorError:
    return MigratorError(f"{where(key)}: {key}: expected {rule.expected}, got {describe(value, raw)}")


def _resolve(config: dict[str, Any], key: str, where: Where) -> Any:
    """A value that is an OmegaConf reference to another top-level key (`max_position_embeddings:
    ${.encoder_seq_length}`) is that key's value, as NeMo resolves it; any other interpolation is refused."""
    value, seen = config[key], {key}
    while isinstance(value, str) and "${" in value:
        match = _REFERENCE.match(value.strip())
        if not match or match.group(1) in seen or match.group(1) not in config:
            raise MigratorError(f"{where(key)}: {key}: {value!r} is an OmegaConf interpolation nemo-migrate does not "
                                f"resolve; write the value ({FIELDS[key].expected})")
        seen.add(match.group(1))
        value = config[match.group(1)]
    return value


def check_model_config(config: dict[str, Any], where: Where, raw: Callable[[str], str | None] = lambda key: None
                       ) -> None:
    """Refuse the first value of `config` (a NeMo 1.0 model config) that NeMo 1.0 would not accept; references to
    other keys are replaced by their values in place. `where(key)` names the file (and line) in messages, `raw(key)`
    gives the value's YAML text where known."""
    for key, rule in FIELDS.items():
        if key not in config:
            continue
        value = config[key]
        if isinstance(value, str) and "${" in value:
            value = config[key] = _resolve(config, key, where)
        if not rule.accepts(value):
            raise _problem(key, value, rule, where, raw(key))
    if "tokenizer" in config:
        check_tokenizer_section(config["tokenizer"], where, raw)


def check_tokenizer_section(section: Any, where: Where, raw: Callable[[str], str | None] = lambda key: None) -> None:
    """The `tokenizer:` entry is a mapping (or null) whose entries have the types the converter reads."""
    if section is None:
        return
    if not isinstance(section, dict):
        raise MigratorError(f"{where('tokenizer')}: tokenizer: expected a mapping (library:, type:, model:, ...), got "
                            f"{describe(section)}")
    for key, rule in TOKENIZER_FIELDS.items():
        if key in section and not rule.accepts(section[key]):
            name = f"tokenizer.{key}"
            raise MigratorError(f"{where(name)}: {name}: expected {rule.expected}, got "
                                f"{describe(section[key], raw(name))}")
    special = section.get("special_tokens")
    if special is not None and not isinstance(special, (dict, list)):
        raise MigratorError(f"{where('tokenizer.special_tokens')}: tokenizer.special_tokens: expected a mapping or "
                            f"a list, got {describe(special)}")


# The same facts under megatron-core's field names (NeMo 2.0 configs and Megatron-Bridge providers are both
# TransformerConfig subclasses), for values that do not come from a NeMo 1.0 YAML: a NeMo 2.0 checkpoint's
# context/ converted --to bridge, and what `verify --load` builds from a converted checkpoint.
NEMO1_TO_MCORE = {"encoder_seq_length": "seq_length", "rotary_percentage": "rotary_percent", "bias": "add_bias_linear",
                  "qkv_bias": "add_qkv_bias", "bias_dropout_add_fusion": "bias_dropout_fusion",
                  "mamba_ssm_ngroups": "mamba_num_groups"}
_NOT_MCORE = {"activation", "normalization", "position_embedding_type", "max_position_embeddings", "fp8", "fp8_e4m3",
              "fp8_hybrid", "openai_gelu", "onnx_safe", "mcore_gpt", "megatron_legacy", "apply_embedding_scaling",
              "scale_positional_embedding", "transformer_block_type", "transformer_engine", "headscale",
              "normalize_attention_scores"}  # NeMo 1.0 spellings that megatron-core names or types differently
MCORE_FIELDS: dict[str, Rule] = {
    **{NEMO1_TO_MCORE.get(key, key): rule for key, rule in FIELDS.items() if key not in _NOT_MCORE},
    "normalization": choice("LayerNorm", "RMSNorm"),
    "position_embedding_type": choice("learned_absolute", "rope", "mrope", "yarn", "relative", "none"),
    "vocab_size": count(nullable=True),
}


def check_mcore_values(values: dict[str, Any], where: str) -> None:
    """Refuse the first megatron-core config value (NeMo 2.0 / Bridge field names) outside what megatron-core
    accepts; `where` names the file it came from."""
    for key, rule in MCORE_FIELDS.items():
        if key in values and not rule.accepts(values[key]):
            raise MigratorError(f"{where}: {key}: expected {rule.expected}, got {describe(values[key])}")
