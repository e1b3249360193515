"""What happens to each sharded object (`_extra_state`) of the source checkpoint.

NeMo 2.0's restore requests every `_extra_state/shard_<layer>_<layers>` object its model has, and fails when one
is missing, so every object of the source is carried into `weights/`, byte for byte where the source is torch_dist.

Transformer Engine's attention (`self_attention.core_attention._extra_state`) is the one NeMo's own converter
does not load: it marks that object non-persistent, so the NeMo 2.0 model keeps a freshly initialised one. The
reason is a version gap: checkpoints made with older Transformer Engine have no such object, while newer ones
expect it ("Missing key ... core_attention._extra_state/shard_0_32", NeMo issue 12298). We handle both cases
without losing data:
- the source has core_attention objects: carry them as they are (they hold the fp8 scaling history of the
  attention; for a model trained without fp8 they are empty), unless `--reset-attention-extra-state` asks for
  NeMo's behaviour;
- a Transformer Engine source has none: write a `[None]` placeholder per layer. Transformer Engine's
  `set_extra_state(None)` returns without touching the module, which is exactly NeMo's "freshly initialised",
  and a model without that object simply ignores the unexpected key.
A reset writes the same `[None]` placeholder.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from migrator.convert.formats.chunks import StoredObject, rename_key

CORE_ATTENTION = "decoder.layers.self_attention.core_attention._extra_state"
_TE_LINEAR = "decoder.layers.self_attention.linear_qkv._extra_state"
_SHARD = re.compile(r"/shard_(\d+)_(\d+)$")


@dataclass(frozen=True)
class ObjectPlan:
    key: str  # NeMo 1.0 key (for an added placeholder: the key it would have had)
    new_key: str  # NeMo 2.0 key
    stored: StoredObject | None  # None for an added placeholder
    action: str  # "carry" | "reset" | "add"


def is_core_attention(key: str) -> bool:
    return key.split("/", 1)[0].endswith(CORE_ATTENTION)


def plan_objects(objects: Mapping[str, StoredObject], model_config: Mapping[str, Any], reset_attention: bool,
                 warn: Callable[[str], None], rename: Callable[[str], str] = rename_key,
                 te_model: bool | None = None) -> list[ObjectPlan]:
    """One ObjectPlan per output object, in key order (`rename`: source key -> output key).

    `te_model`: whether the model that loads the output may be a Transformer Engine one, which then needs the
    attention objects (default: what model_config.yaml's `transformer_engine` says, as NeMo 1.0 built it)."""
    plans = []
    for key in sorted(objects):
        action = "reset" if reset_attention and is_core_attention(key) else "carry"
        plans.append(ObjectPlan(key, rename(key), objects[key], action))
    if reset_attention and any(p.action == "reset" for p in plans):
        warn(f"{CORE_ATTENTION}: reset to an empty state in every layer (--reset-attention-extra-state)")

    has_attention = any(is_core_attention(k) for k in objects)
    linear = [m for k in objects if k.split("/", 1)[0].endswith(_TE_LINEAR) for m in [_SHARD.search(k)] if m]
    if te_model is None:
        te_model = bool(model_config.get("transformer_engine"))
    if te_model and linear and not has_attention:
        prefix = next(k for k in objects if k.split("/", 1)[0].endswith(_TE_LINEAR)).split(_TE_LINEAR)[0]
        layers = int(linear[0].group(2))
        for layer in range(layers):
            key = f"{prefix}{CORE_ATTENTION}/shard_{layer}_{layers}"
            plans.append(ObjectPlan(key, rename(key), None, "add"))
        if model_config.get("transformer_engine"):
            warn(f"{CORE_ATTENTION}: missing in this Transformer Engine checkpoint (made with an older Transformer "
                 f"Engine); writing {layers} empty placeholders, so a NeMo 2.0 model that expects them keeps its "
                 "freshly initialised attention state (what NeMo's own converter does)")
        else:
            warn(f"{CORE_ATTENTION}: not in this checkpoint (saved without Transformer Engine attention); writing "
                 f"{layers} empty placeholders, which a Transformer Engine model (Megatron-Bridge's default layer "
                 "spec wherever Transformer Engine is installed) requests and initialises afresh; a local-spec "
                 "model ignores them")
    return sorted(plans, key=lambda p: p.new_key)
