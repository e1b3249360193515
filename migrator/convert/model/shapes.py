"""Check derived NeMo 2.0 architecture values against the checkpoint's tensor shapes, and list the model's keys.

The YAML says what the model should be; the tensors say what was saved. Every tensor whose shape follows from the
architecture is compared, and a contradiction is a MigratorError naming the tensor, the shape it has, the shape the
YAML implies and the YAML keys involved. Keys are NeMo 1.0 dist-checkpoint keys (`model.` prefix, layers stacked
on dim 0) as the readers report them; the returned expected keys use NeMo 2.0's `module.` prefix.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from migrator.convert.formats.types import TensorInfo
from migrator.errors import MigratorError

_PREFIXES = ("model.", "module.")
_EXTRA_STATE = "_extra_state"


@dataclass
class ShapeFacts:
    """What the tensors themselves say, for the plan and for preset comparison."""

    padded_vocab_size: int
    source_dtype: str  # dtype of the word embeddings, e.g. "bfloat16"
    expected_keys: set[str] = field(default_factory=set)  # NeMo 2.0 tensor keys (module.*), no _extra_state


def strip_prefix(key: str) -> str | None:
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return None


def tensor_index(tensors: Mapping[str, TensorInfo]) -> dict[str, TensorInfo]:
    """Tensors by their key without the `model.` prefix; sharded objects (`_extra_state`) are left out."""
    out = {}
    for key, info in tensors.items():
        short = strip_prefix(key)
        if short is not None and _EXTRA_STATE not in short:
            out[short] = info
    if not out:
        raise MigratorError("model_weights: no tensor under the `model.` prefix (not a NeMo 1.0 megatron-core "
                            "GPT checkpoint; virtual-pipeline `model_<i>.` layouts are not supported)")
    return out


class _Checker:
    def __init__(self, index: dict[str, TensorInfo], values: dict, yaml_name: str = "model_config.yaml") -> None:
        self.index = index
        self.v = values
        self.yaml = yaml_name
        self.expected: set[str] = set()

    def expect(self, key: str, shape: tuple[int, ...], because: str, required: bool = True) -> bool:
        """Record `key` as part of the model; if present its shape must be `shape`; absent is an error if required."""
        self.expected.add("module." + key)
        info = self.index.get(key)
        if info is None:
            if required:
                raise MigratorError(f"model.{key}: missing from the checkpoint, but {self.yaml} implies it "
                                    f"({because})")
            return False
        if tuple(info.shape) != tuple(shape):
            raise MigratorError(f"model.{key}: shape {list(info.shape)} contradicts {self.yaml} "
                                f"({because} -> {list(shape)})")
        return True

    def forbid(self, key: str, because: str) -> None:
        if key in self.index:
            raise MigratorError(f"model.{key}: present in the checkpoint, but {self.yaml} says {because}")

    def optional_pair(self, key: str, shape: tuple[int, ...], present: bool, because_on: str,
                      because_off: str) -> None:
        if present:
            self.expect(key, shape, because_on)
        else:
            self.forbid(key, because_off)


def _kv_channels(v: dict) -> int:
    return v["kv_channels"] or v["hidden_size"] // v["num_attention_heads"]


def _embedding(index: Mapping[str, TensorInfo], H: int) -> TensorInfo:
    """The word embedding, which every family has as [padded_vocab, hidden_size]."""
    emb = index.get("embedding.word_embeddings.weight")
    if emb is None:
        raise MigratorError("model.embedding.word_embeddings.weight: missing from the checkpoint")
    if len(emb.shape) != 2 or emb.shape[1] != H:
        raise MigratorError(f"model.embedding.word_embeddings.weight: shape {list(emb.shape)} contradicts "
                            f"model_config.yaml (hidden_size={H} -> [padded_vocab, {H}])")
    return emb


def check_gpt(values: dict, tensors: Mapping[str, TensorInfo]) -> ShapeFacts:
    """megatron-core GPTModel layout (local or Transformer Engine spec; dense or MoE)."""
    index = tensor_index(tensors)
    v = values
    c = _Checker(index, v)
    H, L = v["hidden_size"], v["num_layers"]
    heads = v["num_attention_heads"]
    groups = v["num_query_groups"] or heads
    kv = _kv_channels(v)
    ffn = v["ffn_hidden_size"]
    fc1_rows = ffn * (2 if v["gated_linear_unit"] else 1)
    layernorm = v["normalization"] == "LayerNorm"
    bias = bool(v["add_bias_linear"])
    dims = (f"num_attention_heads={heads}, num_query_groups={v['num_query_groups']}, "
            f"kv_channels={v['kv_channels']}, hidden_size={H}")

    emb = _embedding(index, H)
    vocab = emb.shape[0]
    c.expect("embedding.word_embeddings.weight", (vocab, H), f"hidden_size={H}")

    # every stacked layer tensor has num_layers on dim 0
    for key, info in index.items():
        if key.startswith("decoder.layers.") and not re.match(r"decoder\.layers\.\d+\.", key):
            if not info.shape or info.shape[0] != L:
                raise MigratorError(f"model.{key}: shape {list(info.shape)} contradicts model_config.yaml "
                                    f"(num_layers={L} stacked on dim 0)")
        elif re.match(r"decoder\.layers\.\d+\.", key):
            raise MigratorError(f"model.{key}: per-layer keys are not the megatron-core GPT layout this family "
                                f"uses (expected layers stacked as decoder.layers.*)")

    c.optional_pair("embedding.position_embeddings.weight", (v["seq_length"], H),
                    v["position_embedding_type"] == "learned_absolute",
                    f"position_embedding_type=learned_absolute, encoder_seq_length={v['seq_length']}",
                    f"position_embedding_type: {v['position_embedding_type']}")

    attn = "decoder.layers.self_attention."
    c.expect(attn + "linear_qkv.weight", (L, (heads + 2 * groups) * kv, H), dims)
    c.expect(attn + "linear_proj.weight", (L, H, heads * kv), dims)
    c.expect(attn + "linear_qkv.layer_norm_weight", (L, H), f"hidden_size={H}")
    c.optional_pair(attn + "linear_qkv.layer_norm_bias", (L, H), layernorm, "normalization: LayerNorm",
                    f"normalization: {v['normalization']} (no bias)")
    c.optional_pair(attn + "linear_qkv.bias", (L, (heads + 2 * groups) * kv), bias or bool(v["add_qkv_bias"]),
                    f"bias/qkv_bias: true, {dims}", "bias: false and qkv_bias: false")
    c.optional_pair(attn + "linear_proj.bias", (L, H), bias, "bias: true", "bias: false")
    for norm in ("q_layernorm", "k_layernorm"):
        c.optional_pair(attn + f"{norm}.weight", (L, kv), bool(v["qk_layernorm"]),
                        f"qk_layernorm: true, kv_channels={kv}", "qk_layernorm: false")
        if v["qk_layernorm"] and layernorm:
            c.expect(attn + f"{norm}.bias", (L, kv), "qk_layernorm with LayerNorm")

    mlp = "decoder.layers.mlp."
    experts = v.get("num_moe_experts")
    moe_keys = [k for k in index if k.startswith(mlp + "router.") or k.startswith(mlp + "experts.")]
    if experts is None and moe_keys:
        raise MigratorError(f"model.{sorted(moe_keys)[0]}: MoE tensor present, but model_config.yaml has no "
                            f"num_moe_experts")
    if experts is None:
        c.expect(mlp + "linear_fc1.weight", (L, fc1_rows, H),
                 f"ffn_hidden_size={ffn}, activation gated={v['gated_linear_unit']}")
        c.expect(mlp + "linear_fc2.weight", (L, H, ffn), f"ffn_hidden_size={ffn}")
        c.expect(mlp + "linear_fc1.layer_norm_weight", (L, H), f"hidden_size={H}")
        c.optional_pair(mlp + "linear_fc1.layer_norm_bias", (L, H), layernorm, "normalization: LayerNorm",
                        f"normalization: {v['normalization']} (no bias)")
        c.optional_pair(mlp + "linear_fc1.bias", (L, fc1_rows), bias, "bias: true", "bias: false")
        c.optional_pair(mlp + "linear_fc2.bias", (L, H), bias, "bias: true", "bias: false")
    else:
        moe_ffn = v.get("moe_ffn_hidden_size") or ffn
        moe_rows = moe_ffn * (2 if v["gated_linear_unit"] else 1)
        c.expect(mlp + "router.weight", (L, experts, H), f"num_moe_experts={experts}, hidden_size={H}")
        # the pre-MLP norm is saved as mlp.linear_fc1.layer_norm_* (local spec) or pre_mlp_layernorm.* (TE spec)
        norm_keys = [k for k in (mlp + "linear_fc1.layer_norm_weight", "decoder.layers.pre_mlp_layernorm.weight")
                     if k in index]
        for key in (mlp + "linear_fc1.layer_norm_weight", "decoder.layers.pre_mlp_layernorm.weight"):
            c.expect(key, (L, H), f"hidden_size={H}", required=False)
            bias_key = key.replace("weight", "bias")
            if layernorm:
                c.expect(bias_key, (L, H), "normalization: LayerNorm", required=key in index)
            else:
                c.forbid(bias_key, f"normalization: {v['normalization']} (no bias)")
        if not norm_keys:
            raise MigratorError(f"model.{mlp}linear_fc1.layer_norm_weight: missing from the checkpoint (nor "
                                f"decoder.layers.pre_mlp_layernorm.weight), but an MoE layer has a pre-MLP norm")
        ex = mlp + "experts.experts."
        if ex + "linear_fc1.weight" in index or ex + "linear_fc2.weight" in index:  # SequentialMLP layout
            because = f"num_moe_experts={experts}, ffn_hidden_size={moe_ffn}, gated={v['gated_linear_unit']}"
            c.expect(ex + "linear_fc1.weight", (L, experts, moe_rows, H), because)
            c.expect(ex + "linear_fc2.weight", (L, experts, H, moe_ffn), because)
            c.optional_pair(ex + "linear_fc1.bias", (L, experts, moe_rows), bias, "bias: true", "bias: false")
            c.optional_pair(ex + "linear_fc2.bias", (L, experts, H), bias, "bias: true", "bias: false")
        else:  # grouped-GEMM layouts: record what is there, the router already fixed the expert count
            c.expected.update("module." + k for k in moe_keys)
        shared = v.get("moe_shared_expert_intermediate_size")
        sh = mlp + "shared_experts."
        if shared:
            c.expect(sh + "linear_fc1.weight", (L, shared * (2 if v["gated_linear_unit"] else 1), H),
                     f"moe_shared_expert_intermediate_size={shared}")
            c.expect(sh + "linear_fc2.weight", (L, H, shared), f"moe_shared_expert_intermediate_size={shared}")
        else:
            c.forbid(sh + "linear_fc1.weight", "moe_shared_expert_intermediate_size is not set")

    c.expect("decoder.final_layernorm.weight", (H,), f"hidden_size={H}")
    c.optional_pair("decoder.final_layernorm.bias", (H,), layernorm, "normalization: LayerNorm",
                    f"normalization: {v['normalization']} (no bias)")
    tied = bool(v["share_embeddings_and_output_weights"])
    c.optional_pair("output_layer.weight", (vocab, H), not tied,
                    "share_embeddings_and_output_weights: false (a separate output layer)",
                    "share_embeddings_and_output_weights: true (the output layer is the embedding)")
    return ShapeFacts(padded_vocab_size=vocab, source_dtype=emb.dtype, expected_keys=c.expected)


def check_mamba(values: dict, tensors: Mapping[str, TensorInfo]) -> ShapeFacts:
    """Hybrid Mamba layout (NemotronH): per-layer keys decoder.layers.<i>.{mixer,self_attention,mlp}.*"""
    index = tensor_index(tensors)
    v = values
    H = v["hidden_size"]
    emb = _embedding(index, H)
    pattern = v["hybrid_override_pattern"]
    kinds = {"M": "mixer.", "*": "self_attention.", "-": "mlp."}
    layers: dict[int, set[str]] = {}
    for key in index:
        m = re.match(r"decoder\.layers\.(\d+)\.(\w+\.)", key)
        if m:
            layers.setdefault(int(m.group(1)), set()).add(m.group(2))
    if layers and max(layers) + 1 != len(pattern):
        raise MigratorError(f"model.decoder.layers.{max(layers)}: the checkpoint has {max(layers) + 1} layers, "
                            f"model_config.yaml num_layers/hybrid_override_pattern has {len(pattern)}")
    expected = {"module.embedding.word_embeddings.weight"}
    for i, symbol in enumerate(pattern):
        want = kinds[symbol]
        if want not in layers.get(i, set()):
            raise MigratorError(f"model.decoder.layers.{i}.{want}*: missing; hybrid_override_pattern[{i}] is "
                                f"{symbol!r} but the checkpoint has {sorted(layers.get(i, set()))}")
        expected.update("module." + k for k in index if k.startswith(f"decoder.layers.{i}.{want}"))
        in_proj = index.get(f"decoder.layers.{i}.mixer.in_proj.weight")
        if in_proj is not None and in_proj.shape[-1] != H:
            raise MigratorError(f"model.decoder.layers.{i}.mixer.in_proj.weight: shape {list(in_proj.shape)} "
                                f"contradicts model_config.yaml (hidden_size={H})")
    expected.update("module." + k for k in index if k.startswith("decoder.final_norm."))
    if not v["share_embeddings_and_output_weights"]:
        expected.add("module.output_layer.weight")
    return ShapeFacts(padded_vocab_size=emb.shape[0], source_dtype=emb.dtype, expected_keys=expected)
