"""The streaming route: read every stored chunk, cast it if asked, write it into a torch_dist checkpoint of our own.

Used for zarr sources and for `--dtype` casts. Memory stays near one chunk whatever the model size:
- a same-dtype zarr chunk without compression is copied from source to output in the kernel (copy_file_range)
  while a second thread computes its CRC, or in 8 MB pieces from a compressed stream (never a chunk in memory);
  an edge chunk (zarr pads those) or a compressed one is decoded in memory first;
- a same-dtype torch_dist chunk is already a `torch.save` archive and is copied as it is;
- a cast loads one chunk with torch (in place from the file where it can), casts and writes it in 64 MB blocks
  (the only part that imports torch).
Sharded objects: torch_dist ones are copied byte for byte; zarr ones (bare objects) are wrapped in the
one-element list torch_dist stores; reset or added ones are `[None]`.
Output chunks keep the source's chunk layout (one or more per layer), each written as `torch.save(chunk)`.
"""
from __future__ import annotations

import threading
from collections import defaultdict
from math import prod
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from migrator.convert.formats.chunks import StoredChunk, itemsize
from migrator.convert.formats.torch_save_format import FileRange, wrap_object
from migrator.convert.model.extra_state import ObjectPlan
from migrator.convert.read.source import Source
from migrator.convert.read.torch_dist import view_torch_chunk
from migrator.convert.read.zarr import decode_chunk, decompressed
from migrator.convert.storage.fileops import BUFFER, FileSlice, check_cancel, read_exactly, skip
from migrator.convert.storage.progress import Progress
from migrator.convert.storage.workers import run_tasks
from migrator.convert.write.dcp import DataFile, DcpWriter, none_object_blob
from migrator.convert.write.plan import Plan, TensorPlan
from migrator.errors import MigratorError

# A unit of work: given a stream positioned at its bytes and an output data file, write one item.
Job = Callable[[BinaryIO, DataFile], None]


def _pieces(stream: BinaryIO, length: int, progress: Progress, cancel: threading.Event,
            what: str) -> Iterator[memoryview]:
    """`length` bytes of `stream` in BUFFER-sized pieces (one reused buffer), reporting progress."""
    buffer = bytearray(min(BUFFER, max(length, 1)))
    view = memoryview(buffer)
    done = 0
    while done < length:
        check_cancel(cancel)
        want = min(len(buffer), length - done)
        n = stream.readinto(view[:want])
        if not n:
            raise MigratorError(f"{what}: truncated (ends after {done} of {length} bytes)")
        done += n
        progress.advance(n)
        yield view[:n]


def _read_all(stream: BinaryIO, length: int, progress: Progress, what: str) -> bytearray:
    try:
        data = read_exactly(stream, length)
    except EOFError:
        raise MigratorError(f"{what}: truncated (ends before {length} bytes)") from None
    progress.advance(length)
    return data


def _decode_raw_same_dtype(chunk: StoredChunk, data: bytearray) -> memoryview:
    """The valid region of a raw zarr chunk as C-order bytes (numpy moves bytes; dtype does not matter)."""
    import numpy as np

    data = decompressed(chunk, data)
    size = itemsize(chunk.dtype)
    stored = prod(chunk.stored_shape)
    if tuple(chunk.sizes) == tuple(chunk.stored_shape):
        return memoryview(data)[:stored * size]
    array = np.frombuffer(data, dtype=np.dtype(f"u{size}"), count=stored).reshape(chunk.stored_shape)
    region = np.ascontiguousarray(array[tuple(slice(0, s) for s in chunk.sizes)])
    return memoryview(region).cast("B")


CAST_BLOCK = 64 << 20  # bytes of output cast at a time: a cast holds one source chunk plus this much


def _cast_pieces(tensor: "object", dtype: str) -> Iterator[memoryview]:
    """The chunk cast to `dtype`, as C-order bytes, one block at a time (never the whole cast chunk in memory)."""
    import torch

    target = getattr(torch, dtype)
    flat = tensor.contiguous().reshape(-1)  # type: ignore[attr-defined]
    step = max(1, CAST_BLOCK // itemsize(dtype))
    for start in range(0, flat.numel(), step):
        block = flat[start:start + step].to(target)
        yield memoryview(block.view(torch.uint8).numpy()).cast("B")


def _chunk_job(writer: DcpWriter, tensor: TensorPlan, chunk: StoredChunk, source: Source, progress: Progress,
               cancel: threading.Event) -> Job:
    what = source.describe(chunk.member)
    nbytes = prod(chunk.sizes) * itemsize(tensor.dtype)
    same = tensor.dtype == tensor.source_dtype

    def job(stream: BinaryIO, out: DataFile) -> None:
        # the bytes can be copied in the kernel when the source is a plain file range (not a compressed stream)
        in_file = isinstance(stream, FileSlice)
        if chunk.encoding == "torch_save" and same:
            if in_file:
                writer.copy_blob(out, tensor.new_key, stream.fileno(), stream.start + stream.tell(), chunk.byte_length,
                                 (chunk.offsets, chunk.sizes), progress=progress.advance, cancel=cancel, source=what)
            else:
                writer.write_blob(out, tensor.new_key, pieces=_pieces(stream, chunk.byte_length, progress, cancel,
                                                                      what), tensor_chunk=(chunk.offsets, chunk.sizes))
            return
        if chunk.encoding == "raw" and same and chunk.compressor is None and chunk.sizes == chunk.stored_shape:
            if in_file:
                data: object = FileRange(stream.fileno(), stream.start + stream.tell(), progress.advance, cancel)
            else:
                data = _pieces(stream, nbytes, progress, cancel, what)
            try:
                writer.write_chunk(out, tensor.new_key, chunk.offsets, chunk.sizes, nbytes, data)  # type: ignore[arg-type]
            except EOFError:
                raise MigratorError(f"{what}: truncated chunk of {chunk.key}") from None
            if not in_file and chunk.byte_length > nbytes:
                skip(stream, chunk.byte_length - nbytes)
            return
        if chunk.encoding == "torch_save":  # a cast (same-dtype blobs were copied above)
            # the blob's bytes, viewed as the tensor without a second copy: one copy of the chunk in memory
            loaded = view_torch_chunk(_read_all(stream, chunk.byte_length, progress, what), chunk, what)
            writer.write_chunk(out, tensor.new_key, chunk.offsets, chunk.sizes, nbytes,
                               _cast_pieces(loaded, tensor.dtype))
            return
        data = _read_all(stream, chunk.byte_length, progress, what)
        if same:
            pieces: Iterable[memoryview] = [_decode_raw_same_dtype(chunk, data)]
        else:
            pieces = _cast_pieces(decode_chunk(chunk, data), tensor.dtype)  # shares `data` (a full chunk)
        writer.write_chunk(out, tensor.new_key, chunk.offsets, chunk.sizes, nbytes, pieces)
    return job


def _object_job(writer: DcpWriter, obj: ObjectPlan, source: Source, progress: Progress,
                cancel: threading.Event) -> Job:
    stored = obj.stored
    assert stored is not None
    what = source.describe(stored.member)

    def job(stream: BinaryIO, out: DataFile) -> None:
        data = _read_all(stream, stored.byte_length, progress, what)
        if obj.action == "reset":
            writer.write_blob(out, obj.new_key, none_object_blob())
        elif stored.wrapped:
            writer.write_blob(out, obj.new_key, bytes(data))
        else:
            writer.write_blob(out, obj.new_key, wrap_object(bytes(data), f"{what} ({obj.key})"))
    return job


def write_streamed_weights(source: Source, plan: Plan, weights: Path, *, workers: int, progress: Progress,
                           cancel: threading.Event) -> None:
    """Fill `weights/` (except common.pt and metadata.json) chunk by chunk."""
    files = max(1, workers if source.random_access else 1)
    writer = DcpWriter(weights, files=files)
    try:
        for tensor in plan.tensors:
            writer.declare_tensor(tensor.new_key, tensor.shape, tensor.dtype)
        # (member, byte offset) -> job, so that each source file is read front to back
        jobs: dict[str, list[tuple[int, int, Job]]] = defaultdict(list)
        for tensor in plan.tensors:
            for chunk in tensor.chunks:
                jobs[chunk.member].append((chunk.byte_offset, chunk.byte_length,
                                           _chunk_job(writer, tensor, chunk, source, progress, cancel)))
        added = none_object_blob()
        for obj in plan.objects:
            if obj.stored is None:
                writer.write_blob(writer.files[0], obj.new_key, added)
            else:
                jobs[obj.stored.member].append((obj.stored.byte_offset, obj.stored.byte_length,
                                                _object_job(writer, obj, source, progress, cancel)))
        for entries in jobs.values():
            entries.sort(key=lambda e: e[0])

        if source.random_access:
            def member_task(member: str) -> Callable[[DataFile], None]:
                def task(out: DataFile) -> None:
                    stream = source.open_member(member)
                    try:
                        for offset, _, job in jobs[member]:
                            check_cancel(cancel)
                            stream.seek(offset)
                            job(stream, out)
                    finally:
                        stream.close()
                return task

            # largest members first, so that parallel workers finish together
            order = sorted(jobs, key=lambda m: -sum(length for _, length, _ in jobs[m]))
            run_tasks([member_task(m) for m in order], writer.files, cancel)
        else:
            out = writer.files[0]
            for member, stream in source.iter_members(sorted(jobs)):
                position = 0
                for offset, length, job in jobs[member]:
                    check_cancel(cancel)
                    if offset < position:
                        raise MigratorError(f"{source.describe(member)}: overlapping stored items")
                    try:
                        skip(stream, offset - position)
                    except EOFError:
                        raise MigratorError(f"{source.describe(member)}: truncated archive") from None
                    job(stream, out)  # every job reads exactly its item's `length` bytes
                    position = offset + length
    except BaseException:
        writer.close_files(check=False)
        raise
    writer.close_files()  # and checks each data file's size against the bytes written into it
    writer.write_metadata()
