"""Moving bytes between files as cheaply as the OS allows: in-kernel copies, hard links, read-only views.

The same-dtype torch_dist conversion is a byte copy of the data files (or of their byte ranges inside an
uncompressed `.nemo` tar), so its speed is the speed of these helpers. `os.copy_file_range` copies inside the
kernel (and can share extents on file systems that support it); `os.sendfile` is the fallback, then a plain
buffered loop. Copies run in slices so that progress is reported and a Ctrl-C is honoured between slices.
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


def copy_range(src_fd: int, src_offset: int, size: int, dest: Path, *, progress: ProgressFn | None = None,
               cancel: threading.Event | None = None) -> None:
    """Copy `size` bytes at `src_offset` of an open file into a new file `dest`.

    Raises EOFError when the source ends early (a truncated file or archive). The caller flushes the output to
    disk once everything is written (see pipeline._fsync_tree): one fsync per file at the end lets the kernel
    write back all files concurrently instead of waiting for each in turn.
    """
    with open(dest, "wb") as out:
        out_fd = out.fileno()
        done = 0
        method = "copy_file_range" if hasattr(os, "copy_file_range") else "sendfile"
        while done < size:
            check_cancel(cancel)
            want = min(SLICE, size - done)
            n = 0
            if method == "copy_file_range":
                try:
                    n = os.copy_file_range(src_fd, out_fd, want, src_offset + done)
                except OSError as error:
                    if error.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
                        raise
                    method = "sendfile"
                    continue
            elif method == "sendfile":
                try:
                    n = os.sendfile(out_fd, src_fd, src_offset + done, want)
                except OSError as error:
                    if error.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                        raise
                    method = "read"
                    continue
            else:
                data = os.pread(src_fd, min(want, BUFFER), src_offset + done)
                n = len(data)
                view = memoryview(data)
                while view:
                    written = os.write(out_fd, view)
                    view = view[written:]
            if n == 0:
                raise EOFError(f"source ended after {done} of {size} bytes")
            start_writeback(out_fd, done, n)
            done += n
            if progress is not None:
                progress(n)


def copy_into(src_fd: int, src_offset: int, out_fd: int, out_offset: int, size: int, *,
              progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> None:
    """Copy `size` bytes between two open files at explicit offsets (neither file position moves).

    In the kernel where possible (copy_file_range), else through a buffer (pread/pwrite). Raises EOFError when
    the source ends early.
    """
    done = 0
    kernel = hasattr(os, "copy_file_range")
    while done < size:
        check_cancel(cancel)
        want = min(SLICE if kernel else BUFFER, size - done)
        if kernel:
            try:
                n = os.copy_file_range(src_fd, out_fd, want, src_offset + done, out_offset + done)
            except OSError as error:
                if error.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
                    raise
                kernel = False
                continue
        else:
            data = os.pread(src_fd, want, src_offset + done)
            n = len(data)
            view = memoryview(data)
            position = out_offset + done
            while view:
                written = os.pwrite(out_fd, view, position)
                view, position = view[written:], position + written
        if n == 0:
            raise EOFError(f"source ended after {done} of {size} bytes")
        start_writeback(out_fd, out_offset + done, n)
        done += n
        if progress is not None:
            progress(n)


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
    """Copy a whole file (in-kernel where possible)."""
    with open(src, "rb") as source:
        copy_range(source.fileno(), 0, os.fstat(source.fileno()).st_size, dest, progress=progress, cancel=cancel)


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
            raise
        copy_file(src, dest, progress=progress, cancel=cancel)
        return "copy"
    if progress is not None:
        progress(os.stat(dest).st_size)
    return "link"


def copy_stream(stream: BinaryIO, size: int, dest: Path, *, progress: ProgressFn | None = None,
                cancel: threading.Event | None = None) -> None:
    """Copy `size` bytes from a sequential stream (a member of a compressed tar) into a new file."""
    with open(dest, "wb") as out:
        done = 0
        while done < size:
            check_cancel(cancel)
            data = stream.read(min(BUFFER, size - done))
            if not data:
                raise EOFError(f"stream ended after {done} of {size} bytes")
            out.write(data)
            done += len(data)
            if progress is not None:
                progress(len(data))


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
        self._fd = os.open(path, os.O_RDONLY)
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
        n = os.preadv(self._fd, [view[:want]], self._start + self._position)
        self._position += n
        return n

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()
