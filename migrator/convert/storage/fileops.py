"""Moving bytes between files as cheaply as the OS allows: in-kernel copies, hard links, read-only views.

The same-dtype torch_dist conversion is a byte copy of the data files (or of their byte ranges inside an
uncompressed `.nemo` tar), so its speed is the speed of these helpers. `os.copy_file_range` copies inside the
kernel (and can share extents on file systems that support it); `os.sendfile` is the fallback, then a plain
buffered loop. Copies run in slices so that progress is reported and a Ctrl-C is honoured between slices.

Nothing here trusts a count: every read, write and copy result is checked (short counts are continued, a call that
moves nothing is a fallback or an error, never a loop), files written through CheckedWriter have their position
checked after each write and their size after closing, every copy is compared with its source (compare_copy), and
OS errors carry the name of the file they concern, so that the pipeline reports them in one line.
"""
from __future__ import annotations

import errno
import io
import os
import threading
import zlib
from pathlib import Path
from typing import BinaryIO, Callable

SLICE = 64 << 20  # bytes per in-kernel copy call: small enough for responsive progress and Ctrl-C
BUFFER = 8 << 20  # bytes per read in the user-space fallback and for stream copies

ProgressFn = Callable[[int], None]


_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range = None  # libc's sync_file_range, looked up once (Linux); False when unavailable


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a just-written range to disk, without waiting (Linux sync_file_range).

    Writing back while copying, instead of leaving gigabytes of dirty pages for the final fsync, overlaps the
    disk writes with the copy and keeps dirty memory low. A no-op where the call is unavailable.
    """
    global _sync_file_range
    if _sync_file_range is None:
        try:
            import ctypes

            function = ctypes.CDLL(None, use_errno=True).sync_file_range
            function.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
            _sync_file_range = function
        except (OSError, AttributeError):
            _sync_file_range = False
    if _sync_file_range:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


class Cancelled(Exception):
    """Raised inside a worker when the conversion was interrupted or another worker failed."""


def check_cancel(cancel: threading.Event | None) -> None:
    """A safe point to stop: the CLI's signal handlers only set `cancel` (see migrator.cli.convert_cmd)."""
    if cancel is not None and cancel.is_set():
        raise Cancelled()


def _named(error: OSError, path: object) -> OSError:
    """`error` with `path` as its file name when the call that raised it gave none (os.write, copy_file_range,
    a buffered file's flush): the one-line report then names the file."""
    if error.filename is None and path is not None:
        error.filename = str(path)
    return error


def os_error_line(error: OSError, fallback: object) -> str:
    """`FILE: the OS error` for one-line reports (`fallback` names the file where the error carries none)."""
    where = error.filename if error.filename is not None else fallback
    other = f" -> {error.filename2}" if getattr(error, "filename2", None) is not None else ""
    return f"{where}{other}: {error.strerror or error}"


def no_progress(call: str, path: object, done: int, size: int) -> OSError:
    """A write or copy call that moved nothing although bytes remain: an I/O error naming the file (looping on
    it would never end, and stopping silently would leave a short file)."""
    return OSError(errno.EIO, f"{call} moved 0 bytes with {size - done} of {size} left (no progress)", str(path))


def _count(call: str, n: object, want: int, path: object) -> int:
    """The byte count a read, write or copy call returned, checked: an int in 0..want."""
    if not isinstance(n, int) or not 0 <= n <= want:
        raise OSError(errno.EIO, f"{call} returned {n!r} for {want} bytes", str(path))
    return n


def write_all(fd: int, data: bytes | bytearray | memoryview, path: object, position: int | None = None) -> None:
    """Write every byte of `data` to a file descriptor (at `position` with pwrite, else at the file position),
    looping over short counts; a call that writes nothing is an error naming `path`."""
    view = memoryview(data).cast("B")
    total, done = len(view), 0
    try:
        while done < total:
            if position is None:
                n = _count("write", os.write(fd, view[done:]), total - done, path)
            else:
                n = _count("pwrite", os.pwrite(fd, view[done:], position + done), total - done, path)
            if n == 0:
                raise no_progress("pwrite" if position is not None else "write", path, done, total)
            done += n
    except OSError as error:
        raise _named(error, path)


class CheckedWriter:
    """A binary file opened for writing (buffered) whose every `write` is checked: the whole buffer is taken or
    the call fails (a short count is retried, a write that takes nothing is an error), and every OS error names
    the file. After each write the buffered file's position must have moved by exactly the bytes written (a
    write that reported success but lost its data shows there), and the end of what was written (`end`) is kept,
    so that the size on disk can be checked against it once the file is closed (check_size). Writes through
    `fileno()` (in-kernel copies) are followed by a `seek` to their end."""

    def __init__(self, path: Path | str, mode: str = "wb") -> None:
        self.path = Path(path)
        try:
            self._file: BinaryIO = open(self.path, mode)
        except OSError as error:
            raise _named(error, self.path)
        self._position = self.end = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        total, done = len(view), 0
        try:
            while done < total:
                n = _count("write", self._file.write(view[done:]), total - done, self.path)
                if n == 0:
                    raise no_progress("write", self.path, done, total)
                done += n
            position = self._file.tell()  # the buffered file's own count (no system call): it must agree
        except OSError as error:
            raise _named(error, self.path)
        if position != self._position + total:
            raise OSError(errno.EIO, f"a write of {total} bytes at byte {self._position} moved the file position "
                          f"to {position} (lost data)", str(self.path))
        self._position = position
        self.end = max(self.end, position)
        return total

    def _call(self, name: str, *args: object) -> object:
        try:
            return getattr(self._file, name)(*args)
        except OSError as error:
            raise _named(error, self.path)

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._position = self._call("seek", offset, whence)  # type: ignore[assignment]
        self.end = max(self.end, self._position)
        return self._position

    def flush(self) -> None:
        self._call("flush")

    def fileno(self) -> int:
        return self._file.fileno()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def close(self) -> None:
        self._call("close")

    def __enter__(self) -> "CheckedWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:  # already failing: close without masking that error
            try:
                self._file.close()
            except OSError:
                pass


def write_file(path: Path, data: bytes) -> None:
    """A new file holding `data`, every write checked (see CheckedWriter), then its size on disk."""
    with CheckedWriter(path) as out:
        out.write(data)
    check_size(path, len(data))


def check_size(path: Path, expected: int) -> None:
    """The file at `path` holds `expected` bytes (what was planned and written): an error naming it otherwise."""
    try:
        size = os.stat(path).st_size
    except OSError as error:
        raise _named(error, path)
    if size != expected:
        raise OSError(errno.EIO, f"holds {size} bytes after writing, {expected} were written", str(path))


# The copy check: after a file or range is copied, its bytes are compared with the source's. Comparing every byte
# reads both sides again (from the page cache while they are fresh, from the disk for a model larger than memory):
# benchmarks/bench_integrity.py measures it against `cp` of the same bytes. By default the comparison covers
# windows of COMPARE_WINDOW bytes around every COMPARE_EVERY-th byte (which includes every boundary between two
# copy calls: SLICE and BUFFER are multiples of it), the first and the last bytes: a lost, repeated or misplaced
# piece, a hole or a truncated tail shows there. NEMO_MIGRATE_COMPARE=full compares every byte.
COMPARE_WINDOW = 64 << 10
COMPARE_EVERY = 8 << 20


def compare_windows(size: int, full: bool | None = None) -> list[tuple[int, int]]:
    """(offset, length) of the byte ranges the copy check compares, for a copy of `size` bytes."""
    if full is None:
        full = os.environ.get("NEMO_MIGRATE_COMPARE") == "full"
    if full or size <= 4 * COMPARE_WINDOW:
        return [(start, min(BUFFER, size - start)) for start in range(0, size, BUFFER)] if size else []
    windows = []
    for point in range(0, size, COMPARE_EVERY):
        start = max(0, point - COMPARE_WINDOW)
        windows.append((start, min(size, point + COMPARE_WINDOW) - start))
    windows.append((size - COMPARE_WINDOW, COMPARE_WINDOW))
    return windows


def _pread_into(fd: int, buffer: bytearray, offset: int, path: object) -> None:
    view = memoryview(buffer)
    done = 0
    try:
        while done < len(view):
            n = _count("read", os.preadv(fd, [view[done:]], offset + done), len(view) - done, path)
            if n == 0:
                raise OSError(errno.EIO, f"ends before byte {offset + len(view)} (read back after writing)",
                              str(path))
            done += n
    except OSError as error:
        raise _named(error, path)


def compare_copy(src_fd: int, src_offset: int, out_fd: int, out_offset: int, size: int, *, source: object,
                 dest: object, cancel: threading.Event | None = None, full: bool | None = None) -> None:
    """Check that `size` bytes at `out_offset` of the output equal those at `src_offset` of the source (see
    compare_windows); a difference is an I/O error naming the output file and the first differing window."""
    for start, length in compare_windows(size, full):
        check_cancel(cancel)
        a, b = bytearray(length), bytearray(length)
        _pread_into(src_fd, a, src_offset + start, source)
        _pread_into(out_fd, b, out_offset + start, dest)
        if a != b:
            raise OSError(errno.EIO, f"bytes {start}..{start + length} differ from "
                          f"{source or 'the source'} after copying", str(dest))


def copy_range(src_fd: int, src_offset: int, size: int, dest: Path, *, progress: ProgressFn | None = None,
               cancel: threading.Event | None = None, source: object = None, check: bool = True) -> None:
    """Copy `size` bytes at `src_offset` of an open file into a new file `dest`, then check the copy (size and
    content, see compare_copy) unless `check` is False.

    Raises EOFError when the source ends early (a truncated file or archive). Every call's count is checked: a
    0-byte copy where bytes remain falls back to the next method (copy_file_range -> sendfile -> read/write), and
    is an error there. OS errors name `dest`. The caller flushes the output to disk once everything is written
    (see pipeline._fsync_tree): one fsync per file at the end lets the kernel write back all files concurrently.
    """
    try:
        out_fd = os.open(dest, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)  # read back by the check
    except OSError as error:
        raise _named(error, dest)
    try:
        _copy_at(src_fd, src_offset, out_fd, None, size, dest, progress, cancel)
        if check:
            check_size(dest, size)
            compare_copy(src_fd, src_offset, out_fd, 0, size, source=source, dest=dest, cancel=cancel)
    finally:
        os.close(out_fd)


def _copy_at(src_fd: int, src_offset: int, out_fd: int, out_offset: int | None, size: int, dest: object,
             progress: ProgressFn | None, cancel: threading.Event | None) -> None:
    """The copy loop of copy_range (`out_offset` None: at the output's file position) and copy_into."""
    methods = ["copy_file_range"] if hasattr(os, "copy_file_range") else []
    if out_offset is None:
        methods.append("sendfile")  # sendfile writes at the file position only
    methods.append("read")
    done = 0
    try:
        while done < size:
            check_cancel(cancel)
            method = methods[0]
            want = min(SLICE if method != "read" else BUFFER, size - done)
            position = None if out_offset is None else out_offset + done
            if method == "copy_file_range":
                try:
                    if position is None:
                        n = os.copy_file_range(src_fd, out_fd, want, src_offset + done)
                    else:
                        n = os.copy_file_range(src_fd, out_fd, want, src_offset + done, position)
                except OSError as error:
                    if error.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP,
                                           errno.EPERM):
                        raise
                    methods.pop(0)
                    continue
            elif method == "sendfile":
                try:
                    n = os.sendfile(out_fd, src_fd, src_offset + done, want)
                except OSError as error:
                    if error.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                        raise
                    methods.pop(0)
                    continue
            else:
                data = os.pread(src_fd, want, src_offset + done)
                if not data:
                    raise EOFError(f"source ended after {done} of {size} bytes")
                n = _count("read", len(data), want, dest)
                write_all(out_fd, data, dest, position)
            n = _count(method, n, want, dest)
            if n == 0:  # copy_file_range/sendfile moved nothing: the next method says whether the source ended
                methods.pop(0)
                continue
            start_writeback(out_fd, out_offset + done if out_offset is not None else done, n)
            done += n
            if progress is not None:
                progress(n)
    except OSError as error:
        raise _named(error, dest)


def copy_into(src_fd: int, src_offset: int, out_fd: int, out_offset: int, size: int, *,
              progress: ProgressFn | None = None, cancel: threading.Event | None = None,
              dest: object = None) -> None:
    """Copy `size` bytes between two open files at explicit offsets (neither file position moves).

    In the kernel where possible (copy_file_range), else through a buffer (pread/pwrite); counts are checked as in
    copy_range. Raises EOFError when the source ends early.
    """
    _copy_at(src_fd, src_offset, out_fd, out_offset, size, dest, progress, cancel)


def crc32_of_range(fd: int, offset: int, size: int, cancel: threading.Event | None = None) -> int:
    """The CRC-32 of `size` bytes at `offset` of an open file (reads in BUFFER pieces; releases the GIL)."""
    crc = 0
    done = 0
    while done < size:
        check_cancel(cancel)
        data = os.pread(fd, min(BUFFER, size - done), offset + done)
        if not data:
            raise EOFError(f"source ended after {done} of {size} bytes")
        crc = zlib.crc32(data, crc)
        done += len(data)
    return crc


def copy_file(src: Path, dest: Path, *, progress: ProgressFn | None = None,
              cancel: threading.Event | None = None) -> None:
    """Copy a whole file (in-kernel where possible), then check the copy (see copy_range)."""
    try:
        source = open(src, "rb")
    except OSError as error:
        raise _named(error, src)
    with source:
        copy_range(source.fileno(), 0, os.fstat(source.fileno()).st_size, dest, progress=progress, cancel=cancel,
                   source=src)


def link_or_copy(src: Path, dest: Path, *, progress: ProgressFn | None = None,
                 cancel: threading.Event | None = None) -> str:
    """Hard-link `src` to `dest`; copy instead when the file system refuses (other device, no link support).

    Returns "link" or "copy". A hard link shares the data blocks with the source file: both names see the same
    bytes, and neither NeMo 1.0 nor NeMo 2.0 rewrites a checkpoint file in place.
    """
    try:
        os.link(src, dest)
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES):
            raise _named(error, dest)
        copy_file(src, dest, progress=progress, cancel=cancel)
        return "copy"
    try:
        linked, original = os.stat(dest), os.stat(src)
    except OSError as error:
        raise _named(error, dest)
    if (linked.st_dev, linked.st_ino) != (original.st_dev, original.st_ino):
        raise OSError(errno.EIO, f"is not a link to {src} after linking", str(dest))
    if progress is not None:
        progress(linked.st_size)
    return "link"


def copy_stream(stream: BinaryIO, size: int, dest: Path, *, progress: ProgressFn | None = None,
                cancel: threading.Event | None = None) -> None:
    """Copy `size` bytes from a sequential stream (a member of a compressed tar) into a new file, then check it:
    its size, and the CRC-32 of each window compare_windows names, taken from the stream as the bytes passed and
    from the file read back."""
    windows = compare_windows(size)
    crcs = [0] * len(windows)
    with CheckedWriter(dest, "w+b") as out:
        done = 0
        while done < size:
            check_cancel(cancel)
            data = stream.read(min(BUFFER, size - done))
            if not data:
                raise EOFError(f"stream ended after {done} of {size} bytes")
            view = memoryview(data)
            for i, (start, length) in enumerate(windows):  # the compared windows' bytes that lie in this piece
                lo, hi = max(start, done), min(start + length, done + len(view))
                if lo < hi:
                    crcs[i] = zlib.crc32(view[lo - done:hi - done], crcs[i])
            out.write(data)
            done += len(data)
            if progress is not None:
                progress(len(data))
        out.flush()
        check_size(dest, size)
        for (start, length), expected in zip(windows, crcs):
            check_cancel(cancel)
            actual = bytearray(length)
            _pread_into(out.fileno(), actual, start, dest)
            if zlib.crc32(actual) != expected:
                raise OSError(errno.EIO, f"bytes {start}..{start + length} differ from the stream after copying "
                              "(CRC-32)", str(dest))


def read_exactly(stream: BinaryIO, size: int) -> bytearray:
    """Read `size` bytes into a fresh writable buffer (torch.frombuffer wants a writable one)."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    done = 0
    while done < size:
        # at most BUFFER per call: a compressed tar's stream builds each read as one bytes object first
        want = min(BUFFER, size - done)
        n = stream.readinto(view[done:done + want]) if hasattr(stream, "readinto") else None
        if n is None:
            data = stream.read(want)
            n = len(data)
            view[done:done + n] = data
        if not n:
            raise EOFError(f"stream ended after {done} of {size} bytes")
        done += n
    return buffer


def pread_exactly(fd: int, size: int, offset: int, path: object) -> bytes:
    """`size` bytes at `offset` of an open file whose size is known: short reads are continued; a file that ends
    first raises EOFError, an OS error names `path`."""
    parts = []
    done = 0
    try:
        while done < size:
            data = os.pread(fd, size - done, offset + done)
            if not data:
                raise EOFError(f"ends after {done} of {size} bytes")
            _count("read", len(data), size - done, path)
            parts.append(data)
            done += len(data)
    except OSError as error:
        raise _named(error, path)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def skip(stream: BinaryIO, size: int) -> None:
    """Advance a sequential stream by `size` bytes."""
    while size > 0:
        data = stream.read(min(BUFFER, size))
        if not data:
            raise EOFError("stream ended while skipping")
        size -= len(data)


class FileSlice(io.RawIOBase):
    """A read-only, seekable view of `length` bytes at `offset` of a file (a member inside an uncompressed tar).

    torch.load needs a seekable file object; this gives it one without copying the member out of the tar.
    """

    def __init__(self, path: Path, offset: int, length: int) -> None:
        super().__init__()
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError as error:
            raise _named(error, path)
        self._start = offset
        self._length = length
        self._position = 0

    def fileno(self) -> int:
        return self._fd

    @property
    def start(self) -> int:
        """Where the slice begins in the underlying file (for in-kernel copies of its bytes)."""
        return self._start

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        self._position = max(0, base + position)
        return self._position

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        remaining = self._length - self._position
        if remaining <= 0:
            return 0
        view = memoryview(buffer).cast("B")
        want = min(len(view), remaining)
        done = 0
        while done < want:  # a short preadv is continued: callers (torch.load, header checks) read() once
            try:
                n = _count("read", os.preadv(self._fd, [view[done:want]], self._start + self._position + done),
                           want - done, self.path)
            except OSError as error:
                raise _named(error, self.path)
            if n == 0:
                break  # the file ends early: the caller sees fewer bytes (a truncated input)
            done += n
        self._position += done
        return done

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()
