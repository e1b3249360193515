"""What a YAML file is, for the lint: one function, `classify`, returns the kind of config a YAML document holds.

Kinds (`Config.kind`), decided in this order:
- "bridge": a Megatron-Bridge YAML (an override file or a `run_config.yaml`): its top-level `checkpoint:` mapping
  names a Bridge `CheckpointConfig` field of any release, or targets the class. Decided before any NeMo 1.0
  classification, since a run_config.yaml also has `model:` (Megatron-Bridge's model provider, no NeMo 1.0 model
  block); its block is judged by the Bridge rules (NM2xx), nothing is migrated from it;
- "training": a NeMo 1.0 training config (`model:` mapping, or `trainer`/`exp_manager`);
- "model": the `model_config.yaml` stored in a `.nemo` (model fields at the top);
- "nemo2": a YAML written for NeMo 2.0 (a `strategy:` block holding MegatronStrategy arguments, at the top level
  or under `trainer:`): its strategy block is judged against NeMo 2.0's arguments, nothing is migrated over it;
- None: not a NeMo config (a CI workflow, a docker-compose file); not judged.

For a NeMo 1.0 config, `Config.checkpoints` says whether the model writes megatron-core distributed checkpoints,
which is what the `dist_ckpt_*` settings and their NeMo 2.0 defaults are about. NeMo decides by model class:
MegatronGPTModel, MegatronBertModel and the T5 (encoder-decoder) models read `mcore_gpt` / `mcore_bert` /
`mcore_t5` with a default of False (`cfg.get('mcore_gpt', False)`, NeMo v1.21 to v2.4), so a missing flag means
legacy (non-distributed) checkpoints; Mamba and Griffin set megatron-core unconditionally; a fine-tuning config
that restores a `.nemo` (`restore_from_path`) and writes no flag inherits the flag from it (one it writes wins:
`merge_cfg_with` and `restore_from(override_config_path=cfg.model)` let the YAML's keys override); FSDP configs
write FSDP checkpoints; and
models that are no Megatron language model at all (ASR, TTS, Stable Diffusion, ViT, launcher conversion, export
and evaluation stages) write none.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from migrator.yaml.document import Node

# top-level keys whose presence makes a YAML file a NeMo model config (the model_config.yaml of a .nemo)
MODEL_FIELDS = frozenset({
    "num_layers", "hidden_size", "encoder_seq_length", "ffn_hidden_size", "num_attention_heads", "mcore_gpt",
    "precision", "tokenizer", "make_vocab_size_divisible_by", "max_position_embeddings", "target",
})
TRAINING_MARKERS = frozenset({"trainer", "exp_manager"})
MCORE_FLAGS = {"mcore_gpt": "GPT", "mcore_bert": "BERT", "mcore_t5": "T5"}
# keys only NeMo's Mamba / Griffin models have: they are megatron-core whatever mcore_gpt says
ALWAYS_MCORE = {"mamba_ssm_ngroups": "Mamba", "hybrid_override_pattern": "Mamba", "mamba_head_dim": "Mamba",
                "rglru_dim": "Griffin"}

VIT_KEYS = frozenset({"vision_pretraining_type", "patch_dim", "img_h", "img_w"})

Kind = Literal["training", "model", "nemo2", "bridge"]
Checkpoints = Literal["distributed", "legacy", "inherited", "fsdp", "none"]


@dataclass
class Config:
    """One YAML document classified as a NeMo config."""

    root: Node
    kind: Kind
    model: Node | None  # the mapping holding model settings (`model:` or the root of a model config)
    model_key: Node | None  # the `model` key node of a training config
    checkpoints: Checkpoints = "distributed"
    family: str | None = None  # GPT / BERT / T5 / Mamba / Griffin where the file says
    flag: tuple[Node, Node] | None = None  # the mcore_* pair that decided, if the file has one
    strategy: tuple[Node, Node] | None = None  # a NeMo 2.0 `strategy:` block (kind "nemo2")
    checkpoint: tuple[Node, Node] | None = None  # a Megatron-Bridge top-level `checkpoint:` block (kind "bridge")
    saves: bool = True  # whether the run writes checkpoints (a training run, not evaluation or generation)

    def model_path(self) -> tuple[str, ...]:
        return ("model",) if self.kind == "training" else ()

    @property
    def distributed(self) -> bool:
        """Whether the model writes megatron-core distributed checkpoints (or may: the flag is inherited)."""
        return self.checkpoints in ("distributed", "inherited")


def classify(root: Node) -> Config | None:
    """The kind of config one YAML document holds (None: not a NeMo config)."""
    if root.kind != "mapping":
        return None
    checkpoint = bridge_checkpoint(root)
    if checkpoint is not None:
        return Config(root, "bridge", None, None, checkpoints="none", checkpoint=checkpoint)
    strategy = nemo2_strategy(root)
    if strategy is not None:
        return Config(root, "nemo2", None, None, checkpoints="none", strategy=strategy)
    keys = root.keys()
    pair = root.pair("model")
    if pair and pair[1].kind == "mapping":
        config = Config(root, "training", pair[1], pair[0])
    elif keys & TRAINING_MARKERS:
        return Config(root, "training", None, None, checkpoints="none")
    elif keys & MODEL_FIELDS or any(str(k).startswith("dist_ckpt_") for k in keys):
        config = Config(root, "model", root, None)
    else:
        return None
    config.checkpoints, config.family, config.flag = checkpoint_kind(config.model, root)
    config.saves = saves_checkpoints(root, config.model)
    return config


def saves_checkpoints(root: Node, model: Node) -> bool:
    """False only where the file says the run writes no checkpoints: `exp_manager.create_checkpoint_callback:
    False` (NeMo's scripts create the checkpoint callback through exp_manager), or an evaluation or generation
    config (a top-level `inference:` block and no optimizer)."""
    if root.kind != "mapping" or model is root:
        return True  # a model_config.yaml: what it is used for is not in the file
    manager = root.get("exp_manager")
    callback = manager.get("create_checkpoint_callback") if _mapping(manager) else None
    if callback is not None and callback.kind == "scalar" and callback.value is False:
        return False
    return not (_mapping(root.get("inference")) and model.get("optim") is None)


def bridge_checkpoint(root: Node) -> tuple[Node, Node] | None:
    """The top-level `checkpoint:` mapping when it names a Megatron-Bridge CheckpointConfig field (of any release)
    or a `_target_` naming the class: the mark of a Bridge YAML."""
    pair = root.pair("checkpoint")
    if pair is None or pair[1].kind != "mapping":
        return None
    keys = [str(k.raw) for k, _ in pair[1].items if k.kind == "scalar"]
    if not keys:
        return None
    from migrator.engine.bridge_table import load_bridge_table  # only for files with such a block

    bridge = load_bridge_table()
    target = pair[1].get("_target_")
    if target is not None and target.kind == "scalar" and str(target.value) in bridge.mapping.class_names:
        return pair
    return pair if any(bridge.lifespan(k) is not None for k in keys) else None


def nemo2_strategy(root: Node) -> tuple[Node, Node] | None:
    """A `strategy:` mapping (top level or under `trainer:`) holding MegatronStrategy arguments or a `_target_`
    naming a strategy class: the mark of a YAML written for NeMo 2.0."""
    holders = [root]
    trainer = root.get("trainer")
    if trainer is not None and trainer.kind == "mapping":
        holders.append(trainer)
    for holder in holders:
        pair = holder.pair("strategy")
        if pair is None or pair[1].kind != "mapping":
            continue
        target = pair[1].get("_target_")
        names = pair[1].keys()
        if (target is not None and target.kind == "scalar" and "Strategy" in str(target.raw)) or any(
                str(k).startswith("ckpt_") or str(k) == "save_ckpt_format" for k in names):
            return pair
    return None


def checkpoint_kind(model: Node, root: Node) -> tuple[Checkpoints, str | None, tuple[Node, Node] | None]:
    """(what checkpoints the model writes, its family, the flag pair that said so)."""
    keys = model.keys()
    if keys & VIT_KEYS:
        return "none", "ViT", None  # MegatronVitClassificationModel: no mcore flag, no sharded_state_dict
    if _mapping(model.get("vision")) and _mapping(model.get("text")):
        return "none", "CLIP", None  # MegatronCLIPModel reads mcore_gpt but has no sharded_state_dict (v2.0-v2.4)
    fsdp = _true(model.get("fsdp"))
    for key, family in ALWAYS_MCORE.items():
        if model.get(key) is not None:
            return ("fsdp" if _true(model.get("fsdp")) else "distributed"), family, None
    for flag, family in MCORE_FLAGS.items():
        pair = model.pair(flag)
        if pair is None:
            continue
        value = pair[1].value if pair[1].kind == "scalar" else None
        if value is False:
            return "legacy", family, pair
        if value is True:
            return ("fsdp" if _true(model.get("fsdp")) else "distributed"), family, pair
        return "inherited", family, pair  # an interpolation or null: decided elsewhere
    if _restores(model, root) and "tensor_model_parallel_size" in keys:
        # fine-tuning a .nemo without a flag of its own: the flag comes with the .nemo (merge_cfg_with and
        # restore_from(override_config_path=cfg.model) let the YAML's keys win, so a flag it writes decides)
        return ("fsdp" if fsdp else "inherited"), megatron_family(model), None
    family = megatron_family(model)
    if family is None:
        if any(str(k).startswith("dist_ckpt_") for k in model.keys()):
            return "distributed", None, None  # no model class to tell by: judged on the settings it writes
        return "none", None, None
    return "legacy", family, None


def megatron_family(model: Node) -> str | None:
    """GPT / BERT / T5 for a Megatron language-model config without an mcore flag (None: something else)."""
    keys = model.keys()
    encoder, decoder = model.get("encoder"), model.get("decoder")
    parallel = "tensor_model_parallel_size" in keys
    if parallel and encoder is not None and decoder is not None and encoder.kind == decoder.kind == "mapping" \
            and "num_layers" in encoder.keys():
        return "T5"
    if not (parallel and "num_layers" in keys and "encoder_seq_length" in keys):
        return None
    if "bert_binary_head" in keys:
        return "BERT"
    return "GPT"


def _restores(model: Node, root: Node) -> bool:
    """A fine-tuning config: `model.restore_from_path` (NeMo) or `pretrained_checkpoint.restore_from_path`
    (NeMo-Aligner, the launcher's RLHF stages) names the .nemo it starts from."""
    pretrained = root.get("pretrained_checkpoint")
    for holder in (model, pretrained):
        node = holder.get("restore_from_path") if _mapping(holder) else None
        if node is not None and node.kind == "scalar" and node.value is not None:
            return True
    return False


def _mapping(node: Node | None) -> bool:
    return node is not None and node.kind == "mapping"


def _true(node: Node | None) -> bool:
    return node is not None and node.kind == "scalar" and node.value is True
