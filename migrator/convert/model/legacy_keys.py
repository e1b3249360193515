"""Key names of NeMo 1.0 non-distributed state dicts -> the megatron-core names of a NeMo 1.0 dist checkpoint.

Two generations are read:
- megatron-core GPT (`mcore_gpt: True`) saved with `torch.save(model.state_dict())`: per-layer keys
  `model.decoder.layers.<i>.…`. CPU/local-spec files name the norms `input_layernorm` / `pre_mlp_layernorm`; in a
  dist checkpoint (and in NeMo 2.0) they are `self_attention.linear_qkv.layer_norm_*` / `mlp.linear_fc1.layer_norm_*`
  (megatron-core's local spec maps them so in its `sharded_state_dict_keys_map`); Transformer-Engine files already
  use those names.
- pre-megatron-core GPT (`mcore_gpt: False`): `model.language_model.…` keys, mapped as NeMo's
  `scripts/checkpoint_converters/convert_gpt_nemo_to_mcore.py` (`build_key_mapping`) does, plus what that script
  leaves out: `dense_h_to_4h_2` (non-fused *glu, concatenated after `dense_h_to_4h`), `megatron_legacy` qkv
  order (fixed by the merge), and the last pipeline stage's copy of tied word embeddings (dropped).
`model.module.` (NeMo's O2 mixed-precision wrapper) is read as `model.`.

A mapped key is the stacked dist-checkpoint name (`model.decoder.layers.<rest>`, layers on dim 0) plus the layer
number inside the file's pipeline stage, and a `part` for the two halves of a non-fused gated MLP.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from migrator.errors import MigratorError

_MCORE_LAYER = re.compile(r"^model\.decoder\.layers\.(\d+)\.(.+)$")
_LEGACY_LAYER = re.compile(r"^model\.language_model\.encoder\.layers\.(\d+)\.(.+)$")

# local-spec module names -> the names a dist checkpoint (and NeMo 2.0) uses
_MCORE_LAYER_RENAMES = {
    "input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight",
    "input_layernorm.bias": "self_attention.linear_qkv.layer_norm_bias",
    "pre_mlp_layernorm.weight": "mlp.linear_fc1.layer_norm_weight",
    "pre_mlp_layernorm.bias": "mlp.linear_fc1.layer_norm_bias",
}

# legacy per-layer module -> megatron-core module (suffixes .weight / .bias / ._extra_state follow)
_LEGACY_LAYER_MODULES = {
    "self_attention.query_key_value": "self_attention.linear_qkv",
    "self_attention.dense": "self_attention.linear_proj",
    "mlp.dense_h_to_4h": "mlp.linear_fc1",
    "mlp.dense_h_to_4h_2": "mlp.linear_fc1",  # second half of a non-fused *glu
    "mlp.dense_4h_to_h": "mlp.linear_fc2",
}
_LEGACY_LAYER_NORMS = {
    "input_layernorm": "self_attention.linear_qkv.layer_norm_",
    "post_attention_layernorm": "mlp.linear_fc1.layer_norm_",
}
_LEGACY_TOP = {
    "model.language_model.embedding.word_embeddings.weight": "model.embedding.word_embeddings.weight",
    "model.language_model.embedding.position_embeddings.weight": "model.embedding.position_embeddings.weight",
    "model.language_model.encoder.final_layernorm.weight": "model.decoder.final_layernorm.weight",
    "model.language_model.encoder.final_layernorm.bias": "model.decoder.final_layernorm.bias",
    "model.language_model.output_layer.weight": "model.output_layer.weight",
}
# buffers recomputed by the model, and the last pipeline stage's copy of tied embeddings
_LEGACY_DROPPED = {"model.language_model.rotary_pos_emb.inv_freq", "model.word_embeddings.weight"}


@dataclass(frozen=True)
class MappedKey:
    name: str  # stacked dist-checkpoint key, e.g. "model.decoder.layers.self_attention.linear_qkv.weight"
    layer: int | None  # layer number inside the file (its pipeline stage), None for non-layer tensors
    part: str = "all"  # "all", or "gate"/"up" for the two tensors of a non-fused gated MLP (legacy *glu)


def strip_wrapper(key: str) -> str:
    return "model." + key[len("model.module."):] if key.startswith("model.module.") else key


def map_mcore_key(key: str) -> MappedKey | None:
    key = strip_wrapper(key)
    match = _MCORE_LAYER.match(key)
    if match is None:
        if key.endswith("._extra_state"):
            return None  # e.g. output_layer._extra_state: not part of a dist checkpoint
        return MappedKey(key, None)
    layer, rest = int(match.group(1)), match.group(2)
    return MappedKey("model.decoder.layers." + _MCORE_LAYER_RENAMES.get(rest, rest), layer)


def map_legacy_key(key: str, what: str) -> MappedKey | None:
    key = strip_wrapper(key)
    if key in _LEGACY_DROPPED:
        return None
    if key in _LEGACY_TOP:
        return MappedKey(_LEGACY_TOP[key], None)
    match = _LEGACY_LAYER.match(key)
    if match is None:
        if key.endswith("._extra_state"):
            return None
        raise MigratorError(f"{what}: {key} has no megatron-core equivalent (a pre-megatron-core GPT key this "
                            "converter does not know)")
    layer, rest = int(match.group(1)), match.group(2)
    module, _, suffix = rest.rpartition(".")
    if module in _LEGACY_LAYER_NORMS and suffix in ("weight", "bias"):
        return MappedKey("model.decoder.layers." + _LEGACY_LAYER_NORMS[module] + suffix, layer)
    if module in _LEGACY_LAYER_MODULES and suffix in ("weight", "bias", "_extra_state"):
        part = "up" if module.endswith("_2") else ("gate" if module == "mlp.dense_h_to_4h" else "all")
        return MappedKey(f"model.decoder.layers.{_LEGACY_LAYER_MODULES[module]}.{suffix}", layer, part)
    if suffix == "_extra_state":
        return None
    raise MigratorError(f"{what}: {key} has no megatron-core equivalent (e.g. normformer / post-LN layers, "
                        "adapters or cross-attention are not GPT layouts convert_gpt_nemo_to_mcore.py handles)")


def check_legacy_config(cfg: dict, what: str = "model_config.yaml") -> None:
    """Refuse pre-megatron-core settings that have no megatron-core GPT equivalent."""
    block = cfg.get("transformer_block_type", "pre_ln")
    if block != "pre_ln":
        raise MigratorError(f"{what}: transformer_block_type: {block!r} has no megatron-core equivalent (pre_ln "
                            "only)")
    for key in ("normalize_attention_scores", "headscale"):
        if key == "normalize_attention_scores" and cfg.get(key, True) is False:
            raise MigratorError(f"{what}: normalize_attention_scores: false has no megatron-core equivalent")
        if key == "headscale" and cfg.get(key, False):
            raise MigratorError(f"{what}: headscale: true has no megatron-core equivalent")
    if cfg.get("num_query_groups") not in (None, cfg.get("num_attention_heads")):
        raise MigratorError(f"{what}: num_query_groups: {cfg.get('num_query_groups')} in a pre-megatron-core "
                            "model (its attention is multi-head only)")
