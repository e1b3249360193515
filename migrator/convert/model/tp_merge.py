"""How the tensor-parallel pieces of one parameter become the TP=1 tensor (megatron-core names, per layer).

Each parameter is split one way (megatron-core / NeMo 1.0 `ColumnParallelLinear`, `RowParallelLinear`,
`VocabParallelEmbedding`):
- column-parallel (dim 0): `linear_qkv` (grouped-query heads are grouped per rank, so the ranks' rows simply
  follow each other), `linear_fc1` and its bias;
- gated column-parallel: a swiglu/geglu `linear_fc1` holds `[gate_r; up_r]` on each rank, and the TP=1 tensor is
  `[gate_0 .. gate_n; up_0 .. up_n]`. (NeMo's `megatron_change_num_partitions.py` de-interleaves this only for the
  legacy `dense_h_to_4h`, not for `linear_fc1`, so its own merges of megatron-core swiglu models are wrong.)
- row-parallel (dim 1): `linear_proj`, `linear_fc2` weights;
- vocab-parallel (dim 0): word embeddings and the output layer; rows past the TP=1 padded vocabulary are
  dropped, as NeMo's merge narrows them (`compute_tp_merge`);
- replicated: norms, row-parallel biases, position embeddings (every rank holds the same tensor).
A merged tensor is described as byte ranges of the rank files (`Segment`s, or the column blocks of a row-parallel
weight), so it can be written without ever holding it, or a rank's state, in memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from migrator.errors import MigratorError

if TYPE_CHECKING:
    from migrator.convert.read.nonsharded import TensorRef

VOCAB, COLUMN, GATED, ROW, REPLICATED = "vocab", "column", "gated", "row", "replicated"


@dataclass(frozen=True)
class Segment:
    """Rows [row, row + count) of one rank's tensor (dim 0; a 1-D tensor has one element per row)."""

    ref: "TensorRef"
    row: int
    count: int


@dataclass
class MergedTensor:
    name: str  # stacked dist-checkpoint key
    layer: int | None  # global layer number
    kind: str
    shape: tuple[int, ...]  # the merged (TP=1) shape of this layer's tensor
    dtype: str
    segments: list[Segment] = field(default_factory=list)  # output = these rows, in order (all but ROW)
    columns: list["TensorRef"] = field(default_factory=list)  # ROW: output[:, ...] = concat of these on dim 1
    ranks: list[dict[str, "TensorRef"]] = field(default_factory=list)  # per TP rank: part -> tensor (verify)

    @property
    def nbytes(self) -> int:
        from migrator.convert.formats.chunks import itemsize

        n = itemsize(self.dtype)
        for d in self.shape:
            n *= d
        return n


def partition_kind(name: str, gated: bool) -> str:
    """How a parameter (stacked dist-checkpoint key) is split across tensor-parallel ranks."""
    if name.endswith("word_embeddings.weight") or name == "model.output_layer.weight":
        return VOCAB
    if ".mlp.router." in name or ".mlp.experts." in name or ".mlp.shared_experts." in name:
        raise MigratorError(f"{name}: mixture-of-experts layers in a non-distributed checkpoint are not supported")
    if name.endswith((".linear_qkv.weight", ".linear_qkv.bias")):
        return COLUMN
    if name.endswith((".linear_fc1.weight", ".linear_fc1.bias")):
        return GATED if gated else COLUMN
    if name.endswith((".linear_proj.weight", ".linear_fc2.weight")):
        return ROW
    if name.endswith(("layer_norm_weight", "layer_norm_bias", "final_layernorm.weight", "final_layernorm.bias",
                      ".linear_proj.bias", ".linear_fc2.bias", "q_layernorm.weight", "q_layernorm.bias",
                      "k_layernorm.weight", "k_layernorm.bias", "position_embeddings.weight")):
        return REPLICATED
    raise MigratorError(f"not a megatron-core GPT parameter this converter knows ({name}; adapter / PEFT weights "
                        "are not converted)")


def _same_shapes(refs: Sequence["TensorRef"], name: str, describe) -> tuple[int, ...]:
    first = refs[0]
    for ref in refs[1:]:
        if ref.shape != first.shape or ref.dtype != first.dtype:
            raise MigratorError(f"{describe(ref.member)}: {ref.key} is {list(ref.shape)} {ref.dtype}, but "
                                f"{list(first.shape)} {first.dtype} in {describe(first.member)} (tensor-parallel "
                                "ranks of one parameter must agree)")
    return first.shape


def merge_plan(name: str, layer: int | None, ranks: list[dict[str, "TensorRef"]], *, gated: bool,
               legacy_qkv_heads: int | None = None, vocab_rows: int | None = None, describe=str) -> MergedTensor:
    """The TP=1 tensor of one parameter from its per-rank pieces (`ranks[t]`: part -> TensorRef; part "all",
    or "gate"/"up" for a non-fused gated MLP). `legacy_qkv_heads`: attention heads of a `megatron_legacy`
    model, whose qkv rows are `[3, heads_r, head_dim]` per rank instead of megatron-core's
    `[heads_r, 3, head_dim]`. `vocab_rows`: rows of the merged vocabulary tensors (None: all)."""
    tp = len(ranks)
    try:
        kind = partition_kind(name, gated)
    except MigratorError as error:
        ref = next(iter(ranks[0].values()))
        raise MigratorError(f"{describe(ref.member)}: {ref.key}: {error}") from None
    parts = sorted(ranks[0])
    for t, pieces in enumerate(ranks):
        if sorted(pieces) != parts:
            ref = next(iter(pieces.values()))
            raise MigratorError(f"{describe(ref.member)}: {name} (layer {layer}) has parts {sorted(pieces)}, "
                                f"tensor-parallel rank 0 has {parts}")
    if parts == ["gate", "up"]:
        if kind != GATED:
            raise MigratorError(f"{describe(ranks[0]['up'].member)}: {ranks[0]['up'].key}: a second MLP input "
                                "projection (dense_h_to_4h_2), but the activation is not gated")
        gate = [p["gate"] for p in ranks]
        up = [p["up"] for p in ranks]
        gshape, ushape = _same_shapes(gate, name, describe), _same_shapes(up, name, describe)
        if gshape[1:] != ushape[1:]:
            raise MigratorError(f"{describe(up[0].member)}: {up[0].key} is {list(ushape)}, "
                                f"{gate[0].key} is {list(gshape)}")
        segments = [Segment(r, 0, r.rows) for r in gate] + [Segment(r, 0, r.rows) for r in up]
        shape = (tp * (gshape[0] + ushape[0]), *gshape[1:])
        return MergedTensor(name, layer, kind, shape, gate[0].dtype, segments, ranks=ranks)
    if parts == ["gate"]:  # a fused legacy dense_h_to_4h: the same layout as megatron-core's linear_fc1
        ranks = [{"all": p["gate"]} for p in ranks]
    elif parts != ["all"]:
        raise MigratorError(f"{name}: unexpected parts {parts}")
    refs = [p["all"] for p in ranks]
    shape = _same_shapes(refs, name, describe)
    dtype = refs[0].dtype
    if kind == REPLICATED or tp == 1 and kind != GATED and legacy_qkv_heads is None:
        rows = shape[0] if shape else 1
        if kind == VOCAB and vocab_rows is not None:
            rows = _vocab_rows(refs, rows, vocab_rows, describe)
            shape = (rows, *shape[1:])
        return MergedTensor(name, layer, kind, shape, dtype, [Segment(refs[0], 0, rows)], ranks=ranks)
    if not shape:
        raise MigratorError(f"{describe(refs[0].member)}: {refs[0].key} is a scalar; it cannot be {kind}-parallel")
    if kind == ROW:
        if len(shape) < 2:
            raise MigratorError(f"{describe(refs[0].member)}: {refs[0].key} is {list(shape)}; a row-parallel "
                                "weight has two dimensions")
        return MergedTensor(name, layer, kind, (shape[0], tp * shape[1], *shape[2:]), dtype, columns=refs,
                            ranks=ranks)
    rows = shape[0]
    if kind == GATED:
        if rows % 2:
            raise MigratorError(f"{describe(refs[0].member)}: {refs[0].key} has {rows} rows; a gated MLP input "
                                "projection holds [gate; up] (an even number)")
        half = rows // 2
        segments = [Segment(r, 0, half) for r in refs] + [Segment(r, half, half) for r in refs]
        return MergedTensor(name, layer, kind, (tp * rows, *shape[1:]), dtype, segments, ranks=ranks)
    if legacy_qkv_heads is not None and name.endswith((".linear_qkv.weight", ".linear_qkv.bias")):
        heads = legacy_qkv_heads // tp
        if legacy_qkv_heads % tp or rows % (3 * heads):
            raise MigratorError(f"{describe(refs[0].member)}: {refs[0].key} has {rows} rows, which is not "
                                f"3 x {heads} heads per rank (num_attention_heads={legacy_qkv_heads}, TP={tp})")
        head_dim = rows // (3 * heads)
        segments = [Segment(r, s * heads * head_dim + h * head_dim, head_dim)
                    for r in refs for h in range(heads) for s in range(3)]
        return MergedTensor(name, layer, kind, (tp * rows, *shape[1:]), dtype, segments, ranks=ranks)
    segments = [Segment(r, 0, rows) for r in refs]
    total = tp * rows
    if kind == VOCAB and vocab_rows is not None:
        total = _vocab_rows(refs, total, vocab_rows, describe)
        kept, segments = total, []
        for r in refs:
            if kept <= 0:
                break
            segments.append(Segment(r, 0, min(rows, kept)))
            kept -= rows
    return MergedTensor(name, layer, kind, (total, *shape[1:]), dtype, segments, ranks=ranks)


def _vocab_rows(refs: Sequence["TensorRef"], merged: int, wanted: int, describe) -> int:
    if wanted > merged:
        raise MigratorError(f"{describe(refs[0].member)}: {refs[0].key}: the merged vocabulary has {merged} rows, "
                            f"fewer than the {wanted} the tokenizer needs")
    return wanted


def padded_vocab(vocab_size: int, divisible_by: int) -> int:
    """NeMo's padding of the tokenizer's vocabulary at TP=1 (`_vocab_size_with_padding`)."""
    return -(-vocab_size // divisible_by) * divisible_by
