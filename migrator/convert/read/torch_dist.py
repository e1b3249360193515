"""The index (`.metadata`) of a torch_dist checkpoint: read it safely, list what it holds, rename its keys.

A torch_dist checkpoint keeps tensor data in `__<rank>_<i>.distcp` files as concatenated `torch.save` blobs, one
per chunk, and the key names only in `.metadata` (a pickled `torch.distributed.checkpoint.metadata.Metadata`).
So NeMo 1.0 -> 2.0 key renaming ("model." -> "module.") is a rewrite of `.metadata` alone: the data files are
copied (or linked) untouched. This module reads `.metadata` with an allowlisted unpickler into stand-ins
(see `safe_pickle`), never importing torch, and writes the renamed index back.
"""
from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from migrator.convert.formats.chunks import DTYPES, StoredChunk, StoredObject, itemsize
from migrator.convert.formats.safe_pickle import (
    PickledObject,
    brief,
    dump_stand_ins,
    global_name,
    is_instance_of,
    load_allowlisted,
    make_object,
)
from migrator.convert.formats.types import TensorInfo
from migrator.errors import MigratorError

_DCP_METADATA = "torch.distributed.checkpoint.metadata"
_DCP_PLANNER = "torch.distributed.checkpoint.planner"

# Exactly the classes a DCP `.metadata` written by torch 2.x (through megatron-core's torch strategy) refers to.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {(_DCP_METADATA, name) for name in (
        "Metadata", "StorageMeta", "MetadataIndex", "TensorStorageMetadata", "BytesStorageMetadata",
        "ChunkStorageMetadata", "TensorProperties", "_MEM_FORMAT_ENCODING")}
    | {("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
       ("torch", "Size"),
       ("torch.serialization", "_get_layout"),
       ("torch", "strided"),
       ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"),
       ("pathlib", "WindowsPath"), ("pathlib", "PureWindowsPath")}
    | {("torch", dtype) for dtype in DTYPES}
    # megatron-core caches its save plans in the index (`all_local_plans`); read as inert data, dropped on write.
    | {("megatron.core.dist_checkpointing.strategies.torch", "MCoreSavePlan"),
       (_DCP_PLANNER, "SavePlan"), (_DCP_PLANNER, "WriteItem"), (_DCP_PLANNER, "WriteItemType"),
       (_DCP_PLANNER, "TensorWriteData")}
)

# Attributes of the index that only matter when saving again with the same structure (megatron-core's plan cache).
_SAVE_CACHE_ATTRIBUTES = ("all_local_plans",)


@dataclass
class DcpIndex:
    """What a torch_dist `.metadata` says: tensors, their chunks and where they are, sharded objects."""

    metadata: PickledObject  # the Metadata stand-in (edited by `renamed_metadata`)
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    chunks: dict[str, list[StoredChunk]] = field(default_factory=dict)
    objects: dict[str, StoredObject] = field(default_factory=dict)
    what: str = ".metadata"  # the file it was read from, for messages


# Bounds on what an index may declare: far above any real checkpoint, low enough that arithmetic and memory on them
# stay trivial (a tensor of 2**48 elements is 512 TiB of bf16; torch itself allows at most 64 dimensions).
MAX_DIMS = 64
MAX_ELEMENTS = 1 << 48
MAX_BYTES = 1 << 56
MAX_KEY_LENGTH = 4096


def _state(obj: Any, what: str) -> dict:
    state = obj.state if isinstance(obj, PickledObject) else None
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict) and isinstance(
            state[1], (dict, type(None))):  # (dict, slots) form
        merged = dict(state[0])
        merged.update(state[1] or {})
        return merged
    if not isinstance(state, dict):
        raise MigratorError(f"{what}: unexpected index structure ({brief(obj)})")
    return state


def _count(value: Any, limit: int) -> int | None:
    """`value` as a count in [0, limit] (an int, not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit else None


def _size(value: Any, what: str) -> tuple[int, ...]:
    """A torch.Size stand-in (REDUCE with one tuple argument) as a tuple of ints, each in [0, MAX_ELEMENTS]."""
    if is_instance_of(value, "torch", "Size") and len(value.args) == 1:
        value = value.args[0]
    if isinstance(value, (tuple, list)) and len(value) <= MAX_DIMS:
        dims = tuple(_count(v, MAX_ELEMENTS) for v in value)
        if None not in dims:
            return dims  # type: ignore[return-value]
    raise MigratorError(f"{what}: expected a torch.Size of at most {MAX_DIMS} sizes in [0, 2**48], found "
                        f"{brief(value)}")


def _dtype_of(properties: Any, what: str) -> str:
    """The dtype name of a TensorProperties stand-in (torch >= 2.2 pickles a tuple state, older a dict)."""
    if not is_instance_of(properties, _DCP_METADATA, "TensorProperties"):
        raise MigratorError(f"{what}: properties {brief(properties)} are not a TensorProperties")
    state = properties.state
    if isinstance(state, tuple) and state:
        dtype = state[0]
    elif isinstance(state, dict):
        dtype = state.get("dtype")
    else:
        dtype = None
    name = global_name(dtype)
    if name is None or not name.startswith("torch.") or name[len("torch."):] not in DTYPES:
        raise MigratorError(f"{what}: unsupported tensor dtype {name or brief(dtype)}")
    return name[len("torch."):]


def _check_relative_path(path: Any, what: str) -> str:
    if not isinstance(path, str) or not path or "/" in path or "\\" in path or path in (".", "..") \
            or len(path) > 255 or not path.isprintable():
        raise MigratorError(f"{what}: refers to data file {brief(path)}, which is not a plain file name")
    return path


def _check_key(key: Any, what: str) -> str:
    """A state-dict key: a non-empty printable string (it names files and goes into one-line messages)."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise MigratorError(f"{what}: key {brief(key)} is not a non-empty printable string of at most "
                            f"{MAX_KEY_LENGTH} characters")
    return key


def _volume(sizes: tuple[int, ...]) -> int:
    volume = 1
    for n in sizes:
        volume *= n
    return volume


def _check_tiling(chunks: list[StoredChunk], shape: tuple[int, ...], where: str) -> None:
    """The chunks cover the tensor exactly: no two overlap and their volumes add up to the tensor's. Swept along
    the first dimension, so only chunks whose first-dimension ranges meet are compared (the layers of a stacked
    tensor: a few at a time)."""
    numel = _volume(shape)
    covered = sum(_volume(c.sizes) for c in chunks)
    if covered != numel:
        raise MigratorError(f"{where}: chunks cover {covered} of {numel} elements (a partial or overlapping index)")
    if not shape:
        if len(chunks) != 1:
            raise MigratorError(f"{where}: a 0-d tensor stored in {len(chunks)} chunks")
        return
    active: list[StoredChunk] = []
    for chunk in sorted((c for c in chunks if _volume(c.sizes)), key=lambda c: c.offsets[0]):
        active = [a for a in active if a.offsets[0] + a.sizes[0] > chunk.offsets[0]]
        for other in active:
            if all(o < p + q and p < o + s for o, s, p, q in zip(chunk.offsets, chunk.sizes, other.offsets,
                                                                   other.sizes)):
                raise MigratorError(f"{where}: chunks at {list(other.offsets)} and {list(chunk.offsets)} overlap")
        active.append(chunk)


def parse_dcp_metadata(data: bytes, what: str, member_dir: str = "model_weights") -> DcpIndex:
    """Read a `.metadata` pickle (allowlisted stand-ins; torch is not imported) into a `DcpIndex`.

    `what` names the file in error messages; `member_dir` is prefixed to the data file names so that chunk
    locations are source member names ("model_weights/__0_0.distcp"). Everything the index declares is checked
    before it is used: types, shapes and sizes within bounds, chunks tiling their tensor, a storage entry for each
    chunk and object, printable keys; anything else is a MigratorError naming the file and the key.
    """
    metadata = load_allowlisted(data, ALLOWED_GLOBALS, what)
    if not is_instance_of(metadata, _DCP_METADATA, "Metadata"):
        raise MigratorError(f"{what}: not a torch.distributed.checkpoint Metadata pickle")
    state = _state(metadata, what)
    entries = state.get("state_dict_metadata")
    storage = state.get("storage_data")
    if not isinstance(entries, dict) or not isinstance(storage, dict):
        raise MigratorError(f"{what}: index has no state_dict_metadata/storage_data")
    for name in ("mcore_data", "planner_data"):
        extra = state.get(name)
        if isinstance(extra, dict) and not all(isinstance(k, str) for k in extra):
            raise MigratorError(f"{what}: {name} has a key that is not a string ("
                                f"{brief(next(k for k in extra if not isinstance(k, str)))})")

    # storage_data: MetadataIndex(fqn, offset) -> _StorageInfo(relative_path, offset, length)
    locations: dict[tuple[str, tuple[int, ...] | None], tuple[str, int, int]] = {}
    for index, info in storage.items():
        if not is_instance_of(index, _DCP_METADATA, "MetadataIndex") or not is_instance_of(
                info, "torch.distributed.checkpoint.filesystem", "_StorageInfo"):
            raise MigratorError(f"{what}: storage_data entry {brief(index, 60)} -> {brief(info, 60)} is not a "
                                "MetadataIndex -> _StorageInfo")
        index_state = _state(index, what)
        info_state = _state(info, what)
        fqn = _check_key(index_state.get("fqn"), f"{what}: storage_data")
        offset = index_state.get("offset")
        where = f"{what}: {fqn}"
        if info_state.get("transform_descriptors"):
            raise MigratorError(f"{where}: stored with transforms {brief(info_state['transform_descriptors'])}, "
                                "which this converter does not decode")
        relative = _check_relative_path(info_state.get("relative_path"), where)
        start, length = _count(info_state.get("offset"), MAX_BYTES), _count(info_state.get("length"), MAX_BYTES)
        if start is None or length is None:
            raise MigratorError(f"{where}: bad storage range {brief(info_state.get('offset'), 40)}+"
                                f"{brief(info_state.get('length'), 40)}")
        place = (fqn, None if offset is None else _size(offset, where))
        if place in locations:
            raise MigratorError(f"{where}: two storage entries for the chunk at "
                                f"{'no offset' if place[1] is None else list(place[1])}")
        locations[place] = (relative, start, length)

    index = DcpIndex(metadata=metadata, what=what)
    prefix = f"{member_dir}/" if member_dir else ""
    for key, entry in entries.items():
        where = f"{what}: {_check_key(key, what)}"
        if is_instance_of(entry, _DCP_METADATA, "BytesStorageMetadata"):
            location = locations.get((key, None))
            if location is None:
                raise MigratorError(f"{where}: sharded object has no storage entry")
            relative, start, length = location
            index.objects[key] = StoredObject(key, prefix + relative, start, length, wrapped=True)
            continue
        if not is_instance_of(entry, _DCP_METADATA, "TensorStorageMetadata"):
            raise MigratorError(f"{where}: unexpected index entry {brief(entry)}")
        entry_state = _state(entry, where)
        dtype = _dtype_of(entry_state.get("properties"), where)
        shape = _size(entry_state.get("size"), where)
        numel = _volume(shape)
        if numel > MAX_ELEMENTS:
            raise MigratorError(f"{where}: shape {list(shape)} has {numel} elements (more than 2**48)")
        listed = entry_state.get("chunks")
        if not isinstance(listed, (list, tuple)):
            raise MigratorError(f"{where}: chunks {brief(listed)} are not a list")
        chunks: list[StoredChunk] = []
        for chunk in listed:
            if not is_instance_of(chunk, _DCP_METADATA, "ChunkStorageMetadata"):
                raise MigratorError(f"{where}: chunk {brief(chunk)} is not a ChunkStorageMetadata")
            chunk_state = _state(chunk, where)
            offsets = _size(chunk_state.get("offsets"), where)
            sizes = _size(chunk_state.get("sizes"), where)
            if len(offsets) != len(shape) or len(sizes) != len(shape) or any(
                    o + s > n for o, s, n in zip(offsets, sizes, shape)):
                raise MigratorError(f"{where}: chunk at {list(offsets)} size {list(sizes)} lies outside "
                                    f"the tensor shape {list(shape)}")
            location = locations.get((key, offsets))
            if location is None:
                raise MigratorError(f"{where}: chunk at {list(offsets)} has no storage entry")
            relative, start, length = location
            stored = StoredChunk(key, offsets, sizes, prefix + relative, start, length, dtype, "torch_save")
            if length < stored.nbytes:
                raise MigratorError(f"{where}: chunk at {list(offsets)} is stored in {length} bytes, fewer than its "
                                    f"{stored.nbytes} bytes of {dtype} data")
            chunks.append(stored)
        _check_tiling(chunks, shape, where)
        index.tensors[key] = TensorInfo(key=key, shape=shape, dtype=dtype, nbytes=numel * itemsize(dtype))
        index.chunks[key] = chunks
    return index


def renamed_metadata(index: DcpIndex, rename: Callable[[str], str],
                     objects: Mapping[str, tuple[str, int, int]] | None = None) -> bytes:
    """The `.metadata` pickle with every key renamed, megatron-core's save-plan cache dropped and a fresh save id.

    Renamed: the keys of `state_dict_metadata` and `mcore_data`, `MetadataIndex.fqn` in `storage_data`, and
    `planner_data` (a flattening map {fqn: path} when present). Everything else (chunk layout, byte ranges,
    tensor properties) is written back exactly as read. The source index is not modified.
    `objects` ({new key: (data file, offset, length)}) points sharded objects at other bytes (a reset object) or
    adds new ones (placeholders).
    """
    metadata = index.metadata
    state = dict(_state(metadata, ".metadata"))
    state["state_dict_metadata"] = {rename(k): v for k, v in state["state_dict_metadata"].items()}
    new_storage = {}
    for storage_index, info in state["storage_data"].items():
        new_index = _copy_stand_in(storage_index)
        index_state = dict(_state(storage_index, ".metadata"))
        index_state["fqn"] = rename(index_state["fqn"])
        new_index.state = index_state
        new_storage[new_index] = info
    for key, (relative_path, offset, length) in (objects or {}).items():
        for storage_index in [i for i in new_storage if i.state.get("fqn") == key]:
            del new_storage[storage_index]
        state["state_dict_metadata"][key] = make_object(_DCP_METADATA, "BytesStorageMetadata")
        new_index = make_object(_DCP_METADATA, "MetadataIndex", state={"fqn": key, "offset": None, "index": None})
        new_storage[new_index] = make_object("torch.distributed.checkpoint.filesystem", "_StorageInfo",
                                             state={"relative_path": relative_path, "offset": offset,
                                                    "length": length})
    state["storage_data"] = new_storage
    if isinstance(state.get("mcore_data"), dict):
        state["mcore_data"] = {rename(k): v for k, v in state["mcore_data"].items()}
    planner_data = state.get("planner_data")
    if isinstance(planner_data, dict):
        state["planner_data"] = {
            rename(k): tuple(rename(p) if isinstance(p, str) else p for p in v) if isinstance(v, (tuple, list)) else v
            for k, v in planner_data.items()}
    for attribute in _SAVE_CACHE_ATTRIBUTES:
        state.pop(attribute, None)
    storage_meta = state.get("storage_meta")
    if isinstance(storage_meta, PickledObject) and isinstance(storage_meta.state, dict):
        # checkpoint_id records where the source was saved (an absolute path on another machine); ids are per save.
        new_meta = _copy_stand_in(storage_meta)
        new_meta.state = dict(storage_meta.state, checkpoint_id=None, save_id=str(uuid.uuid4()), load_id=None)
        state["storage_meta"] = new_meta
    out = _copy_stand_in(metadata)
    out.state = state
    try:
        return dump_stand_ins(out)
    except RecursionError:
        raise MigratorError(f"{index.what}: nested too deeply to be written back (more than "
                            f"{sys.getrecursionlimit()} levels)") from None


def _copy_stand_in(obj: PickledObject) -> PickledObject:
    copy = object.__new__(type(obj))
    copy.__dict__.update(obj.__dict__)
    return copy


def check_layout(layout: Any, chunk: StoredChunk, what: str) -> None:
    """A chunk's torch.save header (`tensor_layout`) agrees with its index entry."""
    if layout.dtype != chunk.dtype or tuple(layout.size) != tuple(chunk.sizes):
        raise MigratorError(f"{what}: chunk of {chunk.key} at {list(chunk.offsets)} holds {list(layout.size)} "
                            f"{layout.dtype}, the index says {list(chunk.sizes)} {chunk.dtype}")
    if layout.data_length < layout.storage_numel * itemsize(layout.dtype):
        raise MigratorError(f"{what}: chunk of {chunk.key} at {list(chunk.offsets)} is truncated")


def check_chunk_headers(chunks: Mapping[str, list[StoredChunk]], open_member: Callable[[str], Any],
                        describe: Callable[[str], str]) -> None:
    """Each chunk's `torch.save` header agrees with the index (dtype, shape, storage inside the blob): the copy
    route moves data files untouched and rewrites only the index, so an index that misdescribes its data (a dtype
    of the same width, a shape of the same size) would otherwise pass into the output. A few small reads per chunk;
    the data itself is not read."""
    from migrator.convert.formats.torch_save_format import tensor_layout_at

    by_member: dict[str, list[StoredChunk]] = {}
    for key_chunks in chunks.values():
        for chunk in key_chunks:
            by_member.setdefault(chunk.member, []).append(chunk)
    for member, member_chunks in sorted(by_member.items()):
        with open_member(member) as stream:
            for chunk in sorted(member_chunks, key=lambda c: c.byte_offset):
                def read(offset: int, length: int, base: int = chunk.byte_offset) -> bytes:
                    stream.seek(base + offset)
                    return stream.read(length)

                what = describe(member)
                layout = tensor_layout_at(read, chunk.byte_length, f"{what} ({chunk.key} at {list(chunk.offsets)})")
                check_layout(layout, chunk, what)


def view_torch_chunk(data: bytearray, chunk: StoredChunk, what: str) -> "object":
    """The tensor of one chunk's `torch.save` blob (read from a data file into memory), as a view of those bytes
    (torch.load would copy them). Checked against the index entry `chunk`; the only function here that imports torch."""
    import torch

    from migrator.convert.formats.torch_save_format import tensor_layout

    layout = tensor_layout(data, f"{what} ({chunk.key} at {list(chunk.offsets)})")
    check_layout(layout, chunk, what)
    if layout.storage_numel == 0:
        return torch.empty(layout.size, dtype=getattr(torch, layout.dtype))
    storage = torch.frombuffer(data, dtype=getattr(torch, layout.dtype), count=layout.storage_numel,
                               offset=layout.data_offset)
    return storage.as_strided(layout.size, layout.stride, layout.storage_offset)
