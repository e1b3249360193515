"""A small reader for the zarr v2 checkpoints NeMo 1.0 wrote (megatron-core >= 0.16 cannot read them at all).

Layout of a zarr `model_weights/`: one directory per tensor key holding `.zarray` (JSON) and one file per chunk
(named by chunk indices, "0.1.0"); sharded objects (e.g. Transformer Engine `_extra_state`) as
`<key>/shard_<i>_<n>.pt`, each a bare `torch.save(obj)`. megatron-core wrote chunks raw (compressor null), in C
order, with the non-standard dtype string "bfloat16" for bf16. We read exactly that, plus the two compressors the
standard library can decode (zlib, gzip); anything else is refused with a clear error.
"""
from __future__ import annotations

import gzip
import itertools
import json
import zlib
from dataclasses import dataclass
from math import ceil, prod
from typing import TYPE_CHECKING, Mapping

from migrator.convert.formats.chunks import StoredChunk, StoredObject, itemsize
from migrator.convert.formats.types import TensorInfo
from migrator.errors import MigratorError

if TYPE_CHECKING:
    import torch

# zarr v2 dtype strings (numpy typestr, plus megatron-core's "bfloat16") -> torch dtype names
ZARR_DTYPES: dict[str, str] = {
    "bfloat16": "bfloat16",
    "<f2": "float16", "<f4": "float32", "<f8": "float64",
    "|i1": "int8", "|u1": "uint8", "<i2": "int16", "<i4": "int32", "<i8": "int64",
    "|b1": "bool",
}
SUPPORTED_COMPRESSORS = ("zlib", "gzip")


@dataclass(frozen=True)
class ZarrArray:
    """One tensor of a zarr checkpoint, from its `.zarray`."""

    key: str
    shape: tuple[int, ...]
    chunk_shape: tuple[int, ...]
    dtype: str  # torch dtype name
    compressor: str | None
    separator: str  # "." or "/"

    def chunk_grid(self) -> list[tuple[int, ...]]:
        """Chunk indices in C order (a 0-d array has one chunk, index ())."""
        counts = [ceil(n / c) if c else 0 for n, c in zip(self.shape, self.chunk_shape)]
        return list(itertools.product(*(range(n) for n in counts)))

    def chunk_name(self, chunk_index: tuple[int, ...]) -> str:
        return self.separator.join(str(i) for i in chunk_index) if chunk_index else "0"

    def stored_nbytes(self) -> int:
        return prod(self.chunk_shape) * itemsize(self.dtype)


def parse_zarray(text: bytes, key: str, what: str) -> ZarrArray:
    """Parse one `.zarray`; `what` (the member name) goes into errors."""
    try:
        meta = json.loads(text)
    except ValueError as error:
        raise MigratorError(f"{what}: not valid JSON ({error})") from None
    if not isinstance(meta, dict) or meta.get("zarr_format") != 2:
        raise MigratorError(f"{what}: not a zarr v2 array (zarr_format {meta.get('zarr_format') if isinstance(meta, dict) else None!r})")
    dtype_string = meta.get("dtype")
    if dtype_string not in ZARR_DTYPES:
        raise MigratorError(f"{what}: unsupported zarr dtype {dtype_string!r}")
    if meta.get("order", "C") != "C":
        raise MigratorError(f"{what}: Fortran-order chunks are not supported (order {meta.get('order')!r})")
    if meta.get("filters"):
        raise MigratorError(f"{what}: zarr filters {meta['filters']!r} are not supported")
    compressor = meta.get("compressor")
    compressor_id = None
    if compressor is not None:
        compressor_id = compressor.get("id") if isinstance(compressor, dict) else str(compressor)
        if compressor_id not in SUPPORTED_COMPRESSORS:
            raise MigratorError(f"{what}: chunks are compressed with {compressor_id!r}, which this reader cannot "
                                f"decode (supported: none, {', '.join(SUPPORTED_COMPRESSORS)})")
    shape = tuple(int(n) for n in meta.get("shape", ()))
    chunk_shape = tuple(int(n) for n in meta.get("chunks", ()))
    if len(shape) != len(chunk_shape) or any(n < 0 for n in shape) or any(c <= 0 for c in chunk_shape):
        raise MigratorError(f"{what}: inconsistent shape {list(shape)} and chunks {list(chunk_shape)}")
    separator = meta.get("dimension_separator", ".")
    if separator not in (".", "/"):
        raise MigratorError(f"{what}: unsupported dimension_separator {separator!r}")
    return ZarrArray(key, shape, chunk_shape, ZARR_DTYPES[dtype_string], compressor_id, separator)


@dataclass
class ZarrIndex:
    tensors: dict[str, TensorInfo]
    chunks: dict[str, list[StoredChunk]]
    objects: dict[str, StoredObject]


def build_zarr_index(zarrays: Mapping[str, ZarrArray], member_sizes: Mapping[str, int],
                     member_dir: str = "model_weights") -> ZarrIndex:
    """Chunks and objects of a zarr checkpoint, from its parsed `.zarray`s and the sizes of the members present.

    A missing chunk file is an error (zarr would read it as fill_value; in a checkpoint it means lost data), and so
    is a chunk file shorter than a stored chunk (a truncated file), both naming the member.
    """
    prefix = f"{member_dir}/" if member_dir else ""
    tensors: dict[str, TensorInfo] = {}
    chunks: dict[str, list[StoredChunk]] = {}
    for key, array in sorted(zarrays.items()):
        stored = array.stored_nbytes()
        key_chunks = []
        for chunk_index in array.chunk_grid():
            member = f"{prefix}{key}/{array.chunk_name(chunk_index)}"
            size = member_sizes.get(member)
            if size is None:
                raise MigratorError(f"{member}: chunk file of {key} is missing")
            if array.compressor is None and size < stored:
                raise MigratorError(f"{member}: truncated chunk of {key} ({size} of {stored} bytes)")
            offsets = tuple(i * c for i, c in zip(chunk_index, array.chunk_shape))
            sizes = tuple(min(c, n - o) for c, n, o in zip(array.chunk_shape, array.shape, offsets))
            key_chunks.append(StoredChunk(key, offsets, sizes, member, 0, size, array.dtype, "raw",
                                          stored_shape=array.chunk_shape, compressor=array.compressor))
        chunks[key] = key_chunks
        tensors[key] = TensorInfo(key=key, shape=array.shape, dtype=array.dtype,
                                  nbytes=prod(array.shape) * itemsize(array.dtype))
    objects: dict[str, StoredObject] = {}
    for member, size in member_sizes.items():
        if not member.startswith(prefix):
            continue
        parts = member[len(prefix):].split("/")
        if len(parts) == 2 and parts[1].startswith("shard_") and parts[1].endswith(".pt"):
            key = f"{parts[0]}/{parts[1][:-len('.pt')]}"
            objects[key] = StoredObject(key, member, 0, size, wrapped=False)
    return ZarrIndex(tensors, chunks, objects)


def is_zarr_chunk_member(relative: str) -> bool:
    """True for `<key>/<chunk>` members (data), False for `.zarray`, `.zattrs`, `shard_*.pt` and top-level files."""
    parts = relative.split("/")
    if len(parts) < 2:
        return False
    leaf = parts[-1]
    return not leaf.startswith(".") and not (len(parts) == 2 and leaf.startswith("shard_") and leaf.endswith(".pt"))


def decompressed(chunk: StoredChunk, data: bytearray) -> bytearray:
    """A raw zarr chunk's bytes, decompressed into a writable buffer (torch.frombuffer wants one) and checked to
    hold the whole stored chunk."""
    if chunk.compressor == "zlib":
        data = bytearray(zlib.decompress(data))
    elif chunk.compressor == "gzip":
        data = bytearray(gzip.decompress(data))
    stored = prod(chunk.stored_shape) * itemsize(chunk.dtype)
    if len(data) < stored:
        raise MigratorError(f"{chunk.member}: truncated chunk of {chunk.key} ({len(data)} of {stored} bytes)")
    return data


def decode_chunk(chunk: StoredChunk, data: bytearray) -> "torch.Tensor":
    """The valid region of a raw zarr chunk as a tensor. Shares `data`'s memory unless it is compressed or an edge
    chunk."""
    import torch

    data = decompressed(chunk, data)
    dtype = getattr(torch, chunk.dtype)
    if prod(chunk.stored_shape) == 0:
        return torch.empty(chunk.sizes, dtype=dtype)
    flat = torch.frombuffer(data, dtype=dtype, count=prod(chunk.stored_shape))
    tensor = flat.view(chunk.stored_shape) if chunk.stored_shape else flat.view(())
    if tuple(chunk.sizes) != tuple(chunk.stored_shape):  # an edge chunk: zarr pads it to the full chunk shape
        tensor = tensor[tuple(slice(0, s) for s in chunk.sizes)].contiguous()
    return tensor
