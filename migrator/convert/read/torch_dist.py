"""The index (`.metadata`) of a torch_dist checkpoint: read it safely, list what it holds, rename its keys.

A torch_dist checkpoint keeps tensor data in `__<rank>_<i>.distcp` files as concatenated `torch.save` blobs, one
per chunk, and the key names only in `.metadata` (a pickled `torch.distributed.checkpoint.metadata.Metadata`).
So NeMo 1.0 -> 2.0 key renaming ("model." -> "module.") is a rewrite of `.metadata` alone: the data files are
copied (or linked) untouched. This module reads `.metadata` with an allowlisted unpickler into stand-ins
(see `safe_pickle`), never importing torch, and writes the renamed index back.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from migrator.convert.formats.chunks import DTYPES, StoredChunk, StoredObject, itemsize
from migrator.convert.formats.safe_pickle import (
    PickledObject,
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


def _state(obj: Any, what: str) -> dict:
    state = obj.state if isinstance(obj, PickledObject) else None
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):  # (dict, slots) form
        merged = dict(state[0])
        merged.update(state[1] or {})
        return merged
    if not isinstance(state, dict):
        raise MigratorError(f"{what}: unexpected index structure ({obj!r:.120})")
    return state


def _size(value: Any, what: str) -> tuple[int, ...]:
    """A torch.Size stand-in (REDUCE with one tuple argument) as a tuple of ints."""
    if is_instance_of(value, "torch", "Size") and len(value.args) == 1:
        return tuple(int(v) for v in value.args[0])
    if isinstance(value, (tuple, list)):
        return tuple(int(v) for v in value)
    raise MigratorError(f"{what}: expected a torch.Size, found {value!r:.120}")


def _dtype_of(properties: Any, what: str) -> str:
    """The dtype name of a TensorProperties stand-in (torch >= 2.2 pickles a tuple state, older a dict)."""
    state = properties.state if isinstance(properties, PickledObject) else None
    dtype = state[0] if isinstance(state, tuple) else (state or {}).get("dtype") if isinstance(state, dict) else None
    name = global_name(dtype)
    if name is None or not name.startswith("torch.") or name[len("torch."):] not in DTYPES:
        raise MigratorError(f"{what}: unsupported tensor dtype {name or dtype!r}")
    return name[len("torch."):]


def _check_relative_path(path: Any, what: str) -> str:
    if not isinstance(path, str) or not path or "/" in path or "\\" in path or path in (".", ".."):
        raise MigratorError(f"{what}: refers to data file {path!r}, which is not a plain file name")
    return path


def parse_dcp_metadata(data: bytes, what: str, member_dir: str = "model_weights") -> DcpIndex:
    """Read a `.metadata` pickle (allowlisted stand-ins; torch is not imported) into a `DcpIndex`.

    `what` names the file in error messages; `member_dir` is prefixed to the data file names so that chunk
    locations are source member names ("model_weights/__0_0.distcp").
    """
    metadata = load_allowlisted(data, ALLOWED_GLOBALS, what)
    if not is_instance_of(metadata, _DCP_METADATA, "Metadata"):
        raise MigratorError(f"{what}: not a torch.distributed.checkpoint Metadata pickle")
    state = _state(metadata, what)
    entries = state.get("state_dict_metadata")
    storage = state.get("storage_data")
    if not isinstance(entries, dict) or not isinstance(storage, dict):
        raise MigratorError(f"{what}: index has no state_dict_metadata/storage_data")

    # storage_data: MetadataIndex(fqn, offset) -> _StorageInfo(relative_path, offset, length)
    locations: dict[tuple[str, tuple[int, ...] | None], tuple[str, int, int]] = {}
    for index, info in storage.items():
        index_state = _state(index, what)
        info_state = _state(info, what)
        fqn = index_state.get("fqn")
        offset = index_state.get("offset")
        where = f"{what}: {fqn}"
        if info_state.get("transform_descriptors"):
            raise MigratorError(f"{where}: stored with transforms {info_state['transform_descriptors']!r}, "
                                "which this converter does not decode")
        relative = _check_relative_path(info_state.get("relative_path"), where)
        start, length = info_state.get("offset"), info_state.get("length")
        if not (isinstance(start, int) and isinstance(length, int) and start >= 0 and length >= 0):
            raise MigratorError(f"{where}: bad storage range {start!r}+{length!r}")
        locations[(fqn, None if offset is None else _size(offset, where))] = (relative, start, length)

    index = DcpIndex(metadata=metadata)
    prefix = f"{member_dir}/" if member_dir else ""
    for key, entry in entries.items():
        where = f"{what}: {key}"
        if not isinstance(key, str):
            raise MigratorError(f"{what}: non-string key {key!r}")
        if is_instance_of(entry, _DCP_METADATA, "BytesStorageMetadata"):
            location = locations.get((key, None))
            if location is None:
                raise MigratorError(f"{where}: sharded object has no storage entry")
            relative, start, length = location
            index.objects[key] = StoredObject(key, prefix + relative, start, length, wrapped=True)
            continue
        if not is_instance_of(entry, _DCP_METADATA, "TensorStorageMetadata"):
            raise MigratorError(f"{where}: unexpected index entry {entry!r:.120}")
        entry_state = _state(entry, where)
        dtype = _dtype_of(entry_state.get("properties"), where)
        shape = _size(entry_state.get("size"), where)
        chunks: list[StoredChunk] = []
        for chunk in entry_state.get("chunks") or []:
            chunk_state = _state(chunk, where)
            offsets = _size(chunk_state.get("offsets"), where)
            sizes = _size(chunk_state.get("sizes"), where)
            if len(offsets) != len(shape) or len(sizes) != len(shape) or any(
                    o < 0 or o + s > n for o, s, n in zip(offsets, sizes, shape)):
                raise MigratorError(f"{where}: chunk at {list(offsets)} size {list(sizes)} lies outside "
                                    f"the tensor shape {list(shape)}")
            location = locations.get((key, offsets))
            if location is None:
                raise MigratorError(f"{where}: chunk at {list(offsets)} has no storage entry")
            relative, start, length = location
            chunks.append(StoredChunk(key, offsets, sizes, prefix + relative, start, length, dtype, "torch_save"))
        numel = 1
        for n in shape:
            numel *= n
        if sum(_volume(c.sizes) for c in chunks) != numel:
            raise MigratorError(f"{where}: chunks cover {sum(_volume(c.sizes) for c in chunks)} of {numel} "
                                "elements (a partial or overlapping index)")
        index.tensors[key] = TensorInfo(key=key, shape=shape, dtype=dtype, nbytes=numel * itemsize(dtype))
        index.chunks[key] = chunks
    return index


def _volume(sizes: tuple[int, ...]) -> int:
    volume = 1
    for n in sizes:
        volume *= n
    return volume


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
    return dump_stand_ins(out)


def _copy_stand_in(obj: PickledObject) -> PickledObject:
    copy = object.__new__(type(obj))
    copy.__dict__.update(obj.__dict__)
    return copy


def view_torch_chunk(data: bytearray, chunk: StoredChunk, what: str) -> "object":
    """The tensor of one chunk's `torch.save` blob (read from a data file into memory), as a view of those bytes
    (torch.load would copy them). Checked against the index entry `chunk`; the only function here that imports torch."""
    import torch

    from migrator.convert.formats.torch_save_format import tensor_layout

    layout = tensor_layout(data, f"{what} ({chunk.key} at {list(chunk.offsets)})")
    if layout.dtype != chunk.dtype or tuple(layout.size) != tuple(chunk.sizes):
        raise MigratorError(f"{what}: chunk of {chunk.key} at {list(chunk.offsets)} holds {list(layout.size)} "
                            f"{layout.dtype}, the index says {list(chunk.sizes)} {chunk.dtype}")
    if layout.data_length < layout.storage_numel * itemsize(layout.dtype):
        raise MigratorError(f"{what}: chunk of {chunk.key} at {list(chunk.offsets)} is truncated")
    if layout.storage_numel == 0:
        return torch.empty(layout.size, dtype=getattr(torch, layout.dtype))
    storage = torch.frombuffer(data, dtype=getattr(torch, layout.dtype), count=layout.storage_numel,
                               offset=layout.data_offset)
    return storage.as_strided(layout.size, layout.stride, layout.storage_offset)
