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
from typing import BinaryIO, Iterable

from migrator.convert.formats.safe_pickle import PersistentRef, dump_stand_ins, load_allowlisted, make_object, stand_in
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


def _record_offsets(view: memoryview, what: str) -> dict[str, tuple[int, int]]:
    """{record name without prefix: (data offset, length)} of a stored zip held in memory (nothing copied)."""
    tail = bytes(view[max(0, len(view) - 65557):])
    end = tail.rfind(b"PK\x05\x06")
    if end < 0:
        raise MigratorError(f"{what}: not a torch.save archive (no zip end record)")
    end += max(0, len(view) - 65557)
    _, _, _, _, count, directory_size, directory_offset, _ = _END.unpack_from(view, end)
    if directory_offset == _U32 or count == 0xFFFF:
        locator = end - _ZIP64_LOCATOR.size
        _, _, zip64_end, _ = _ZIP64_LOCATOR.unpack_from(view, locator)
        _, _, _, _, _, _, _, count, directory_size, directory_offset = _ZIP64_END.unpack_from(view, zip64_end)
    records: dict[str, tuple[int, int]] = {}
    position = directory_offset
    for _ in range(count):
        (signature, _, _, _, method, _, _, _, compressed, size, name_length, extra_length, comment_length, _, _, _,
         header_offset) = _CENTRAL_HEADER.unpack_from(view, position)
        if signature != 0x02014B50 or method != 0:
            raise MigratorError(f"{what}: not a stored (uncompressed) torch.save archive")
        start = position + _CENTRAL_HEADER.size
        name = bytes(view[start:start + name_length]).decode("utf-8")
        extra = bytes(view[start + name_length:start + name_length + extra_length])
        values = [v for v in (size, compressed, header_offset)]
        i = 0
        while i + 4 <= len(extra):  # zip64 extended information: the fields that overflowed, in this order
            tag, length = struct.unpack_from("<HH", extra, i)
            if tag == 1:
                wide = list(struct.unpack_from("<" + "Q" * (length // 8), extra, i + 4))
                for index in range(3):
                    if values[index] == _U32 and wide:
                        values[index] = wide.pop(0)
            i += 4 + length
        size, _, header_offset = values
        local_name, local_extra = struct.unpack_from("<HH", view, header_offset + 26)
        records[name.split("/", 1)[-1]] = (header_offset + _LOCAL_HEADER.size + local_name + local_extra, size)
        position = start + name_length + extra_length + comment_length
    return records


def tensor_layout(data: bytes | bytearray | memoryview, what: str) -> TensorLayout:
    """Read a `torch.save(tensor)` archive's layout (allowlisted unpickling of data.pkl; torch is not needed)."""
    view = memoryview(data).cast("B")
    records = _record_offsets(view, what)
    if "data.pkl" not in records:
        raise MigratorError(f"{what}: torch.save archive without data.pkl")
    start, length = records["data.pkl"]
    obj = load_allowlisted(bytes(view[start:start + length]), OBJECT_GLOBALS, what, persistent=True)
    args = getattr(obj, "args", ())
    if not (getattr(obj, "pickle_name", "") == "_rebuild_tensor_v2" and len(args) >= 4
            and isinstance(args[0], PersistentRef)):
        raise MigratorError(f"{what}: does not hold a plain tensor")
    pid = args[0].pid
    storage_types = {v: k for k, v in STORAGE_TYPES.items()}
    storage_class = getattr(pid[1], "pickle_name", None) if len(pid) == 5 else None
    if pid[0] != "storage" or storage_class not in storage_types or f"data/{pid[2]}" not in records:
        raise MigratorError(f"{what}: unexpected tensor storage reference {pid!r}")
    data_offset, data_length = records[f"data/{pid[2]}"]
    return TensorLayout(storage_types[storage_class], tuple(args[2]), tuple(args[3]), int(args[1]), int(pid[4]),
                        data_offset, data_length)


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
