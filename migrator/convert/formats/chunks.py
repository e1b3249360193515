"""Where each stored piece of a NeMo 1.0 checkpoint lives, independent of the storage format.

Both source formats (torch_dist and zarr) keep every tensor as one or more chunks (NeMo 1.0 writes at least
one per layer of a stacked `[num_layers, ...]` tensor) and every sharded object as one blob. The pipeline
converts chunk by chunk, so it needs to know for each chunk: which tensor, which region, which file, which
bytes, and how those bytes are encoded. Nothing here imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

# torch dtype name -> (bytes per element, is floating point). Names are torch's, without the "torch." prefix.
DTYPES: dict[str, tuple[int, bool]] = {
    "bfloat16": (2, True),
    "float16": (2, True),
    "float32": (4, True),
    "float64": (8, True),
    "int8": (1, False),
    "uint8": (1, False),
    "int16": (2, False),
    "int32": (4, False),
    "int64": (8, False),
    "bool": (1, False),
}

# `--dtype` values -> torch dtype names
CAST_TARGETS: dict[str, str] = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def itemsize(dtype: str) -> int:
    return DTYPES[dtype][0]


def output_dtype(source_dtype: str, cast: str) -> str:
    """The dtype a tensor gets in the output: `--dtype keep` keeps it; a cast applies to floating tensors only."""
    if cast == "keep" or not DTYPES.get(source_dtype, (0, False))[1]:
        return source_dtype
    return CAST_TARGETS[cast]


@dataclass(frozen=True)
class StoredChunk:
    """One stored region of a tensor.

    encoding "torch_save": the bytes are a `torch.save` blob of exactly this region (torch_dist).
    encoding "raw": the bytes are the region in C order, padded to `stored_shape` at array edges, optionally
    compressed with `compressor` (zarr v2).
    """

    key: str  # NeMo 1.0 checkpoint key
    offsets: tuple[int, ...]  # where the region starts in the global tensor
    sizes: tuple[int, ...]  # the region's shape (valid part)
    member: str  # source member holding the bytes, e.g. "model_weights/__0_0.distcp"
    byte_offset: int
    byte_length: int
    dtype: str
    encoding: str  # "torch_save" | "raw"
    stored_shape: tuple[int, ...] = ()  # raw only: the full chunk shape on disk
    compressor: str | None = None  # raw only: None, "zlib" or "gzip"

    @property
    def nbytes(self) -> int:
        """Bytes of the decoded region."""
        return prod(self.sizes) * itemsize(self.dtype)


@dataclass(frozen=True)
class StoredObject:
    """One sharded object (e.g. a Transformer Engine `_extra_state` of one layer).

    wrapped=True: the bytes are `torch.save([obj])`, what a torch_dist checkpoint stores (megatron-core's torch
    strategy wraps each object in a one-element list). wrapped=False: the bytes are `torch.save(obj)`, the zarr
    layout's `<key>/shard_*.pt`.
    """

    key: str  # full NeMo 1.0 key, e.g. "model.decoder.layers.mlp.linear_fc1._extra_state/shard_0_2"
    member: str
    byte_offset: int
    byte_length: int
    wrapped: bool


# The prefix every model key carries in each checkpoint kind (Megatron-Bridge keys are megatron-core's, unprefixed)
KEY_PREFIX: dict[str, str] = {"nemo1": "model.", "nemo2": "module.", "bridge": ""}


def rename_key(key: str, old: str = "model.", new: str = "module.") -> str:
    """Replace the prefix `old` by `new` (default: NeMo 1.0 "model." -> NeMo 2.0 "module."; Megatron-Bridge drops
    it: new=""). Keys without the prefix are kept as they are. Only the index holds key names, so this is the whole
    of the rename for every destination: the data files are not touched."""
    return new + key[len(old):] if key.startswith(old) else key


def key_renamer(old: str, new: str):
    """`rename_key` with fixed prefixes, as one callable (plans, the index rewrite and verify share it)."""
    return lambda key: rename_key(key, old, new)

