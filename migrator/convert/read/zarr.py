"""A small reader for the zarr v2 checkpoints NeMo 1.0 wrote (megatron-core >= 0.16 cannot read them at all).

Layout of a zarr `model_weights/`: one directory per tensor key holding `.zarray` (JSON) and one file per chunk
(named by chunk indices, "0.1.0"); sharded objects (e.g. Transformer Engine `_extra_state`) as
`<key>/shard_<i>_<n>.pt`, each a bare `torch.save(obj)`. megatron-core wrote chunks raw (compressor null), in C
order, with the non-standard dtype string "bfloat16" for bf16. We read exactly that, plus the two compressors the
standard library can decode (zlib, gzip); anything else is refused with a clear error.
"""
from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass
from math import ceil, prod
from typing import TYPE_CHECKING, Mapping

from migrator.convert.formats.chunks import StoredChunk, StoredObject, itemsize
from migrator.convert.formats.json_data import json_object
from migrator.convert.formats.safe_pickle import brief
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

    def chunk_count(self) -> int:
        return prod(ceil(n / c) for n, c in zip(self.shape, self.chunk_shape))

    def chunk_name(self, chunk_index: tuple[int, ...]) -> str:
        return self.separator.join(str(i) for i in chunk_index) if chunk_index else "0"

    def stored_nbytes(self) -> int:
        return prod(self.chunk_shape) * itemsize(self.dtype)


MAX_DIMS = 64
MAX_ELEMENTS = 1 << 48
# deflate cannot expand data more than about 1032-fold; a compressed chunk file that would have to expand more than
# this to hold its declared chunk is truncated (and a declared chunk shape cannot make the reader inflate a small
# file into gigabytes: see `decompressed`)
MAX_INFLATION = 1100


def _dims(value: object, lowest: int) -> tuple[int, ...] | None:
    if not isinstance(value, list) or len(value) > MAX_DIMS:
        return None
    if not all(isinstance(n, int) and not isinstance(n, bool) and lowest <= n <= MAX_ELEMENTS for n in value):
        return None
    return tuple(value)


def parse_zarray(text: bytes, key: str, what: str) -> ZarrArray:
    """Parse one `.zarray`; `what` (the member name) goes into errors. Every field is checked for its type and
    range: a field of another type is one MigratorError naming the member and the field."""
    meta = json_object(text, what)
    if meta.get("zarr_format") != 2 or isinstance(meta.get("zarr_format"), bool):
        raise MigratorError(f"{what}: not a zarr v2 array (zarr_format {brief(meta.get('zarr_format'), 40)})")
    dtype_string = meta.get("dtype")
    if not isinstance(dtype_string, str) or dtype_string not in ZARR_DTYPES:
        raise MigratorError(f"{what}: unsupported zarr dtype {brief(dtype_string, 60)}")
    if meta.get("order", "C") != "C":
        raise MigratorError(f"{what}: only C-order chunks are supported (order {brief(meta.get('order'), 40)})")
    if meta.get("filters"):
        raise MigratorError(f"{what}: zarr filters {brief(meta['filters'], 80)} are not supported")
    compressor = meta.get("compressor")
    compressor_id = None
    if compressor is not None:
        compressor_id = compressor.get("id") if isinstance(compressor, dict) else compressor
        if not isinstance(compressor_id, str) or compressor_id not in SUPPORTED_COMPRESSORS:
            raise MigratorError(f"{what}: chunks are compressed with {brief(compressor_id, 60)}, which this reader "
                                f"cannot decode (supported: none, {', '.join(SUPPORTED_COMPRESSORS)})")
    shape = _dims(meta.get("shape"), 0)
    chunk_shape = _dims(meta.get("chunks"), 1)
    if shape is None or chunk_shape is None or len(shape) != len(chunk_shape):
        raise MigratorError(f"{what}: shape {brief(meta.get('shape'), 60)} and chunks "
                            f"{brief(meta.get('chunks'), 60)} are not two lists of as many sizes (at most "
                            f"{MAX_DIMS}; sizes in [0, 2**48], chunk sizes at least 1)")
    if prod(shape) > MAX_ELEMENTS or prod(chunk_shape) > MAX_ELEMENTS:
        raise MigratorError(f"{what}: shape {list(shape)} or chunks {list(chunk_shape)} hold more than 2**48 "
                            "elements")
    separator = meta.get("dimension_separator", ".")
    if separator not in (".", "/") or not isinstance(separator, str):
        raise MigratorError(f"{what}: unsupported dimension_separator {brief(separator, 40)}")
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
        count = array.chunk_count()
        if count > len(member_sizes):
            raise MigratorError(f"{prefix}{key}/.zarray: declares {count} chunks; the checkpoint holds "
                                f"{len(member_sizes)} files (chunk files of {key} are missing)")
        key_chunks = []
        for chunk_index in array.chunk_grid():
            member = f"{prefix}{key}/{array.chunk_name(chunk_index)}"
            size = member_sizes.get(member)
            if size is None:
                raise MigratorError(f"{member}: chunk file of {key} is missing")
            if array.compressor is None and size < stored:
                raise MigratorError(f"{member}: truncated chunk of {key} ({size} of {stored} bytes)")
            if array.compressor is None and size > stored:
                raise MigratorError(f"{member}: chunk of {key} has {size} bytes, more than the {stored} of its "
                                    f"shape {list(array.chunk_shape)} {array.dtype}")
            if array.compressor is not None and stored > size * MAX_INFLATION:
                raise MigratorError(f"{member}: truncated chunk of {key} ({size} compressed bytes cannot hold "
                                    f"{stored} bytes of data)")
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


def _inflate(data: bytearray, chunk: StoredChunk, limit: int) -> bytearray:
    """Decompress a zlib or gzip chunk, producing at most `limit` + 1 bytes whatever the input says (a small file can
    inflate a thousandfold: a zlib bomb reached 4 GB), and checking the stream to its end (gzip: its CRC)."""
    gzip_format = chunk.compressor == "gzip"
    out = bytearray()
    pending = bytes(data)
    while True:
        inflater = zlib.decompressobj(31 if gzip_format else 15)
        try:
            out += inflater.decompress(pending, limit + 1 - len(out))
        except zlib.error as error:
            raise MigratorError(f"{chunk.member}: corrupt {chunk.compressor} data in the chunk of {chunk.key} "
                                f"({error})") from None
        if len(out) > limit:
            raise MigratorError(f"{chunk.member}: the chunk of {chunk.key} decompresses to more than the {limit} "
                                f"bytes of its declared shape {list(chunk.stored_shape)} {chunk.dtype}")
        if not inflater.eof:
            raise MigratorError(f"{chunk.member}: truncated {chunk.compressor} data in the chunk of {chunk.key}")
        pending = inflater.unused_data
        if not (gzip_format and pending):  # zlib ignores what follows the stream (as zlib.decompress does);
            return out  # gzip reads member after member (as gzip.decompress does)


def decompressed(chunk: StoredChunk, data: bytearray) -> bytearray:
    """A raw zarr chunk's bytes, decompressed into a writable buffer (torch.frombuffer wants one) and checked to
    hold exactly the stored chunk (decompression stops past that size)."""
    stored = prod(chunk.stored_shape) * itemsize(chunk.dtype)
    if chunk.compressor in ("zlib", "gzip"):
        data = _inflate(data, chunk, stored)
    if len(data) < stored:
        raise MigratorError(f"{chunk.member}: truncated chunk of {chunk.key} ({len(data)} of {stored} bytes)")
    if len(data) > stored:
        raise MigratorError(f"{chunk.member}: chunk of {chunk.key} has {len(data)} bytes, more than the {stored} "
                            f"of its shape {list(chunk.stored_shape)} {chunk.dtype}")
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
