"""Write a torch_dist checkpoint (what NeMo 2.0 keeps in `weights/`) piece by piece, without importing torch.

Files, as megatron-core's torch_dist strategy writes them:
  __0_<i>.distcp  concatenated `torch.save` archives, one per tensor chunk or sharded object (the key is not in
                  the data file; `.metadata` maps every key and chunk offset to a byte range)
  .metadata       the pickled `torch.distributed.checkpoint.metadata.Metadata`
  common.pt       `torch.save` of the non-sharded state
  metadata.json   the backend marker; written last, its presence marks a complete checkpoint

Each writer thread owns one data file, so chunks can be written in parallel without locking the files; only
the index entries are collected under a lock. `.metadata` is built from stand-ins (see `safe_pickle`) that
unpickle into torch's own classes.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable

from migrator.convert.formats.safe_pickle import dump_stand_ins, make_object, stand_in
from migrator.convert.formats.torch_save_format import write_plain, write_tensor
from migrator.convert.storage.fileops import CheckedWriter, check_size
from migrator.convert.storage.fileops import write_file as _write_checked

BACKEND_MARKER = {"sharded_backend": "torch_dist", "sharded_backend_version": 1,
                  "common_backend": "torch", "common_backend_version": 1}
DCP_VERSION = "1.0.0"  # torch.distributed.checkpoint's CURRENT_DCP_VERSION since torch 2.4

# common.pt: the part of a Lightning checkpoint that is not sharded. NeMo 1.0 `.nemo` files hold {}; NeMo's own
# converter writes Lightning's full skeleton (loops, callbacks). We write the keys Lightning needs to accept the
# directory as a checkpoint (its version-migration step reads "pytorch-lightning_version"; "epoch"/"global_step"
# start at 0) and nothing that depends on Lightning's internal loop layout, which changes between releases.
COMMON_STATE: dict = {
    "epoch": 0,
    "global_step": 0,
    "pytorch-lightning_version": "2.4.0",
    "state_dict": {},
    "optimizer_states": [],
    "lr_schedulers": [],
}

_METADATA = "torch.distributed.checkpoint.metadata"


def _size(values: Iterable[int]) -> object:
    return make_object("torch", "Size", tuple(int(v) for v in values), via="reduce")


def _properties(dtype: str) -> object:
    layout = make_object("torch.serialization", "_get_layout", "torch.strided", via="reduce")
    memory_format = make_object(_METADATA, "_MEM_FORMAT_ENCODING", 0, via="reduce")  # contiguous
    return make_object(_METADATA, "TensorProperties", state=(stand_in("torch", dtype), layout, False, memory_format,
                                                              False))


def _storage_info(relative_path: str, offset: int, length: int) -> object:
    return make_object("torch.distributed.checkpoint.filesystem", "_StorageInfo",
                       state={"relative_path": relative_path, "offset": offset, "length": length})


@dataclass
class _Chunk:
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    file: str
    offset: int
    length: int


@dataclass
class _Tensor:
    shape: tuple[int, ...]
    dtype: str
    chunks: list[_Chunk]


class DataFile:
    """One `__0_<i>.distcp` file, appended to by one thread at a time. Every write is checked (CheckedWriter);
    once closed, the file's size on disk is checked against the bytes written into it."""

    def __init__(self, path: Path) -> None:
        self.name = path.name
        self.path = path
        self.handle: BinaryIO = CheckedWriter(path, "w+b")  # type: ignore[assignment]

    def close(self, check: bool = True) -> None:
        if not self.handle.closed:
            written = self.handle.end  # type: ignore[attr-defined]
            self.handle.close()  # flushed to disk with everything else before OUT appears (pipeline._fsync_tree)
            if check:
                check_size(self.path, written)


class DcpWriter:
    """Collects chunks and objects into data files, then writes the index (`.metadata`)."""

    def __init__(self, directory: Path, files: int = 1, first_index: int = 0) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.files = [DataFile(directory / f"__0_{first_index + i}.distcp") for i in range(files)]
        self._tensors: dict[str, _Tensor] = {}
        self._objects: dict[str, tuple[str, int, int]] = {}
        self._lock = threading.Lock()

    def declare_tensor(self, key: str, shape: tuple[int, ...], dtype: str) -> None:
        """Register a tensor before its chunks arrive (chunks may then come from any thread, in any order)."""
        self._tensors[key] = _Tensor(tuple(shape), dtype, [])

    def write_chunk(self, file: DataFile, key: str, offsets: tuple[int, ...], sizes: tuple[int, ...],
                    nbytes: int, pieces: Iterable[bytes | bytearray | memoryview]) -> None:
        """Append `torch.save(chunk)` for a chunk given as raw C-order bytes (`pieces`, `nbytes` in all)."""
        tensor = self._tensors[key]
        start = file.handle.tell()
        length = write_tensor(file.handle, tensor.dtype, tuple(sizes), nbytes, pieces)
        with self._lock:
            tensor.chunks.append(_Chunk(tuple(offsets), tuple(sizes), file.name, start, length))

    def write_blob(self, file: DataFile, key: str, blob: bytes | None = None, *,
                   pieces: Iterable[bytes | bytearray | memoryview] = (), length: int = 0,
                   tensor_chunk: tuple[tuple[int, ...], tuple[int, ...]] | None = None) -> None:
        """Append an already serialised archive: a sharded object (`torch.save([obj])` bytes) or, with
        `tensor_chunk=(offsets, sizes)`, a chunk copied byte for byte from a torch_dist source."""
        start = file.handle.tell()
        if blob is not None:
            file.handle.write(blob)
            length = len(blob)
        else:
            written = 0
            for piece in pieces:
                file.handle.write(piece)
                written += len(piece)
            length = written
        with self._lock:
            if tensor_chunk is None:
                self._objects[key] = (file.name, start, length)
            else:
                self._tensors[key].chunks.append(_Chunk(tensor_chunk[0], tensor_chunk[1], file.name, start, length))

    def copy_blob(self, file: DataFile, key: str, src_fd: int, src_offset: int, length: int,
                  tensor_chunk: tuple[tuple[int, ...], tuple[int, ...]], *, progress=None, cancel=None,
                  source: object = None) -> None:
        """Append a chunk's archive copied byte for byte (in the kernel) from a torch_dist source file."""
        from migrator.convert.storage.fileops import compare_copy, copy_into

        file.handle.flush()
        start = file.handle.tell()
        copy_into(src_fd, src_offset, file.handle.fileno(), start, length, progress=progress, cancel=cancel,
                  dest=file.path)
        compare_copy(src_fd, src_offset, file.handle.fileno(), start, length, source=source, dest=file.path,
                     cancel=cancel)
        file.handle.seek(start + length)
        with self._lock:
            self._tensors[key].chunks.append(_Chunk(tensor_chunk[0], tensor_chunk[1], file.name, start, length))

    def close_files(self, check: bool = True) -> None:
        """Close the data files; `check`: and check their sizes (not while an error is already on its way)."""
        for file in self.files:
            file.close(check)

    def metadata_bytes(self) -> bytes:
        """The pickled `.metadata` for everything written so far."""
        entries: dict[str, object] = {}
        storage: dict[object, object] = {}
        for key, tensor in self._tensors.items():
            chunks = sorted(tensor.chunks, key=lambda c: c.offsets)
            entries[key] = make_object(_METADATA, "TensorStorageMetadata", state={
                "properties": _properties(tensor.dtype),
                "size": _size(tensor.shape),
                "chunks": [make_object(_METADATA, "ChunkStorageMetadata",
                                       state={"offsets": _size(c.offsets), "sizes": _size(c.sizes)}) for c in chunks],
            })
            for c in chunks:
                index = make_object(_METADATA, "MetadataIndex", state={"fqn": key, "offset": _size(c.offsets),
                                                                        "index": None})
                storage[index] = _storage_info(c.file, c.offset, c.length)
        for key, (file_name, offset, length) in self._objects.items():
            entries[key] = make_object(_METADATA, "BytesStorageMetadata")
            index = make_object(_METADATA, "MetadataIndex", state={"fqn": key, "offset": None, "index": None})
            storage[index] = _storage_info(file_name, offset, length)
        metadata = make_object(_METADATA, "Metadata", state={
            "state_dict_metadata": entries, "planner_data": None, "storage_data": storage,
            "storage_meta": None, "version": DCP_VERSION,
            "mcore_data": {key: {} for key in self._tensors}})  # what megatron-core's saver adds per tensor
        return dump_stand_ins(metadata)

    def write_metadata(self) -> None:
        write_file(self.directory / ".metadata", self.metadata_bytes())


def write_file(path: Path, data: bytes) -> None:
    """A new file holding `data`: every write checked, then its size on disk (fileops.write_file)."""
    _write_checked(path, data)


def write_common(directory: Path, state: dict | None = None) -> None:
    """`common.pt`: the non-sharded checkpoint state (see COMMON_STATE)."""
    path = directory / "common.pt"
    with CheckedWriter(path) as f:
        write_plain(f, COMMON_STATE if state is None else state)  # type: ignore[arg-type]
    check_size(path, f.end)


def write_backend_marker(directory: Path) -> None:
    """`metadata.json`, written last: megatron-core treats its presence as "this is a complete checkpoint"."""
    write_file(directory / "metadata.json", json.dumps(BACKEND_MARKER).encode("utf-8"))


def none_object_blob() -> bytes:
    """`torch.save([None])`: a sharded object holding None (Transformer Engine then keeps its fresh state)."""
    import io

    buffer = io.BytesIO()
    write_plain(buffer, [None])
    return buffer.getvalue()
