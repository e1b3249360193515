"""Writing rewritten files: atomically (never a half-written file), keeping permissions, with an optional `.bak`."""
from __future__ import annotations

import os
from pathlib import Path

from migrator.errors import MigratorError


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Replace (or create) `path` in one rename; an existing file keeps its permissions. A symbolic link is
    followed (the file it points to is replaced, the link stays); anything but a regular file is refused.

    The temporary file is created beside the target with a random name, exclusively and without following a link
    (`mkstemp`: O_CREAT | O_EXCL | O_NOFOLLOW), so a file or link planted under a guessable name is never written
    through. Its data is fsynced before the rename and the folder after it."""
    import stat
    import tempfile

    if path.is_symlink():
        path = path.resolve()
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        raise MigratorError(f"{path}: not a regular file; nothing written")
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".nemo-migrate.tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, stat.S_IMODE(mode) if mode is not None else 0o666 & ~_umask())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a folder; the data itself was synced
        pass
    finally:
        os.close(fd)


def backup(path: Path) -> tuple[Path, bool]:
    """Copy `path` to `path.bak` unless a backup is already there (the oldest backup is the one worth keeping,
    as Lightning's upgrade_checkpoint does). Returns the backup path and whether it was written now."""
    target = path.with_name(path.name + ".bak")
    if target.exists():
        return target, False
    write_bytes_atomically(target, path.read_bytes())
    return target, True


def decode_for_display(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")
