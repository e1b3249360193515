"""Write (and minimally read) `torch.save` files without importing torch.

A torch_dist data file is a sequence of `torch.save` archives, one per tensor chunk or sharded object, and
`common.pt` is one more. The format is a plain zip (stored, no compression) holding `<prefix>/data.pkl` (a
protocol-2 pickle in which tensors are `torch._utils._rebuild_tensor_v2` calls with a persistent reference to a
storage record), the storage records `<prefix>/data/<key>` (raw little-endian bytes) and a few small
bookkeeping records. Writing it ourselves lets the converter stream a chunk from its source into the output in
small buffers (memory flat in chunk size) and spares the same-dtype paths the cost of importing torch (about
4 s and 250 MB here). `torch.load(weights_only=True)`, torch DCP's reader and megatron-core read these files;
the tests check that with the real readers.

Layout choices follow torch 2.x's writer: records in the same order, storage data aligned to 64 bytes inside the
archive (an "FB" padding extra field), zip64 end records always present, offsets relative to the archive's
first byte (so an archive can sit at any offset inside a `.distcp` file).
"""
from __future__ import annotations

import io
import os
import pickle
import struct
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterable

from migrator.convert.formats.safe_pickle import (
    PersistentRef,
    brief,
    dump_stand_ins,
    is_instance_of,
    load_allowlisted,
    make_object,
    stand_in,
)
from migrator.errors import MigratorError

ARCHIVE_PREFIX = "archive"
ALIGNMENT = 64
STORAGE_TYPES: dict[str, str] = {
    "bfloat16": "BFloat16Storage", "float16": "HalfStorage", "float32": "FloatStorage", "float64": "DoubleStorage",
    "int8": "CharStorage", "uint8": "ByteStorage", "int16": "ShortStorage", "int32": "IntStorage",
    "int64": "LongStorage", "bool": "BoolStorage",
}
# What a sharded object saved by torch.save may refer to (Transformer Engine extra state is None, a tensor, a
# BytesIO or a dict of plain values and tensors). The same set torch.load(weights_only=True) accepts for these.
OBJECT_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {("torch._utils", "_rebuild_tensor_v2"), ("collections", "OrderedDict"), ("torch", "Size"),
     ("_io", "BytesIO"), ("_codecs", "encode"), ("torch.serialization", "_get_layout")}
    | {("torch", storage) for storage in STORAGE_TYPES.values()}
    | {("torch", dtype) for dtype in STORAGE_TYPES}
)

_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")
_CENTRAL_HEADER = struct.Struct("<IHHHHHHIIIHHHHHII")
_ZIP64_END = struct.Struct("<IQHHIIQQQQ")
_ZIP64_LOCATOR = struct.Struct("<IIQI")
_END = struct.Struct("<IHHHHIIH")
_U32 = 0xFFFFFFFF
_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01
_WRITEBACK_EVERY = 64 << 20  # start writing a large record to disk every this many bytes (see fileops)


class ArchiveWriter:
    """Writes one torch.save-style zip archive at the current position of `out` (a seekable binary file).

    The local header's CRC is patched after the record's data is written, so data can be streamed in pieces.
    """

    def __init__(self, out: BinaryIO, prefix: str = ARCHIVE_PREFIX) -> None:
        self._out = out
        self._start = out.tell()
        self._prefix = prefix
        self._entries: list[tuple[bytes, int, int, int]] = []  # name, crc, size, header offset (archive-relative)

    def _position(self) -> int:
        return self._out.tell() - self._start

    def record(self, name: str, pieces: Iterable[bytes | bytearray | memoryview], size: int) -> None:
        """Write the record `<prefix>/<name>` of exactly `size` bytes, given as `pieces`."""
        encoded = f"{self._prefix}/{name}".encode("utf-8")
        header_offset = self._position()
        self._out.write(self._local_header(encoded, size, header_offset))
        crc = 0
        written = 0
        pending = self._out.tell()  # start of the bytes not yet handed to the disk
        for piece in pieces:
            crc = zlib.crc32(piece, crc)
            self._out.write(piece)
            written += len(piece)
            if written >= _WRITEBACK_EVERY and self._out.tell() - pending >= _WRITEBACK_EVERY:
                from migrator.convert.storage.fileops import start_writeback

                self._out.flush()
                start_writeback(self._out.fileno(), pending, self._out.tell() - pending)
                pending = self._out.tell()
        if written != size:
            raise MigratorError(f"{name}: wrote {written} bytes for a record of {size}")
        end = self._out.tell()
        self._out.seek(self._start + header_offset + 14)
        self._out.write(struct.pack("<I", crc))
        self._out.seek(end)
        self._entries.append((encoded, crc, size, header_offset))

    def record_from_file(self, name: str, src_fd: int, src_offset: int, size: int, *, progress=None,
                         cancel=None) -> None:
        """Write the record `<prefix>/<name>` as a copy of `size` bytes of another file, copied in the kernel
        while a second thread computes the CRC from the same (cached) source bytes."""
        import threading

        from migrator.convert.storage.fileops import compare_copy, copy_into, crc32_of_range

        encoded = f"{self._prefix}/{name}".encode("utf-8")
        self._out.flush()
        header_offset = self._position()
        start = self._out.tell()
        self._out.write(self._local_header(encoded, size, header_offset))
        self._out.flush()
        data_start = self._out.tell()
        result: dict[str, object] = {}

        def checksum() -> None:
            try:
                result["crc"] = crc32_of_range(src_fd, src_offset, size, cancel)
            except BaseException as error:  # noqa: BLE001 - re-raised below
                result["error"] = error

        thread = threading.Thread(target=checksum, daemon=True)
        thread.start()
        dest = getattr(self._out, "path", None)
        try:
            copy_into(src_fd, src_offset, self._out.fileno(), data_start, size, progress=progress, cancel=cancel,
                      dest=dest)
            compare_copy(src_fd, src_offset, self._out.fileno(), data_start, size, source=None, dest=dest,
                         cancel=cancel)
        finally:
            thread.join()
        if "error" in result:
            raise result["error"]  # type: ignore[misc]
        crc = int(result["crc"])  # type: ignore[call-overload]
        self._out.seek(start + 14)
        self._out.write(struct.pack("<I", crc))
        self._out.seek(data_start + size)
        self._entries.append((encoded, crc, size, header_offset))

    def record_from_files(self, name: str, ranges: tuple[tuple[int, int, int], ...], size: int, *, progress=None,
                          cancel=None) -> None:
        """Write the record `<prefix>/<name>` as the concatenation of byte ranges of other files (`(fd, offset,
        length)`, `size` bytes in all), copied in the kernel while a second thread computes the CRC."""
        import threading

        from migrator.convert.storage.fileops import BUFFER, check_cancel, compare_copy, copy_into

        if sum(length for _, _, length in ranges) != size:
            raise MigratorError(f"{name}: the ranges hold {sum(r[2] for r in ranges)} bytes for a record of {size}")
        encoded = f"{self._prefix}/{name}".encode("utf-8")
        self._out.flush()
        header_offset = self._position()
        start = self._out.tell()
        self._out.write(self._local_header(encoded, size, header_offset))
        self._out.flush()
        data_start = self._out.tell()
        result: dict[str, object] = {}

        def checksum() -> None:
            try:
                crc = 0
                for fd, offset, length in ranges:
                    done = 0
                    while done < length:
                        check_cancel(cancel)
                        data = os.pread(fd, min(BUFFER, length - done), offset + done)
                        if not data:
                            raise EOFError(f"source ended after {done} of {length} bytes")
                        crc = zlib.crc32(data, crc)
                        done += len(data)
                result["crc"] = crc
            except BaseException as error:  # noqa: BLE001 - re-raised below
                result["error"] = error

        thread = threading.Thread(target=checksum, daemon=True)
        thread.start()
        dest = getattr(self._out, "path", None)
        try:
            position = data_start
            for fd, offset, length in ranges:
                copy_into(fd, offset, self._out.fileno(), position, length, progress=progress, cancel=cancel,
                          dest=dest)
                compare_copy(fd, offset, self._out.fileno(), position, length, source=None, dest=dest,
                             cancel=cancel)
                position += length
        finally:
            thread.join()
        if "error" in result:
            raise result["error"]  # type: ignore[misc]
        crc = int(result["crc"])  # type: ignore[call-overload]
        self._out.seek(start + 14)
        self._out.write(struct.pack("<I", crc))
        self._out.seek(data_start + size)
        self._entries.append((encoded, crc, size, header_offset))

    def _local_header(self, encoded: bytes, size: int, header_offset: int) -> bytes:
        """Local file header + name + extra (zip64 sizes when needed, padding so the data is 64-byte aligned)."""
        zip64 = size >= _U32
        zip64_extra = struct.pack("<HHQQ", 1, 16, size, size) if zip64 else b""
        unpadded = header_offset + _LOCAL_HEADER.size + len(encoded) + len(zip64_extra)
        padding = -unpadded % ALIGNMENT
        if 0 < padding < 4:
            padding += ALIGNMENT
        pad_extra = struct.pack("<HH", 0x4246, padding - 4) + b"Z" * (padding - 4) if padding else b""
        extra = zip64_extra + pad_extra
        stored_size = _U32 if zip64 else size
        return (_LOCAL_HEADER.pack(0x04034B50, 45 if zip64 else 20, 0, 0, 0, _DOS_DATE, 0, stored_size, stored_size,
                                   len(encoded), len(extra)) + encoded + extra)

    def close(self) -> int:
        """Write the central directory and end records; returns the archive's total length."""
        directory_offset = self._position()
        for encoded, crc, size, header_offset in self._entries:
            extra_values = []
            if size >= _U32:
                extra_values += [size, size]
            if header_offset >= _U32:
                extra_values.append(header_offset)
            extra = struct.pack("<HH" + "Q" * len(extra_values), 1, 8 * len(extra_values), *extra_values) \
                if extra_values else b""
            stored_size = _U32 if size >= _U32 else size
            version = 45 if extra else 20
            self._out.write(_CENTRAL_HEADER.pack(
                0x02014B50, version, version, 0, 0, 0, _DOS_DATE, crc, stored_size, stored_size, len(encoded),
                len(extra), 0, 0, 0, 0, min(header_offset, _U32)))
            self._out.write(encoded)
            self._out.write(extra)
        end_of_directory = self._position()
        count = len(self._entries)
        directory_size = end_of_directory - directory_offset
        self._out.write(_ZIP64_END.pack(0x06064B50, 44, 45, 45, 0, 0, count, count, directory_size,
                                        directory_offset))
        self._out.write(_ZIP64_LOCATOR.pack(0x07064B50, 0, end_of_directory, 1))
        self._out.write(_END.pack(0x06054B50, 0, 0, min(count, 0xFFFF), min(count, 0xFFFF),
                                  min(directory_size, _U32), min(directory_offset, _U32), 0))
        return self._position()


def _serialization_id() -> bytes:
    return str(uuid.uuid4().int).rjust(40, "0")[:40].encode("ascii")


@dataclass(frozen=True)
class FileRange:
    """Storage bytes to copy from another open file (in the kernel) instead of passing them through memory."""

    fd: int
    offset: int
    progress: object = None
    cancel: object = None


@dataclass(frozen=True)
class FileRanges:
    """Storage bytes that are several ranges of other open files, in order: `(fd, offset, length)` each (a merged
    tensor-parallel tensor), copied in the kernel like a FileRange."""

    ranges: tuple[tuple[int, int, int], ...]
    progress: object = None
    cancel: object = None


def write_archive(out: BinaryIO, data_pkl: bytes,
                  storages: Iterable[tuple[str, int, Iterable[bytes | bytearray | memoryview] | FileRange]] = ()
                  ) -> int:
    """Write a complete torch.save archive (pickle + storage records, in torch's record order); returns its length."""
    writer = ArchiveWriter(out)
    writer.record("data.pkl", [data_pkl], len(data_pkl))
    writer.record(".format_version", [b"1"], 1)
    writer.record(".storage_alignment", [b"64"], 2)
    writer.record("byteorder", [b"little"], 6)
    for key, size, pieces in storages:
        if isinstance(pieces, FileRange):
            writer.record_from_file(f"data/{key}", pieces.fd, pieces.offset, size, progress=pieces.progress,
                                    cancel=pieces.cancel)
        elif isinstance(pieces, FileRanges):
            writer.record_from_files(f"data/{key}", pieces.ranges, size, progress=pieces.progress,
                                     cancel=pieces.cancel)
        else:
            writer.record(f"data/{key}", pieces, size)
    writer.record("version", [b"3\n"], 2)
    writer.record(".data/serialization_id", [_serialization_id()], 40)
    return writer.close()


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def tensor_pickle(dtype: str, shape: tuple[int, ...]) -> bytes:
    """The data.pkl of `torch.save(tensor)` for a contiguous CPU tensor whose storage is record "0"."""
    numel = 1
    for n in shape:
        numel *= n
    storage = PersistentRef(("storage", stand_in("torch", STORAGE_TYPES[dtype]), "0", "cpu", numel))
    hooks = make_object("collections", "OrderedDict", via="reduce")
    tensor = make_object("torch._utils", "_rebuild_tensor_v2", storage, 0, tuple(shape), contiguous_strides(shape),
                         False, hooks, via="reduce")
    return dump_stand_ins(tensor, protocol=2)


def write_tensor(out: BinaryIO, dtype: str, shape: tuple[int, ...], nbytes: int,
                 pieces: Iterable[bytes | bytearray | memoryview] | FileRange) -> int:
    """Write `torch.save(tensor)` for a tensor given as its raw C-order bytes (`pieces`, or a range of another
    file); returns the archive's length."""
    return write_archive(out, tensor_pickle(dtype, shape), [("0", nbytes, pieces)])


def write_plain(out: BinaryIO, obj: object) -> int:
    """Write `torch.save(obj)` for plain Python data (dicts, lists, numbers, strings): `common.pt`."""
    return write_archive(out, pickle.dumps(obj, protocol=2))


def read_records(data: bytes, what: str) -> tuple[str, dict[str, bytes]]:
    """The records of a small torch.save archive in memory: (prefix, {name without prefix: bytes})."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            if not names:
                raise MigratorError(f"{what}: empty torch.save archive")
            prefix = names[0].split("/", 1)[0]
            records = {}
            for name in names:
                if not name.startswith(prefix + "/"):
                    raise MigratorError(f"{what}: torch.save archive with mixed prefixes ({name!r})")
                records[name[len(prefix) + 1:]] = archive.read(name)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as error:
        raise MigratorError(f"{what}: not a torch.save archive ({error})") from None
    if "data.pkl" not in records:
        raise MigratorError(f"{what}: torch.save archive without data.pkl")
    return prefix, records


def wrap_object(data: bytes, what: str) -> bytes:
    """`torch.save(obj)` bytes (a zarr `shard_*.pt`) -> `torch.save([obj])` bytes (what torch_dist stores).

    The object is read with the allowlisted unpickler (tensors, storages, BytesIO, plain values; anything else is
    refused naming `what`), wrapped in a one-element list and pickled again; storage records are copied as they are.
    """
    _, records = read_records(data, what)
    obj = load_allowlisted(records["data.pkl"], OBJECT_GLOBALS, what, persistent=True)
    storages = []
    for name, content in records.items():
        if name.startswith("data/"):
            storages.append((name[len("data/"):], len(content), [content]))
    out = io.BytesIO()
    write_archive(out, dump_stand_ins([obj], protocol=2), storages)
    return out.getvalue()


@dataclass(frozen=True)
class TensorLayout:
    """Where a `torch.save(tensor)` archive keeps its tensor: enough to view the bytes without torch.load."""

    dtype: str
    size: tuple[int, ...]
    stride: tuple[int, ...]
    storage_offset: int  # in elements
    storage_numel: int
    data_offset: int  # byte offset of the storage record inside the archive
    data_length: int


Reader = Callable[[int, int], bytes]  # read(offset, length): bytes of an archive (fewer at its end)
MAX_PICKLE_BYTES = 16 << 20  # a tensor's data.pkl is a few hundred bytes


def _record_offsets(read: Reader, size: int, what: str) -> dict[str, tuple[int, int]]:
    """{record name without prefix: (data offset, length)} of a stored zip of `size` bytes, read through `read`
    (a few small reads: the end records, the central directory, each local header's name and extra lengths).
    Every offset is checked to lie inside the archive."""
    def exact(offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > size:
            raise MigratorError(f"{what}: torch.save archive refers to bytes {offset}..{offset + length} beyond its "
                                f"{size} bytes")
        data = read(offset, length)
        if len(data) != length:
            raise MigratorError(f"{what}: truncated torch.save archive")
        return data

    tail_start = max(0, size - 65557)
    tail = exact(tail_start, size - tail_start)
    end = tail.rfind(b"PK\x05\x06")
    if end < 0 or end + _END.size > len(tail):
        raise MigratorError(f"{what}: not a torch.save archive (no zip end record)")
    _, _, _, _, count, directory_size, directory_offset, _ = _END.unpack_from(tail, end)
    end += tail_start
    if directory_offset == _U32 or count == 0xFFFF:
        locator = end - _ZIP64_LOCATOR.size
        _, _, zip64_end, _ = _ZIP64_LOCATOR.unpack(exact(locator, _ZIP64_LOCATOR.size))
        _, _, _, _, _, _, _, count, directory_size, directory_offset = _ZIP64_END.unpack(
            exact(zip64_end, _ZIP64_END.size))
    directory = exact(directory_offset, directory_size)
    records: dict[str, tuple[int, int]] = {}
    position = 0
    for _ in range(count):
        if position + _CENTRAL_HEADER.size > len(directory):
            raise MigratorError(f"{what}: truncated zip directory in a torch.save archive")
        (signature, _, _, _, method, _, _, _, compressed, record_size, name_length, extra_length, comment_length, _,
         _, _, header_offset) = _CENTRAL_HEADER.unpack_from(directory, position)
        if signature != 0x02014B50 or method != 0:
            raise MigratorError(f"{what}: not a stored (uncompressed) torch.save archive")
        start = position + _CENTRAL_HEADER.size
        name = directory[start:start + name_length].decode("utf-8", errors="replace")
        extra = directory[start + name_length:start + name_length + extra_length]
        values = [v for v in (record_size, compressed, header_offset)]
        i = 0
        while i + 4 <= len(extra):  # zip64 extended information: the fields that overflowed, in this order
            tag, length = struct.unpack_from("<HH", extra, i)
            if tag == 1:
                wide = list(struct.unpack_from("<" + "Q" * (min(length, len(extra) - i - 4) // 8), extra, i + 4))
                for index in range(3):
                    if values[index] == _U32 and wide:
                        values[index] = wide.pop(0)
            i += 4 + length
        record_size, _, header_offset = values
        local_name, local_extra = struct.unpack("<HH", exact(header_offset + 26, 4))
        data_offset = header_offset + _LOCAL_HEADER.size + local_name + local_extra
        if data_offset + record_size > size:
            raise MigratorError(f"{what}: record {name!r} of a torch.save archive ends past the archive's end")
        records[name.split("/", 1)[-1]] = (data_offset, record_size)
        position = start + name_length + extra_length + comment_length
    return records


def tensor_layout(data: bytes | bytearray | memoryview, what: str) -> TensorLayout:
    """Read a `torch.save(tensor)` archive's layout (allowlisted unpickling of data.pkl; torch is not needed)."""
    view = memoryview(data).cast("B")
    return tensor_layout_at(lambda offset, length: bytes(view[offset:offset + length]), len(view), what)


def tensor_layout_at(read: Reader, size: int, what: str) -> TensorLayout:
    """`tensor_layout` of an archive of `size` bytes read through `read(offset, length)` (a few small reads, so
    that an index can be checked against its data files without reading the data). Anything malformed is one
    MigratorError naming `what`."""
    try:
        return _tensor_layout(read, size, what)
    except (struct.error, ValueError, TypeError, IndexError, KeyError, OverflowError) as error:
        raise MigratorError(f"{what}: malformed torch.save archive ({type(error).__name__})") from None


def _tensor_layout(read: Reader, size: int, what: str) -> TensorLayout:
    records = _record_offsets(read, size, what)
    if "data.pkl" not in records:
        raise MigratorError(f"{what}: torch.save archive without data.pkl")
    start, length = records["data.pkl"]
    if length > MAX_PICKLE_BYTES:
        raise MigratorError(f"{what}: data.pkl of {length} bytes (a tensor's is a few hundred)")
    obj = load_allowlisted(read(start, length), OBJECT_GLOBALS, what, persistent=True)
    args = getattr(obj, "args", ())
    if not (getattr(obj, "pickle_name", "") == "_rebuild_tensor_v2" and isinstance(args, tuple) and len(args) >= 4
            and isinstance(args[0], PersistentRef)):
        raise MigratorError(f"{what}: does not hold a plain tensor")
    pid = args[0].pid
    storage_types = {v: k for k, v in STORAGE_TYPES.items()}
    storage_class = getattr(pid[1], "pickle_name", None) if isinstance(pid, tuple) and len(pid) == 5 else None
    if storage_class not in storage_types or pid[0] != "storage" or not isinstance(pid[2], str) \
            or f"data/{pid[2]}" not in records:
        raise MigratorError(f"{what}: unexpected tensor storage reference {brief(pid)}")
    data_offset, data_length = records[f"data/{pid[2]}"]
    shape, stride, offset, numel = args[2], args[3], args[1], pid[4]
    if is_instance_of(shape, "torch", "Size") and len(shape.args) == 1:
        shape = shape.args[0]
    if not (isinstance(shape, tuple) and isinstance(stride, tuple) and len(shape) == len(stride) <= 64
            and all(_natural(n) for n in (*shape, *stride, offset, numel))):
        raise MigratorError(f"{what}: tensor with size {brief(shape, 60)}, stride {brief(stride, 60)}, offset "
                            f"{brief(offset, 20)}")
    if shape and all(shape) and offset + sum((n - 1) * s for n, s in zip(shape, stride)) >= numel:
        raise MigratorError(f"{what}: tensor of size {list(shape)} reaches past its storage of {numel} elements")
    return TensorLayout(storage_types[storage_class], tuple(shape), tuple(stride), offset, numel, data_offset,
                        data_length)


def _natural(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 62


def write_scalar_tensors(out: BinaryIO, values: dict[str, tuple[str, bytes]]) -> int:
    """Write `torch.save({name: torch.tensor(value, dtype=...)})` for 0-dimensional tensors given as
    {name: (dtype, the value's little-endian bytes)}: Megatron-Bridge's `train_state.pt`."""
    state = {}
    storages = []
    for index, (name, (dtype, raw)) in enumerate(values.items()):
        if len(raw) != STORAGE_BYTES[dtype]:
            raise MigratorError(f"{name}: {len(raw)} bytes for one {dtype} value")
        storage = PersistentRef(("storage", stand_in("torch", STORAGE_TYPES[dtype]), str(index), "cpu", 1))
        hooks = make_object("collections", "OrderedDict", via="reduce")
        state[name] = make_object("torch._utils", "_rebuild_tensor_v2", storage, 0, (), (), False, hooks,
                                  via="reduce")
        storages.append((str(index), len(raw), [raw]))
    return write_archive(out, dump_stand_ins(state, protocol=2), storages)


STORAGE_BYTES: dict[str, int] = {"bfloat16": 2, "float16": 2, "float32": 4, "float64": 8, "int8": 1, "uint8": 1,
                                 "int16": 2, "int32": 4, "int64": 8, "bool": 1}
