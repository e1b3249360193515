"""Reading a file the user named: regular files only, and never more than a bound.

A path that names a device (`/dev/zero`), a FIFO or a socket, directly or through a symbolic link, would make a
plain `read()` block or grow without end; it is refused from the file's own `fstat` (opened non-blocking, so a FIFO
does not hang the open), before a byte is read. The size is checked there too, and the read stops at the bound
even if the file grows meanwhile.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from migrator.errors import MigratorError

MAX_TEXT_BYTES = 64 * 1024 * 1024  # a config, a script or a diff; far above any real one


def kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_regular(path: str | Path, display: str, limit: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; anything else is a one-line MigratorError."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except IsADirectoryError:
        raise MigratorError(f"{display}: is a directory") from None
    except OSError as exc:
        raise MigratorError(f"{display}: cannot read: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            what = kind_of(info.st_mode)
            raise MigratorError(f"{display}: {'is ' if what.startswith('a ') else ''}{what}; only regular files are read")
        if info.st_size > limit:
            raise MigratorError(f"{display}: too large ({info.st_size:,} bytes; the limit is {limit:,})")
        chunks = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise MigratorError(f"{display}: too large (grew past the limit of {limit:,} bytes while read)")
        return b"".join(chunks)
    except OSError as exc:
        raise MigratorError(f"{display}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def check_named_path(path: str | Path, display: str, *, folder_ok: bool = False) -> None:
    """Refuse, before anything opens it, a path the user named that is not a regular file (or, with `folder_ok`,
    a folder): a device (`/dev/zero` would be read forever), a FIFO (an open blocks until a writer comes), a
    socket, a dangling link, a link loop. Links are followed: a link to a regular file is that file."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        what = "a dangling symbolic link" if os.path.islink(path) else "no such file or folder"
        raise MigratorError(f"{display}: {what}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise MigratorError(f"{display}: a symbolic link loop") from None
        raise MigratorError(f"{display}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISREG(info.st_mode) or (folder_ok and stat.S_ISDIR(info.st_mode)):
        return
    wanted = "a regular file or a folder" if folder_ok else "a regular file"
    kind = kind_of(info.st_mode)
    raise MigratorError(f"{display}: is {kind}, not {wanted}" if kind.startswith("a ") else f"{display}: not {wanted}")
