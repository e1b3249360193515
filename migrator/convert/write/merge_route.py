"""The merge route: a non-distributed source (rank files, possibly TP/PP-sharded) -> a torch_dist checkpoint.

There are no stored chunks to copy: each output tensor (one layer of a stacked `[num_layers, ...]` tensor, or a
non-layer tensor) is merged from its tensor-parallel pieces (`model.tp_merge`) and written as one chunk through
`DcpWriter`, like a NeMo 1.0 dist checkpoint holds it. The merged tensor is never assembled: its bytes are byte
ranges of the rank files, read and written in pieces of at most 8 MB (a row-parallel weight interleaves its
ranks' rows a block of rows at a time), so memory stays flat whatever the size of the tensor or of the model.
Where the output is a sequence of byte ranges of the rank files (everything but row-parallel weights, when no
`--dtype` cast is asked), the ranges are copied in the kernel instead, with the CRC computed on a second thread.
A `--dtype` cast converts each piece as it passes. Sharded objects (`_extra_state`) come from tensor-parallel
rank 0 of each stage (megatron-core saves them from that rank only); missing ones are `[None]` placeholders.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import BinaryIO, Iterator

from migrator.convert.formats.chunks import itemsize, rename_key
from migrator.convert.write.dcp import DcpWriter, none_object_blob
from migrator.convert.formats.torch_save_format import FileRanges
from migrator.convert.storage.fileops import BUFFER, FileSlice, check_cancel
from migrator.convert.model.tp_merge import MergedTensor
from migrator.convert.write.plan import Plan
from migrator.convert.storage.progress import Progress
from migrator.convert.read.nonsharded import object_blob
from migrator.convert.read.source import Source
from migrator.errors import MigratorError


class _Streams:
    """One open stream per rank file, opened on first use."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self._open: dict[str, BinaryIO] = {}

    def get(self, member: str) -> BinaryIO:
        stream = self._open.get(member)
        if stream is None:
            stream = self._open[member] = self._source.open_member(member)
        return stream

    def close(self) -> None:
        for stream in self._open.values():
            stream.close()
        self._open.clear()


def _read_into(stream: BinaryIO, offset: int, view: memoryview, what: str) -> None:
    stream.seek(offset)
    done = 0
    while done < len(view):
        n = stream.readinto(view[done:])
        if not n:
            raise MigratorError(f"{what}: truncated (ends before byte {offset + len(view)})")
        done += n


def merged_pieces(merged: MergedTensor, streams: _Streams, describe, progress: Progress | None = None,
                  cancel: threading.Event | None = None) -> Iterator[memoryview]:
    """The merged tensor's bytes (C order), in pieces of at most BUFFER bytes (one reused buffer: each piece is
    valid until the next one is asked for)."""
    buffer = bytearray(BUFFER)
    if merged.columns:  # row-parallel: output row i = the ranks' rows i side by side
        import numpy as np

        refs = merged.columns
        row_bytes = [r.row_bytes for r in refs]
        total_row = sum(row_bytes)
        rows = refs[0].rows
        block = max(1, BUFFER // max(1, total_row))
        for start in range(0, rows, block):
            check_cancel(cancel)
            count = min(block, rows - start)
            parts = []
            for ref, rb in zip(refs, row_bytes):
                part = np.empty(count * rb, dtype=np.uint8)
                _read_into(streams.get(ref.member), ref.offset + start * rb, memoryview(part),
                           describe(ref.member))
                parts.append(part.reshape(count, rb))
            out = np.concatenate(parts, axis=1)
            if progress is not None:
                progress.advance(out.nbytes)
            yield memoryview(out).cast("B")
        return
    size = itemsize(merged.dtype)
    step = BUFFER - BUFFER % size
    for segment in merged.segments:
        ref = segment.ref
        start = ref.offset + segment.row * ref.row_bytes
        length = segment.count * ref.row_bytes
        stream = streams.get(ref.member)
        done = 0
        while done < length:
            check_cancel(cancel)
            want = min(step, length - done)
            view = memoryview(buffer)[:want]
            _read_into(stream, start + done, view, describe(ref.member))
            done += want
            if progress is not None:
                progress.advance(want)
            yield view


def _file_ranges(merged: MergedTensor, streams: _Streams) -> tuple[tuple[int, int, int], ...] | None:
    """(fd, offset, length) of each segment in the files behind the rank members, or None where the output is not
    a sequence of byte ranges (a row-parallel weight) or a member is not a plain file range."""
    if merged.columns:
        return None
    ranges = []
    for segment in merged.segments:
        stream = streams.get(segment.ref.member)
        if not isinstance(stream, FileSlice):
            return None
        ref = segment.ref
        ranges.append((stream.fileno(), stream.start + ref.offset + segment.row * ref.row_bytes,
                       segment.count * ref.row_bytes))
    return tuple(ranges)


def _cast(pieces: Iterator[memoryview], source_dtype: str, dtype: str) -> Iterator[memoryview]:
    import torch

    src, dst = getattr(torch, source_dtype), getattr(torch, dtype)
    for piece in pieces:
        tensor = torch.frombuffer(piece, dtype=src) if len(piece) else torch.empty(0, dtype=src)
        yield memoryview(tensor.to(dst).view(torch.uint8).numpy()).cast("B")


def write_merged_weights(source: Source, plan: Plan, weights: Path, *, progress: Progress,
                         cancel: threading.Event) -> None:
    """Fill `weights/` (except common.pt and metadata.json) tensor by tensor, layer by layer."""
    index = source.nonsharded
    assert index is not None
    writer = DcpWriter(weights, files=1)
    out = writer.files[0]
    streams = _Streams(source)
    try:
        for tensor in plan.tensors:
            writer.declare_tensor(tensor.new_key, tensor.shape, tensor.dtype)
            layers = range(index.num_layers) if index.layered(tensor.key) else [None]
            for layer in layers:
                check_cancel(cancel)
                merged = index.merged(tensor.key, layer)
                shape = merged.shape
                expected = tensor.shape[1:] if layer is not None else tensor.shape
                if tuple(shape) != tuple(expected):  # the plan was made from the same index: a bug, not bad input
                    raise MigratorError(f"{tensor.key}: merged shape {list(shape)} differs from the plan's "
                                        f"{list(expected)}")
                offsets = (layer, *[0] * len(shape)) if layer is not None else (0,) * len(shape)
                sizes = (1, *shape) if layer is not None else tuple(shape)
                nbytes = itemsize(tensor.dtype)
                for d in shape:
                    nbytes *= d
                ranges = _file_ranges(merged, streams) if tensor.dtype == tensor.source_dtype else None
                if ranges is not None:  # byte ranges of the rank files, in order: copied in the kernel
                    pieces = FileRanges(ranges, progress.advance, cancel)
                else:
                    pieces = merged_pieces(merged, streams, source.describe, progress, cancel)
                    if tensor.dtype != tensor.source_dtype:
                        pieces = _cast(pieces, tensor.source_dtype, tensor.dtype)
                try:
                    writer.write_chunk(out, tensor.new_key, offsets, sizes, nbytes, pieces)  # type: ignore[arg-type]
                except EOFError:
                    ref = merged.segments[0].ref if merged.segments else merged.columns[0]
                    raise MigratorError(f"{source.describe(ref.member)}: truncated ({ref.key})") from None
        placeholder = none_object_blob()
        new_keys = {o.key: o.new_key for o in plan.objects}  # the destination's names, as the plan gives them
        for placement in index.object_placements():
            check_cancel(cancel)
            ref = placement.ref
            if ref is None or ref.value is None:
                blob = placeholder
            else:
                blob = object_blob(ref, streams.get(ref.member), f"{source.describe(ref.member)} ({ref.key})")
            writer.write_blob(out, new_keys.get(placement.key, rename_key(placement.key)), blob)
    except BaseException:
        writer.close_files(check=False)
        raise
    finally:
        streams.close()
    writer.close_files()  # and checks each data file's size against the bytes written into it
    writer.write_metadata()
