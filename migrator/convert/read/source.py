"""Open the input of `convert`: a `.nemo` tar (plain or compressed), an extracted `.nemo` folder, or a bare
`model_weights/` folder plus `--model_config`.

Whatever the form, a `Source` gives the parsed `model_config.yaml`, the checkpoint backend (torch_dist or zarr),
the tensors (NeMo 1.0 keys), where each chunk and sharded object is stored, and access to members by name
(tokenizer artifacts). Nothing is extracted to a temporary folder: an uncompressed tar is read in place (member
data sits at known offsets), a compressed tar is read as a stream (small members cached on a first pass, data
streamed on a second), and a folder is read directly.

Tar members are checked before anything is read: no absolute names, no `..`, no links, devices or FIFOs, no
duplicate names. Every problem is a one-line MigratorError naming the file, member or key.
"""
from __future__ import annotations

import contextlib
import lzma
import os
import tarfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

from migrator.convert.formats.chunks import StoredChunk, StoredObject
from migrator.convert.formats.json_data import MAX_JSON_BYTES, json_object
from migrator.convert.formats.safe_pickle import brief
from migrator.convert.formats.types import TensorInfo
from migrator.convert.read.model_config import load_model_config
from migrator.convert.read.nonsharded import NonShardedIndex, is_nonsharded_member, open_rank_files
from migrator.convert.read.torch_dist import DcpIndex, check_chunk_headers, parse_dcp_metadata
from migrator.convert.read.zarr import ZarrArray, build_zarr_index, is_zarr_chunk_member, parse_zarray
from migrator.convert.storage.fileops import (FileSlice, copy_file, copy_range, copy_stream, link_or_copy,
                                              pread_exactly)
from migrator.errors import MigratorError

WEIGHTS_DIR = "model_weights"
CONFIG_MEMBER = "model_config.yaml"
BACKEND_FILE = f"{WEIGHTS_DIR}/metadata.json"
DCP_INDEX = f"{WEIGHTS_DIR}/.metadata"
SMALL_MEMBER_LIMIT = 256 << 20  # a compressed tar's non-data members up to this size are kept in memory
MAX_INDEX_BYTES = 256 << 20  # a torch_dist `.metadata` (a real one: about 300 bytes per chunk) is read whole
_DECOMPRESSION_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError, lzma.LZMAError)


def _decompressed(path: Path) -> BinaryIO | None:
    """A decompressing reader that verifies the stream's checksums (Python's gzip, bz2, lzma modules), or None for
    an uncompressed file: tarfile's own stream reader decompresses gzip without ever checking its CRC, so a corrupt
    `.nemo.gz` converted with exit 0."""
    import bz2
    import gzip
    import lzma

    with open(path, "rb") as handle:
        magic = handle.read(6)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if magic[:3] == b"BZh":
        return bz2.open(path, "rb")  # type: ignore[return-value]
    if magic == b"\xfd7zXZ\x00":
        return lzma.open(path, "rb")  # type: ignore[return-value]
    return None


def is_data_member(name: str) -> bool:
    """Bulk tensor data (read as a stream, never cached): torch_dist `.distcp` files, zarr chunk files and
    non-distributed `model_weights.ckpt` rank files."""
    if is_nonsharded_member(name):
        return True
    if not name.startswith(WEIGHTS_DIR + "/"):
        return False
    relative = name[len(WEIGHTS_DIR) + 1:]
    return (("/" not in relative and relative.endswith(".distcp")) or is_zarr_chunk_member(relative))


def normalize_member_name(raw: str, archive: str) -> str | None:
    """The member's name relative to the archive root, or None for the root itself; refuses unsafe names."""
    name = raw
    if not name.isprintable():  # a newline in a name would split the one-line messages that name it
        raise MigratorError(f"{archive}: member {name!r} has control characters in its name; refusing to read it")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise MigratorError(f"{archive}: member {raw!r} has an absolute name; refusing to read the archive")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise MigratorError(f"{archive}: member {raw!r} points outside the archive ('..'); refusing to read it")
    return "/".join(parts) or None


class Source:
    """A NeMo 1.0 checkpoint to convert. Subclasses supply member access; this class reads the weights' index."""

    kind: str = ""
    random_access: bool = True
    linkable: bool = False  # members are plain files that --link can hard-link
    key_prefix: str = "model."  # the prefix of the model's keys in this kind of checkpoint
    key_origin: str = "NeMo 1.0"
    dropped_bytes: int = 0  # bytes of stored state in the data files that is not converted (NeMo 2.0 optimizer)
    dropped_what: str = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.members: dict[str, int] = {}  # regular-file members: name -> size
        self.model_config: dict[str, Any] = {}
        self.model_config_origin = ""
        self.backend = ""
        self.tensors: dict[str, TensorInfo] = {}
        self.chunks: dict[str, list[StoredChunk]] = {}
        self.objects: dict[str, StoredObject] = {}
        self.dcp_index: DcpIndex | None = None
        self.nonsharded: NonShardedIndex | None = None  # backend "non-distributed": the rank files
        self.notes: list[str] = []  # what the reader did that the user should know (e.g. spilled to disk)

    # --- member access (subclasses) ---
    def read_member(self, name: str) -> bytes:
        raise NotImplementedError

    def open_member(self, name: str) -> BinaryIO:
        """A seekable read-only stream over one member (random-access sources only)."""
        raise NotImplementedError

    def copy_member(self, name: str, dest: Path, *, link: bool = False, progress=None, cancel=None) -> str:
        """Copy (or, where `link` and possible, hard-link) one member to `dest`; returns "copy" or "link"."""
        raise NotImplementedError

    def iter_members(self, names: Iterable[str]) -> Iterator[tuple[str, BinaryIO]]:
        """Yield (name, stream) for the wanted members. Random-access sources follow the given order; a
        compressed tar yields them in archive order, and each stream is valid only until the next item."""
        for name in names:
            stream = self.open_member(name)
            try:
                yield name, stream
            finally:
                stream.close()

    def close(self) -> None:
        pass

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- shared reading ---
    def member_names(self) -> list[str]:
        return sorted(self.members)

    def has_member(self, name: str) -> bool:
        return name in self.members

    def describe(self, name: str) -> str:
        """How errors name a member: "<input>: <member>" (a folder's members are files under it)."""
        return f"{self.path}: {name}"

    def read_small_member(self, name: str, limit: int) -> bytes:
        """`read_member` for a file read whole into memory (an index, a JSON file): refused beyond `limit` bytes."""
        size = self.members.get(name)
        if size is not None and size > limit:
            raise MigratorError(f"{self.describe(name)}: {size} bytes, more than the {limit} this file may have")
        return self.read_member(name)

    def read_backend_marker(self, name: str) -> str | None:
        """The `sharded_backend` of a dist-ckpt `metadata.json` (None when it names none)."""
        marker = json_object(self.read_small_member(name, MAX_JSON_BYTES), self.describe(name))
        backend = marker.get("sharded_backend")
        if backend is not None and not isinstance(backend, str):
            raise MigratorError(f"{self.describe(name)}: sharded_backend {brief(backend, 60)} is not a string")
        return backend

    def _load_config(self, model_config_path: Path | None) -> None:
        if model_config_path is not None:
            from migrator.inputs import read_regular

            text = read_regular(model_config_path, f"{model_config_path} (the model config)")
            self.model_config = load_model_config(text, str(model_config_path))
            self.model_config_origin = str(model_config_path)
            return
        if not self.has_member(CONFIG_MEMBER):
            raise MigratorError(f"{self.path}: no {CONFIG_MEMBER} member (is this a NeMo 1.0 .nemo?)")
        self.model_config = load_model_config(self.read_member(CONFIG_MEMBER), self.describe(CONFIG_MEMBER))
        self.model_config_origin = CONFIG_MEMBER

    def _load_weights_index(self) -> None:
        if not self.has_member(BACKEND_FILE):
            if any(is_nonsharded_member(n) for n in self.members):
                self._index_nonsharded()
                return
            raise MigratorError(f"{self.describe(BACKEND_FILE)}: missing (no distributed checkpoint in "
                                f"{WEIGHTS_DIR}/)")
        self.backend = self.read_backend_marker(BACKEND_FILE)
        if self.backend == "torch_dist":
            self._index_torch_dist()
        elif self.backend == "zarr":
            self._index_zarr()
        else:
            raise MigratorError(f"{self.describe(BACKEND_FILE)}: unsupported sharded_backend {self.backend!r} "
                                "(supported: torch_dist, zarr)")

    def _index_torch_dist(self) -> None:
        if not self.has_member(DCP_INDEX):
            raise MigratorError(f"{self.describe(DCP_INDEX)}: missing (a torch_dist checkpoint needs its index)")
        index = parse_dcp_metadata(self.read_small_member(DCP_INDEX, MAX_INDEX_BYTES), self.describe(DCP_INDEX),
                                   WEIGHTS_DIR)
        for key, chunks in index.chunks.items():
            for chunk in chunks:
                self._check_range(chunk.member, chunk.byte_offset + chunk.byte_length, key)
        for key, obj in index.objects.items():
            self._check_range(obj.member, obj.byte_offset + obj.byte_length, key)
        if self.random_access:
            check_chunk_headers(index.chunks, self.open_member, self.describe)
        self.dcp_index = index
        self.tensors, self.chunks, self.objects = index.tensors, index.chunks, index.objects

    def _index_nonsharded(self) -> None:
        """A non-distributed checkpoint (`model_weights.ckpt`, `mp_rank_XX/`, `tp_rank_XX_pp_rank_YYY/`): index the
        rank files; the merge reads them later, tensor by tensor."""
        members = {n: size for n, size in self.members.items() if is_nonsharded_member(n)}
        try:
            self._prepare_random_access(sorted(members))
            ranks = open_rank_files(members, self.open_member, self.describe)
            self.nonsharded = NonShardedIndex(ranks, self.model_config, self.describe)
            self.backend = "non-distributed"
            self.tensors = self.nonsharded.tensors()
        except BaseException:
            self.close()  # the constructor fails: nobody else will (spilled files, open descriptors)
            raise

    def _prepare_random_access(self, members: list[str]) -> None:
        """Make `open_member` work for these members (a compressed tar spills them to disk)."""

    @property
    def arch_config(self) -> dict[str, Any]:
        """The model config the architecture is derived from: a pre-megatron-core checkpoint is read as the
        megatron-core model its tensors are mapped to."""
        if self.nonsharded is not None and self.nonsharded.legacy:
            return {**self.model_config, "mcore_gpt": True}
        return self.model_config

    def _check_range(self, member: str, end: int, key: str) -> None:
        size = self.members.get(member)
        if size is None:
            raise MigratorError(f"{self.describe(member)}: missing (the index stores {key} there)")
        if end > size:
            raise MigratorError(f"{self.describe(member)}: truncated ({size} bytes; {key} needs bytes up to {end})")

    def _index_zarr(self) -> None:
        arrays: dict[str, ZarrArray] = {}
        prefix = WEIGHTS_DIR + "/"
        for name in self.members:
            if name.startswith(prefix) and name.endswith("/.zarray") and name.count("/") == 2:
                key = name[len(prefix):-len("/.zarray")]
                arrays[key] = parse_zarray(self.read_small_member(name, MAX_JSON_BYTES), key, self.describe(name))
        index = build_zarr_index(arrays, self.members, WEIGHTS_DIR)
        self.tensors, self.chunks, self.objects = index.tensors, index.chunks, index.objects

    @property
    def data_members(self) -> list[str]:
        """Members holding tensor or object data, in the order a sequential reader meets them (by name)."""
        names = {c.member for cs in self.chunks.values() for c in cs} | {o.member for o in self.objects.values()}
        return sorted(names)


class TarSource(Source):
    """An uncompressed `.nemo` tar, read in place: each member's data is a byte range of the tar file."""

    kind = "tar"

    def __init__(self, path: Path, model_config_path: Path | None) -> None:
        super().__init__(path)
        self._ranges: dict[str, tuple[int, int]] = {}
        archive_size = path.stat().st_size
        try:
            with tarfile.open(path, "r:") as archive:
                for info in archive:
                    self._add(info, archive_size)
        except tarfile.TarError as error:
            raise MigratorError(f"{path}: not a readable tar archive ({error})") from None
        self._fd = os.open(path, os.O_RDONLY)
        self._load_config(model_config_path)
        self._load_weights_index()

    def _add(self, info: tarfile.TarInfo, archive_size: int) -> None:
        name = normalize_member_name(info.name, str(self.path))
        if name is None:
            return
        _check_member_type(info, str(self.path))
        if info.isdir():
            return
        if name in self.members:
            raise MigratorError(f"{self.path}: member {name!r} appears twice; refusing an ambiguous archive")
        if info.offset_data + info.size > archive_size:
            raise MigratorError(f"{self.describe(name)}: truncated archive ({info.size} bytes declared, "
                                f"{max(0, archive_size - info.offset_data)} present)")
        self.members[name] = info.size
        self._ranges[name] = (info.offset_data, info.size)

    def _range(self, name: str) -> tuple[int, int]:
        if name not in self._ranges:
            raise MigratorError(f"{self.path}: no member {name!r}")
        return self._ranges[name]

    def read_member(self, name: str) -> bytes:
        offset, size = self._range(name)
        try:
            return pread_exactly(self._fd, size, offset, self.path)
        except EOFError:
            raise MigratorError(f"{self.describe(name)}: truncated archive") from None
        except OSError as error:
            raise MigratorError(f"{self.describe(name)}: cannot read ({error.strerror or error})") from None

    def open_member(self, name: str) -> BinaryIO:
        offset, size = self._range(name)
        return FileSlice(self.path, offset, size)  # type: ignore[return-value]

    def copy_member(self, name: str, dest: Path, *, link: bool = False, progress=None, cancel=None) -> str:
        offset, size = self._range(name)
        try:
            copy_range(self._fd, offset, size, dest, progress=progress, cancel=cancel, source=self.describe(name))
        except EOFError:
            raise MigratorError(f"{self.describe(name)}: truncated archive") from None
        return "copy"

    def close(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None


class CompressedTarSource(Source):
    """A compressed (gzip, bz2, xz) `.nemo`: read strictly sequentially, twice.

    Pass 1 (here) checks every member and keeps the small non-data members in memory (config, index, zarr
    `.zarray`s, sharded objects, tokenizer files); pass 2 (`iter_members`) streams the data members once more.
    Nothing is written to disk besides the output.
    """

    kind = "compressed tar"
    random_access = False

    def __init__(self, path: Path, model_config_path: Path | None, spill_parent: Path | None = None,
                 spill_dir: Path | None = None) -> None:
        super().__init__(path)
        self._cache: dict[str, bytes] = {}
        self._spill_parent = spill_parent
        self._spill_at = spill_dir
        self._spill_dir: Path | None = None
        self._spilled: dict[str, Path] = {}
        name = ""
        raw = _decompressed(path)
        try:
            with raw or contextlib.nullcontext(), \
                    (tarfile.open(fileobj=raw, mode="r|") if raw else tarfile.open(path, "r|*")) as archive:
                for info in archive:
                    name = normalize_member_name(info.name, str(path)) or ""
                    if not name:
                        continue
                    _check_member_type(info, str(path))
                    if info.isdir():
                        continue
                    if name in self.members:
                        raise MigratorError(f"{path}: member {name!r} appears twice; refusing an ambiguous archive")
                    self.members[name] = info.size
                    if not is_data_member(name) and info.size <= SMALL_MEMBER_LIMIT:
                        stream = archive.extractfile(info)
                        data = stream.read() if stream is not None else b""
                        if len(data) != info.size:
                            raise EOFError("member ends early")
                        self._cache[name] = data
                name = ""
                while raw is not None and raw.read(1 << 20):  # to the end of the compressed stream, where the
                    pass  # gzip CRC and length (xz: its check; bzip2: each block's CRC) are verified
        except MigratorError:
            raise
        except _DECOMPRESSION_ERRORS as error:
            where = f"{path}: {name}" if name else str(path)
            raise MigratorError(f"{where}: unreadable compressed archive ({error or type(error).__name__})") from None
        self._load_config(model_config_path)
        self._load_weights_index()

    def read_member(self, name: str) -> bytes:
        if name in self._cache:
            return self._cache[name]
        if name not in self.members:
            raise MigratorError(f"{self.path}: no member {name!r}")
        for _, stream in self.iter_members([name]):  # a large non-data member: one more pass
            return stream.read()
        raise MigratorError(f"{self.describe(name)}: could not be read")  # pragma: no cover

    def iter_members(self, names: Iterable[str]) -> Iterator[tuple[str, BinaryIO]]:
        wanted = set(names)
        name = ""
        try:
            with tarfile.open(self.path, "r|*") as archive:
                for info in archive:
                    name = normalize_member_name(info.name, str(self.path)) or ""
                    if name in wanted and info.isfile():
                        stream = archive.extractfile(info)
                        assert stream is not None
                        chunks = self._torch_chunks().get(name)
                        watched = _HeaderWatch(stream, chunks) if chunks else None
                        yield name, watched or stream  # type: ignore[misc]
                        if watched is not None:  # the consumer is done with it (e.g. copied it into the output)
                            watched.check(self.describe(name))
                        wanted.discard(name)
                        if not wanted:
                            return
        except _DECOMPRESSION_ERRORS as error:
            raise MigratorError(f"{self.describe(name)}: unreadable compressed archive ({error})") from None
        if wanted:
            raise MigratorError(f"{self.path}: members {sorted(wanted)[:3]} vanished on the second pass")

    def _torch_chunks(self) -> dict[str, list[StoredChunk]]:
        """torch_dist chunks by member: their headers are checked as a stream passes (see _HeaderWatch)."""
        if not hasattr(self, "_chunks_by_member"):
            self._chunks_by_member: dict[str, list[StoredChunk]] = {}
            for key_chunks in self.chunks.values():
                for chunk in key_chunks:
                    if chunk.encoding == "torch_save":
                        self._chunks_by_member.setdefault(chunk.member, []).append(chunk)
        return self._chunks_by_member

    def _prepare_random_access(self, members: list[str]) -> None:
        """Spill the members (non-distributed rank files, whose tensors a merge reads in a different order than
        the archive holds them) into a temporary folder beside the output: disk, not memory."""
        import tempfile

        if self._spill_at is not None:  # a fixed name beside the output, under its lock: a killed run's is removed
            self._spill_at.parent.mkdir(parents=True, exist_ok=True)  # by the next run (storage.outlock)
            os.mkdir(self._spill_at, 0o700)
            self._spill_dir = self._spill_at
        else:
            parent = self._spill_parent if self._spill_parent is not None else Path(tempfile.gettempdir())
            parent.mkdir(parents=True, exist_ok=True)
            self._spill_dir = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.spill-", dir=parent))
        total = sum(self.members[m] for m in members)
        self.notes.append(f"{self.path}: compressed archive; its {len(members)} rank files ({total} bytes) are "
                          f"spilled to {self._spill_dir} on disk (not memory) and removed afterwards")
        try:
            for index, (name, stream) in enumerate(self.iter_members(members)):
                dest = self._spill_dir / f"{index}.ckpt"
                try:
                    copy_stream(stream, self.members[name], dest)
                except EOFError:
                    raise MigratorError(f"{self.describe(name)}: truncated archive") from None
                self._spilled[name] = dest
        except BaseException:
            self.close()
            raise

    def open_member(self, name: str) -> BinaryIO:
        if name in self._spilled:
            path = self._spilled[name]
            return FileSlice(path, 0, path.stat().st_size)  # type: ignore[return-value]
        raise NotImplementedError(f"{name}: a compressed archive is read as a stream")

    def close(self) -> None:
        if self._spill_dir is not None:
            import shutil

            shutil.rmtree(self._spill_dir, ignore_errors=True)
            self._spill_dir = None
            self._spilled = {}

    def copy_member(self, name: str, dest: Path, *, link: bool = False, progress=None, cancel=None) -> str:
        for _, stream in self.iter_members([name]):
            try:
                copy_stream(stream, self.members[name], dest, progress=progress, cancel=cancel)
            except EOFError:
                raise MigratorError(f"{self.describe(name)}: truncated archive") from None
        return "copy"


class _HeaderWatch:
    """A compressed archive's data member as its consumer reads it, keeping the first and last bytes of each chunk's
    `torch.save` blob (where its zip records and data.pkl are), so that once the member is read the chunk headers
    can be checked against the index: a random-access source checks them when it is opened (`check_chunk_headers`);
    a stream can only be checked as it passes, before the index is written."""

    HEAD = 64 << 10
    TAIL = 70 << 10  # the zip end records (up to 65557 bytes with a comment) and the central directory

    def __init__(self, stream: BinaryIO, chunks: list[StoredChunk]) -> None:
        self._stream = stream
        self._position = 0
        self._chunks = sorted(chunks, key=lambda c: c.byte_offset)
        windows = []
        for chunk in self._chunks:
            start, end = chunk.byte_offset, chunk.byte_offset + chunk.byte_length
            if end - start <= self.HEAD + self.TAIL:
                windows.append((start, end))
            else:
                windows += [(start, start + self.HEAD), (end - self.TAIL, end)]
        self._windows = sorted(windows)
        self._kept: dict[tuple[int, int], bytearray] = {w: bytearray() for w in self._windows}
        self._next = 0  # the first window not yet complete

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._see(data)
        return data

    def readinto(self, buffer: Any) -> int:
        n = self._stream.readinto(buffer)
        self._see(memoryview(buffer)[:n or 0])
        return n

    def _see(self, data: Any) -> None:
        start, end = self._position, self._position + len(data)
        self._position = end
        while self._next < len(self._windows) and self._windows[self._next][1] <= start:
            self._next += 1
        for window in self._windows[self._next:]:
            if window[0] >= end:
                break
            kept = self._kept[window]
            low = max(start, window[0] + len(kept))  # bytes are seen in order: continue where the window stands
            high = min(end, window[1])
            if low < high and low == window[0] + len(kept):
                kept += bytes(data[low - start:high - start])

    def check(self, what: str) -> None:
        from migrator.convert.formats.torch_save_format import tensor_layout_at
        from migrator.convert.read.torch_dist import check_layout

        for chunk in self._chunks:
            start, end = chunk.byte_offset, chunk.byte_offset + chunk.byte_length
            windows = [w for w in self._windows if start <= w[0] and w[1] <= end]
            if any(len(self._kept[w]) != w[1] - w[0] for w in windows):
                continue  # the consumer did not read this chunk
            pieces = [(w[0] - start, self._kept[w]) for w in windows]

            def read(offset: int, length: int, pieces=pieces) -> bytes:
                for base, kept in pieces:
                    if base <= offset and offset + length <= base + len(kept):
                        return bytes(kept[offset - base:offset - base + length])
                return b""  # outside the head and tail of the blob: not where torch.save keeps its records

            where = f"{what} ({chunk.key} at {list(chunk.offsets)})"
            check_layout(tensor_layout_at(read, chunk.byte_length, where), chunk, what)


def read_file_member(source: Source, name: str) -> bytes:
    """`read_member` of a source whose members are files on disk (`source.file(name)` confines the name)."""
    path = source.file(name)  # type: ignore[attr-defined]
    try:
        return path.read_bytes()
    except OSError as error:
        raise MigratorError(f"{path}: cannot read ({error.strerror})") from None


def open_file_member(source: Source, name: str) -> BinaryIO:
    """`open_member` of a source whose members are files on disk."""
    path = source.file(name)  # type: ignore[attr-defined]
    return FileSlice(path, 0, path.stat().st_size)  # type: ignore[return-value]


class FolderSource(Source):
    """An extracted `.nemo` folder, or a bare `model_weights/` folder (then `--model_config` is required)."""

    linkable = True

    def __init__(self, path: Path, model_config_path: Path | None) -> None:
        super().__init__(path)
        if (path / "model_weights").is_dir() or (path / CONFIG_MEMBER).is_file():
            self.kind, self.root, weights = "folder", path, path / WEIGHTS_DIR
        elif (path / "metadata.json").is_file():
            self.kind, self.root, weights = "weights folder", None, path
            if model_config_path is None:
                raise MigratorError(f"{path}: a bare model_weights/ folder needs --model_config FILE "
                                    "(the model_config.yaml of the .nemo it came from)")
        else:
            raise MigratorError(f"{path}: neither a .nemo folder (model_config.yaml, model_weights/) nor a "
                                "model_weights/ folder (metadata.json)")
        self._weights = weights
        if weights.is_dir():
            for dirpath, _, filenames in os.walk(weights):
                relative_dir = os.path.relpath(dirpath, weights)
                for filename in filenames:
                    relative = filename if relative_dir == "." else f"{relative_dir}/{filename}"
                    normalize_member_name(relative, str(path))  # refuses control characters
                    full = os.path.join(dirpath, filename)
                    self.members[f"{WEIGHTS_DIR}/{relative.replace(os.sep, '/')}"] = os.stat(full).st_size
        if self.root is not None:
            for entry in os.scandir(self.root):
                if entry.is_file():
                    self.members[entry.name] = entry.stat().st_size
                elif entry.is_dir() and is_nonsharded_member(f"{entry.name}/model_weights.ckpt"):
                    ckpt = Path(entry.path) / "model_weights.ckpt"
                    if ckpt.is_file():
                        self.members[f"{entry.name}/model_weights.ckpt"] = ckpt.stat().st_size
        self._load_config(model_config_path)
        self._load_weights_index()

    def describe(self, name: str) -> str:
        return str(self.file(name, check=False))

    def file(self, name: str, check: bool = True) -> Path:
        """The file behind a member name (checked: no absolute names, no '..')."""
        safe = normalize_member_name(name, str(self.path))
        if safe is None:
            raise MigratorError(f"{self.path}: empty member name")
        if safe.startswith(WEIGHTS_DIR + "/"):
            return self._weights / safe[len(WEIGHTS_DIR) + 1:]
        if self.root is None:
            raise MigratorError(f"{self.path}: {name} is not part of a bare model_weights/ folder "
                                "(pass the tokenizer with --tokenizer_path)")
        return self.root / safe

    def has_member(self, name: str) -> bool:
        if name in self.members:
            return True
        try:
            return self.file(name).is_file()
        except MigratorError:
            return False

    read_member = read_file_member
    open_member = open_file_member

    def copy_member(self, name: str, dest: Path, *, link: bool = False, progress=None, cancel=None) -> str:
        path = self.file(name)
        if link:
            return link_or_copy(path, dest, progress=progress, cancel=cancel)
        copy_file(path, dest, progress=progress, cancel=cancel)
        return "copy"


def _check_member_type(info: tarfile.TarInfo, archive: str) -> None:
    if info.issym() or info.islnk():
        raise MigratorError(f"{archive}: member {info.name!r} is a link (to {info.linkname!r}); refusing to read "
                            "an archive with links")
    if not (info.isfile() or info.isdir()) or info.issparse():
        raise MigratorError(f"{archive}: member {info.name!r} is not a regular file or folder; refusing to read it")


def _is_compressed(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(6)
    return head.startswith(b"\x1f\x8b") or head.startswith(b"BZh") or head.startswith(b"\xfd7zXZ\x00")


def open_source(path: Path, model_config_path: Path | None = None, spill_parent: Path | None = None,
                spill_dir: Path | None = None) -> Source:
    """Open IN (see the module docstring; a NeMo 2.0 checkpoint directory is read by `read.nemo2_dir`). Raises
    MigratorError (exit 2) for anything unusable. Where a compressed non-distributed checkpoint may spill its rank
    files: the folder `spill_dir` (created, must not exist), else a new temporary folder in `spill_parent`."""
    from migrator.inputs import check_named_path

    path = Path(path)
    check_named_path(path, str(path), folder_ok=True)  # /dev/zero, a FIFO, a link loop: one line, never a hang
    if path.is_dir():
        from migrator.convert.read.nemo2_dir import Nemo2DirSource, is_nemo2_dir

        if is_nemo2_dir(path):
            return Nemo2DirSource(path, model_config_path)
        return FolderSource(path, model_config_path)
    if _is_compressed(path):
        return CompressedTarSource(path, model_config_path, spill_parent, spill_dir)
    if not tarfile.is_tarfile(path):
        raise MigratorError(f"{path}: not a .nemo file (not a tar archive) and not a folder")
    return TarSource(path, model_config_path)


