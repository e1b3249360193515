"""Small value types shared by the converter's readers, planner and context writer."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a NeMo 1.0 dist checkpoint, as its index describes it (nothing decoded)."""

    key: str  # NeMo 1.0 checkpoint key, e.g. "model.decoder.layers.mlp.linear_fc1.weight"
    shape: tuple[int, ...]  # global shape; per-layer tensors are stacked on dim 0
    dtype: str  # torch dtype name without the "torch." prefix, e.g. "bfloat16"
    nbytes: int
